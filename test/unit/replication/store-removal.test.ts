/**
 * A replica store the registry removes while a session receives into it (the soak's "replica
 * store is closed" for 2 minutes, seed 24188408): owner h2 → h3 → h2, h3's finalized replica
 * from h2 is removed when h2 owns the VM again, but h2's session had already opened that very
 * store. Before the fix the session kept the closed store and nacked every generation.
 */
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { ManualClock } from '../../../common/clock.ts'
import { silentLogger } from '../../../daemon/log.ts'
import { ReplicationService } from '../../../daemon/replication/service.ts'
import { placeSeed } from '../../../daemon/replication/failback.ts'
import { CONTROL_PROTOCOL_VERSION, SeedMode, type HelloMessage } from '../../../protocol/replication/index.ts'
import { encodeGeneration, FileKind, type Frame } from '../../../protocol/delta/index.ts'
import { tempDir } from '../../helpers/tmp.ts'
import { FakeStream, flush, until } from './fake-stream.ts'
import { receiverBed, sendItems } from './receiver-bed.ts'

const BS = 4096
const hello: HelloMessage = { type: 'hello', protocolVersion: CONTROL_PROTOCOL_VERSION, vm: 'vm1', sourceNode: 'hv-a', files: [{ fileId: 0, path: '/src/disk.img', kind: FileKind.Disk, size: 3 * BS, blockSize: BS }], seedMode: SeedMode.Full }

async function frames (fill: number, generation: number, base: number): Promise<Frame[]> {
  const data = new Uint8Array(3 * BS).fill(fill)
  const out: Frame[] = []
  for await (const f of encodeGeneration({
    vm: 'vm1', generation, baseGeneration: base, consistent: true, createdAtMs: 1000,
    files: [{ fileId: 0, path: '/src/disk.img', size: data.length, blockSize: BS, kind: FileKind.Disk }],
    readBlocks: function * () { for (let o = 0; o < data.length; o += BS) yield { offset: o, data: data.subarray(o, o + BS) } }
  })) out.push(f)
  return out
}

describe('replication receiver: a store removed or closed under a session', () => {
  const bed = receiverBed('vmesh-rx-rm-')
  const send = sendItems
  const has = (s: FakeStream, type: string, generation?: number): boolean => s.items().some(i => i.type === type && (generation === undefined || ('generation' in i && i.generation === generation)))

  /** A session that seeded generation 1 into the store of (hv-a, vm1) and is still open. */
  async function seeded (): Promise<{ s: FakeStream, done: Promise<void> }> {
    const s = new FakeStream()
    const done = bed.rx.accept(s, 'PEER-A')
    send(s, [hello])
    await until('targetState', () => has(s, 'targetState'))
    send(s, await frames(1, 1, 0))
    await until('ack 1', () => has(s, 'ack', 1))
    await until('applied 1', () => bed.replicas.snapshot()[0]?.store.state().appliedGeneration === 1)
    return { s, done }
  }

  it('removing a store ends the session that holds it (ReplicaStoreRevokedError); the next session gets a fresh store', async () => {
    const { s, done } = await seeded()
    let ended = false
    void done.then(() => { ended = true })
    await bed.replicas.remove('hv-a', 'vm1')
    // the removal waited for the session to let go of the store before closing it
    assert.equal(ended, true, 'the session ended before the store was closed')
    assert.equal(s.aborted?.name, 'ReplicaStoreRevokedError')
    assert.equal((s.aborted as { code?: string }).code, 'ERR_REPLICA_STORE_REVOKED')
    assert.equal(existsSync(bed.replicas.dirOf('hv-a', 'vm1')), false)
    // the source reconnects: a fresh, empty store takes its seed
    const s2 = new FakeStream()
    const done2 = bed.rx.accept(s2, 'PEER-A')
    send(s2, [hello])
    await until('targetState', () => has(s2, 'targetState'))
    const ts = s2.items().find(i => i.type === 'targetState')
    assert.equal(ts?.type === 'targetState' && ts.appliedGeneration, 0)
    send(s2, await frames(2, 7, 0))
    await until('ack 7', () => has(s2, 'ack', 7) || has(s2, 'nack', 7))
    assert.ok(!has(s2, 'nack'), `no nack: ${JSON.stringify(s2.items().filter(i => i.type === 'nack'))}`)
    s2.end()
    await done2
  })

  it('a removal during a generation in progress ends the session first: the store is never closed under a receive', async () => {
    const { s, done } = await seeded()
    const f2 = await frames(3, 2, 1)
    send(s, f2.slice(0, -1)) // begin and blocks, no end: generation 2 is being received
    await until('generation 2 receiving', () => bed.replicas.snapshot()[0]?.store.state().receivingGeneration === 2)
    const store = bed.replicas.snapshot()[0]!.store
    let ended = false
    void done.then(() => { ended = true })
    await bed.replicas.remove('hv-a', 'vm1')
    assert.equal(ended, true)
    assert.equal(s.aborted?.name, 'ReplicaStoreRevokedError')
    assert.ok(!has(s, 'ack', 2) && !has(s, 'nack', 2), 'generation 2 neither acknowledged nor refused: the session ended')
    await assert.rejects(store.beginGeneration({ generation: 3, baseGeneration: 1, consistent: true, createdAtMs: 1, files: [] }), { name: 'ReplicaClosedError' })
  })

  it('a session that reaches a closed store anyway ends with ReplicaStoreRevokedError instead of nacking every generation', async () => {
    const { s, done } = await seeded()
    // closed behind the registry's back (what a removal did before leases)
    await bed.replicas.snapshot()[0]!.store.close()
    send(s, await frames(4, 2, 1))
    await until('the session ends or nacks', () => s.aborted !== undefined || has(s, 'nack'))
    assert.ok(!has(s, 'nack'), `no nack: ${JSON.stringify(s.items().filter(i => i.type === 'nack'))}`)
    await done
    assert.equal(s.aborted?.name, 'ReplicaStoreRevokedError')
    assert.equal((s.aborted as { cause?: { name?: string } }).cause?.name, 'ReplicaClosedError')
  })

  it('owner A → B → A: A\'s session on the finalized store ends when it is removed, and the next one seeds from the copy placed for it', async () => {
    // this node ran the VM from its replica of A (finalized); A owns it again and reconnects
    const first = await seeded()
    const store = bed.replicas.snapshot()[0]!.store
    await store.finalize({})
    first.s.end()
    await first.done
    // the ownership host places this node's copy as the seed of A's new replica while A's
    // session opens the finalized store (in the soak: 90 ms apart, either order)
    await placeSeed(bed.replicas.seedDirOf('hv-a', 'vm1'), [{ source: '/src/disk.img', local: store.state().files['/src/disk.img'] as string }])
    const s = new FakeStream()
    const done = bed.rx.accept(s, 'PEER-A')
    send(s, [{ ...hello, seedMode: SeedMode.Existing }])
    await until('targetState', () => has(s, 'targetState'))
    send(s, await frames(5, 2, 1))
    await until('nack 2 (finalized)', () => has(s, 'nack', 2))
    await flush()
    assert.ok(existsSync(bed.replicas.seedDirOf('hv-a', 'vm1')), 'a session on a finalized store leaves the seed copy alone')
    // then it removes the finalized store (seedFromLocalCopy): A's session on it ends
    await bed.replicas.remove('hv-a', 'vm1')
    assert.equal(s.aborted?.name, 'ReplicaStoreRevokedError')
    await done
    // A's next session: a fresh store, preloaded from the seed copy (only differing blocks follow)
    const s2 = new FakeStream()
    const done2 = bed.rx.accept(s2, 'PEER-A')
    send(s2, [{ ...hello, seedMode: SeedMode.Existing }])
    await until('targetState', () => has(s2, 'targetState'))
    const ts = s2.items().find(i => i.type === 'targetState')
    assert.ok(ts?.type === 'targetState' && ts.seeding !== null && ts.seeding.durableRanges.length > 0, `seed copy preloaded: ${JSON.stringify(ts)}`)
    s2.end()
    await done2
  })

  it('remove with ifUnused leaves a store a session holds; acquire waits out a removal and gets a fresh store', async () => {
    const { s, done } = await seeded()
    assert.equal(await bed.replicas.remove('hv-a', 'vm1', { ifUnused: true }), false)
    assert.equal(bed.replicas.snapshot()[0]?.store.state().appliedGeneration, 1)
    s.end()
    await done
    const removal = bed.replicas.remove('hv-a', 'vm1', { ifUnused: true })
    const lease = await bed.replicas.acquire('hv-a', 'vm1')
    assert.equal(await removal, true)
    assert.equal(lease.store.state().appliedGeneration, 0, 'a fresh store, not the removed one')
    lease.release()
  })
})

