/**
 * A peer that speaks another version of vmesh's wire protocols gets a typed refusal and the
 * daemon keeps serving everyone else (README, "Compatibility"):
 * - a protocol ID of another major version (`/vmesh/replication/2.0.0`, `/vmesh/membership/0.9.0`,
 *   ...) is refused by libp2p's multistream-select before any vmesh code runs: the dialer gets
 *   UnsupportedProtocolError;
 * - a replication hello with another control version is answered with `refuse` (ProtocolError),
 *   which the source decodes as ReplicationRefusedError, and the daemon logs
 *   ERR_REPLICATION_UNSUPPORTED_VERSION; the same peer speaking the current version is then
 *   served as usual.
 * The foreign peer is an in-process libp2p node with the identity of node `c` (in `b`'s
 * allowlist, its daemon never started), as in test/integration/replication/hostile.test.ts.
 */
import '../../../common/polyfill.ts'
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import { createMeshNode, type MeshNode } from '../../../daemon/mesh/node.ts'
import { loadIdentity } from '../../../config/identity.ts'
import { REPLICATION_PROTOCOL, replicationProtocols, CONTROL_PROTOCOL_VERSION, SeedMode, NackCode, errorFromRejection } from '../../../protocol/replication/index.ts'
import { MEMBERSHIP_PROTOCOL } from '../../../protocol/membership/ids.ts'
import { ELECTION_PROTOCOL } from '../../../protocol/election/ids.ts'
import { FileKind } from '../../../protocol/delta/index.ts'
import { Channel, type StreamLike } from '../../../daemon/replication/channel.ts'

describe('integration: a peer speaking another protocol version', function () {
  this.timeout(90_000)
  let c: LocalCluster
  let foreign: MeshNode | undefined

  before(async () => {
    c = await LocalCluster.create({ nodes: [{ name: 'b' }, { name: 'c' }] })
    await c.start('b')
    const id = await loadIdentity(join(c.node('c').dir, 'identity.key'))
    foreign = await createMeshNode({ privateKey: id.privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allowedPeerIds: [c.node('b').peerId] })
    await foreign.libp2p.start()
  })

  after(async () => {
    await foreign?.libp2p.stop()
    await c?.destroy()
  })

  const addrOfB = (): ReturnType<typeof multiaddr> => multiaddr(`/ip4/127.0.0.1/tcp/${c.node('b').port}/p2p/${c.node('b').peerId}`)
  const healthy = async (): Promise<void> => {
    assert.equal(c.isRunning('b'), true, 'b exited')
    await c.node('b').client.call('GET', '/v1/health', undefined, { timeoutMs: 3000 })
  }
  /** The same ID with another major version (or an older one). */
  const otherVersion = (id: string, v: string): string => id.replace(/\/\d+\.\d+\.\d+$/, `/${v}`)

  it('a protocol ID of another version: refused by multistream-select, b unaffected', async () => {
    for (const id of [REPLICATION_PROTOCOL, MEMBERSHIP_PROTOCOL, ELECTION_PROTOCOL]) {
      for (const v of ['0.9.0', '2.0.0']) {
        const other = otherVersion(id, v)
        assert.notEqual(other, id)
        await assert.rejects((foreign as MeshNode).libp2p.dialProtocol(addrOfB(), other), (err: Error) => err.name === 'UnsupportedProtocolError', other)
      }
    }
    await healthy()
  })

  it('a replication hello of another control version: a typed refusal on both sides, then the current version is served', async () => {
    const hello = (protocolVersion: number): Parameters<Channel['sendItem']>[0] => ({ type: 'hello', protocolVersion, vm: 'web01', sourceNode: 'c', files: [{ fileId: 0, path: '/vms/web01.img', kind: FileKind.Disk, size: 1024 * 1024, blockSize: 65536 }], seedMode: SeedMode.Full })
    for (const v of [0, CONTROL_PROTOCOL_VERSION + 1]) {
      const stream = await (foreign as MeshNode).libp2p.dialProtocol(addrOfB(), [...replicationProtocols(false)]) as unknown as StreamLike
      const ch = new Channel(stream)
      await ch.sendItem(hello(v))
      const answer = await ch.next()
      assert.ok(answer?.type === 'refuse', `version ${v}: answered ${JSON.stringify(answer)}`)
      assert.equal(answer.code, NackCode.ProtocolError)
      const err = errorFromRejection(answer)
      assert.equal(err.name, 'ReplicationRefusedError')
      assert.equal(err.code, 'ERR_REPLICATION_REFUSED')
      assert.match(err.message, new RegExp(`protocol version ${v} not supported`))
      await ch.close().catch(() => {})
    }
    await c.waitFor('b logged the refusals', async () => {
      const lines = (await readFile(c.node('b').logPath, 'utf8')).split('\n').filter(l => l.includes('ERR_REPLICATION_UNSUPPORTED_VERSION'))
      return lines.length >= 2
    }, 10_000, 100)
    await healthy()
    // not cut off: the same peer with the current version gets the target's state
    const stream = await (foreign as MeshNode).libp2p.dialProtocol(addrOfB(), [...replicationProtocols(false)]) as unknown as StreamLike
    const ch = new Channel(stream)
    await ch.sendItem(hello(CONTROL_PROTOCOL_VERSION))
    const answer = await ch.next()
    assert.equal(answer?.type, 'targetState')
    await ch.close().catch(() => {})
    await healthy()
  })
})
