/**
 * Hostile and failing peers: an allowlisted peer that sends garbage on the replication
 * protocol is cut off with nothing applied, a block with a bad checksum is refused (resend +
 * nack) while the session survives, other sources are unaffected, and a target whose disk
 * fills up refuses the generation and resumes when space returns (root only: tmpfs).
 *
 * The hostile peer is an in-process libp2p node using hv-c's real identity (hv-c is in hv-b's
 * allowlist but its daemon is never started), speaking the real codecs.
 */
import '../../../common/polyfill.ts'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { mkdir } from 'node:fs/promises'
import { execFileSync } from 'node:child_process'
import { multiaddr } from '@multiformats/multiaddr'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import { createMeshNode, type MeshNode } from '../../../daemon/mesh/node.ts'
import { loadIdentity } from '../../../config/identity.ts'
import { replicationProtocols, CONTROL_PROTOCOL_VERSION, SeedMode, NackCode, encodeReplicationItem, type ReplicationItem } from '../../../protocol/replication/index.ts'
import { FileKind, encodeBlock } from '../../../protocol/delta/index.ts'
import { Channel, type StreamLike } from '../../../daemon/replication/channel.ts'
import { requireQemu } from '../../helpers/qemu.ts'
import { vmsSection, waitInSync, replicaPath, sameBytes, randomFixedVhd, randomWrite, replicaOf, targetOf, settle } from './helpers.ts'

const MiB = 1024 * 1024