describe('replication service: the finalized replica when another node owns the VM', () => {
  let tmp: { dir: string, cleanup: () => Promise<void> }
  let svc: ReplicationService
  const clock = new ManualClock()

  beforeEach(async () => {
    tmp = await tempDir('vmesh-seed-fin-')
    svc = new ReplicationService({ clock, log: silentLogger(), libp2p: {} as never }, { nodeName: 'h1', dataDir: tmp.dir, peers: [], vms: [], scan: { budgetBytesPerSec: Infinity }, fsync: false })
    await svc.replicas.start()
  })
  afterEach(async () => { await svc.replicas.stop(); await tmp.cleanup() })

  /** A store of vm3 from `source` holding generation 1 (and finalized, if asked). */
  async function replica (source: string, finalized: boolean): Promise<void> {
    const store = await svc.replicas.open(source, 'vm3')
    const w = await store.beginGeneration({ generation: 1, baseGeneration: 0, consistent: true, createdAtMs: 1000, files: [{ fileId: 0, path: '/src/vm3.vhd', size: BS, kind: 'disk' }] })
    await w.writeBlock(0, 0, new Uint8Array(BS).fill(source.charCodeAt(1)))
    await w.commit()
    if (finalized) await store.finalize({})
  }

  it('owner h1 → h2 → h1 (the soak\'s vm3): once h2 owns the VM, h1\'s finalized replica goes even though h2\'s replica here already holds data', async () => {
    // h1 ran vm3 from its replica of h3 (finalized); h2 took it over, and h2's session reached h1
    // (a replica with data) before h1 heard of the new owner
    await replica('h3', true)
    await replica('h2', false)
    assert.equal(await svc.seedFromLocalCopy('vm3', 'h2'), undefined, 'no seed needed: h2\'s replica here has data')
    assert.deepEqual(svc.replicaSummaries('vm3').map(r => r.source), ['h2'])
    assert.equal(await svc.finalizedFiles('vm3'), undefined, 'a later win here cannot start the VM from the stale finalized files')
    assert.equal(existsSync(svc.replicas.dirOf('h3', 'vm3')), false)
  })
})