describe('replication: hostile peers and a full disk (integration)', function () {
  this.timeout(120_000)
  let c: LocalCluster
  let disk: string
  let evil: MeshNode | undefined

  before(async function () {
    requireQemu(this)
    c = await LocalCluster.create({ nodes: [{ name: 'hv-a' }, { name: 'hv-b' }, { name: 'hv-c' }], logLevel: 'debug', keep: process.env.KEEP === '1' })
    const vmDir = join(c.dir, 'vms')
    await mkdir(vmDir)
    disk = join(vmDir, 'web01.vhd')
    await randomFixedVhd(disk, 8 * MiB)
    await c.writeConfig('hv-a', vmsSection([{ name: 'web01', disks: [disk], replicateTo: ['hv-b'] }]))
    await c.start('hv-a')
    await c.start('hv-b')
    const id = await loadIdentity(join(c.node('hv-c').dir, 'identity.key'))
    evil = await createMeshNode({ privateKey: id.privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allowedPeerIds: [c.node('hv-b').peerId] })
    await evil.libp2p.start()
  })

  after(async function () {
    await evil?.libp2p.stop()
    await c?.destroy()
  })

  async function evilSession (): Promise<{ ch: Channel, stream: StreamLike, closed: Promise<void> }> {
    const b = c.node('hv-b')
    const stream = await (evil as MeshNode).libp2p.dialProtocol(multiaddr(`/ip4/127.0.0.1/tcp/${b.port}/p2p/${b.peerId}`), [...replicationProtocols(false)]) as unknown as StreamLike
    const closed = new Promise<void>(resolve => { stream.addEventListener('close', () => { resolve() }) })
    const ch = new Channel(stream)
    await ch.sendItem({ type: 'hello', protocolVersion: CONTROL_PROTOCOL_VERSION, vm: 'evil01', sourceNode: 'hv-c', files: [{ fileId: 0, path: '/vms/evil01.img', kind: FileKind.Disk, size: MiB, blockSize: 65536 }], seedMode: SeedMode.Full })
    const ts = await ch.next()
    assert.equal(ts?.type, 'targetState')
    return { ch, stream, closed }
  }

  const begin: ReplicationItem = { type: 'begin', vm: 'evil01', generation: 1, baseGeneration: 0, consistent: true, createdAtMs: 1, files: [{ fileId: 0, path: '/vms/evil01.img', size: MiB, blockSize: 65536, kind: FileKind.Disk }] }

  it('garbage after a valid start: the stream is aborted and nothing is applied; other sources carry on', async function () {
    await waitInSync(c, 'hv-a', 'web01', 'hv-b')
    const { ch, closed } = await evilSession()
    await ch.write(encodeReplicationItem(begin))
    await ch.write(encodeReplicationItem({ type: 'blocks', fileId: 0, entries: [{ offset: 0, ...encodeBlock(new Uint8Array(65536).fill(0xab)) }] }))
    await ch.write(new Uint8Array([0xee, 0, 0, 0, 4, 1, 2, 3, 4]))
    await Promise.race([closed, new Promise((_resolve, reject) => setTimeout(() => reject(new Error('stream not closed')), 10_000))])
    const r = await replicaOf(c, 'hv-b', 'evil01')
    assert.equal(r?.appliedGeneration ?? 0, 0)
    // hv-a's replication is unaffected
    await randomWrite(disk, MiB, 256 * 1024)
    await settle()
    await waitInSync(c, 'hv-a', 'web01', 'hv-b')
    assert.equal(await sameBytes(disk, await replicaPath(c, 'hv-b', 'web01', disk)), true)
    assert.equal(c.isRunning('hv-b'), true)
  })

  it('a block with a bad checksum is refused with resend + nack; the session survives', async function () {
    const { ch } = await evilSession()
    const block = encodeBlock(new Uint8Array(65536).fill(0xcd))
    const broken = { ...block, checksum: new Uint8Array(16).fill(7) }
    const frames: ReplicationItem[] = [begin, { type: 'blocks', fileId: 0, entries: [{ offset: 0, ...broken }] }]
    for (const f of frames) await ch.sendItem(f)
    // the end frame must match what was sent (counts and digest over the checksums as sent)
    const { GenerationValidator } = await import('../../../protocol/delta/index.ts')
    const v = new GenerationValidator()
    v.accept(begin as never); v.accept(frames[1] as never)
    await ch.sendItem({ type: 'end', generation: 1, blockCount: 1, byteCount: 65536, digest: v.digest() })
    const first = await ch.next()
    assert.equal(first?.type, 'resend')
    const second = await ch.next()
    assert.equal(second?.type, 'nack')
    assert.equal((second as { code: NackCode }).code, NackCode.ChecksumMismatch)
    // still talking: a ping is answered
    await ch.sendItem({ type: 'ping', nonce: 9, timestampMs: 1 })
    const pong = await ch.next()
    assert.equal(pong?.type, 'pong')
    assert.equal((await replicaOf(c, 'hv-b', 'evil01'))?.appliedGeneration ?? 0, 0)
    await ch.close()
  })

  it('disk full on the target: nack DiskFull, replica intact, resumes when space returns', async function () {
    if (process.getuid?.() !== 0) { this.skip() }
    const replicas = join(c.node('hv-b').dir, 'data', 'replicas')
    await c.signal('hv-b', 'SIGTERM')
    const { rm } = await import('node:fs/promises')
    await rm(replicas, { recursive: true, force: true })
    await mkdir(replicas, { recursive: true })
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', replicas])
    } catch {
      this.skip()
    }
    try {
      await c.start('hv-b')
      const st = await c.waitFor('disk full error', async () => {
        const t = targetOf(await c.status('hv-a'), 'web01', 'hv-b')
        return t?.state === 'error' && (t.error ?? '').includes('DiskFull') ? t : undefined
      }, 30_000, 100)
      assert.match(st.error ?? '', /DiskFull/)
      assert.equal((await replicaOf(c, 'hv-b', 'web01'))?.appliedGeneration ?? 0, 0)
      execFileSync('mount', ['-o', 'remount,size=64m', replicas])
      await waitInSync(c, 'hv-a', 'web01', 'hv-b', 60_000)
      assert.equal(await sameBytes(disk, await replicaPath(c, 'hv-b', 'web01', disk)), true)
    } finally {
      await c.signal('hv-b', 'SIGTERM')
      try { execFileSync('umount', ['-l', replicas]) } catch {}
    }
  })
})

