import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { SeededRandom } from '../../../common/random.ts'
import { ReplicaStore } from '../../../storage/replica/store.ts'
import type { SeedProgress } from '../../../storage/replica/types.ts'
import { MemFs } from './memfs.ts'
import { RefModel, seedGen, writeOps, replicaContents, assertContents, type GenSpec } from './helpers.ts'

const DIR = '/r/seed'
const FILES = [{ path: '/vms/big.vhdx', size: 96 * 1024 }, { path: '/vms/cfg.vmcx', size: 3000 }]

async function open (fs: MemFs, checkpoint = 16 * 1024): Promise<ReplicaStore> {
  return await ReplicaStore.open({ clock: new ManualClock(), fs }, { dir: DIR, vm: 'vm', source: 'a', seedCheckpointBytes: checkpoint })
}

function covered (p: SeedProgress | null, path: string, offset: number, length: number): boolean {
  return (p?.files[path] ?? []).some(r => r.offset <= offset && offset + length <= r.offset + r.length)
}

/** Sends the blocks of `spec` not already durable according to `p`; returns how many were sent. */
async function resume (store: ReplicaStore, spec: GenSpec, p: SeedProgress | null, opts: { keepSeedProgress?: boolean } = {}): Promise<number> {
  const w = await store.beginGeneration(spec.header, opts)
  const paths = new Map(spec.header.files.map(f => [f.fileId, f.path]))
  let sent = 0
  for (const op of spec.ops) {
    if (op.kind === 'block' && covered(p, paths.get(op.fileId) as string, op.offset, op.data.length)) continue
    if (op.kind === 'block') await w.writeBlock(op.fileId, op.offset, op.data)
    sent++
  }
  await w.commit()
  return sent
}

describe('replica store: initial seeding', () => {
  it('is not usable while seeding and becomes a recovery point at the end', async () => {
    const fs = new MemFs()
    const store = await open(fs)
    const spec = seedGen(new SeededRandom(1), 5, FILES, { blockSize: 4096 })
    const w = await store.beginGeneration(spec.header)
    assert.equal(w.seeding, true)
    await writeOps(w, spec.ops.slice(0, 10))
    const st = store.state()
    assert.equal(st.seeding, true)
    assert.equal(st.seedingGeneration, 5)
    assert.equal(st.appliedGeneration, 0)
    assert.deepEqual(store.points(), [])
    await assert.rejects(store.restore('5', '/out'), { name: 'ReplicaPointNotFoundError' })
    await assert.rejects(store.finalize(), { name: 'ReplicaNotReadyError' })
    // 40 KiB written, checkpoints every 16 KiB: 32 KiB durable
    assert.equal(store.seedProgress()?.durableBytes, 32 * 1024)
    await w.checkpoint()
    assert.equal(store.seedProgress()?.durableBytes, 40 * 1024)
    await writeOps(w, spec.ops.slice(10))
    const res = await w.commit()
    assert.equal(res.dataBytes, 96 * 1024 + 3000)
    assert.equal(store.state().seeding, false)
    assert.equal(store.seedProgress(), null)
    assert.deepEqual(store.points().map(p => p.id), ['5'])
    assertContents(replicaContents(fs, store), new RefModel().apply(spec), 'seeded')
    assert.deepEqual(fs.list(DIR).filter(n => n.startsWith('seed')), [])
  })

  it('resumes after an abort or a reopen, skipping durable ranges', async () => {
    const fs = new MemFs()
    let store = await open(fs)
    const spec = seedGen(new SeededRandom(2), 1, FILES, { blockSize: 4096 })
    const w = await store.beginGeneration(spec.header)
    await writeOps(w, spec.ops.slice(0, 13))
    await w.abort()
    const p1 = store.seedProgress()
    assert.equal(p1?.durableBytes, 48 * 1024)
    await store.close()
    store = await open(fs)
    const p2 = store.seedProgress()
    assert.deepEqual(p2, p1)
    const sent = await resume(store, spec, p2)
    assert.equal(sent, spec.ops.length - 12)
    assertContents(replicaContents(fs, store), new RefModel().apply(spec), 'resumed')
  })

  it('a different seed generation starts over, unless the sender vouches with keepSeedProgress', async () => {
    const fs = new MemFs()
    const store = await open(fs)
    const spec = seedGen(new SeededRandom(3), 1, FILES, { blockSize: 4096 })
    const w = await store.beginGeneration(spec.header)
    await writeOps(w, spec.ops.slice(0, 8))
    await w.abort()
    assert.equal(store.seedProgress()?.durableBytes, 32 * 1024)

    const later = seedGen(new SeededRandom(3), 2, FILES, { blockSize: 4096 })
    const w2 = await store.beginGeneration(later.header, { keepSeedProgress: true })
    assert.equal(store.seedProgress()?.durableBytes, 32 * 1024)
    await w2.abort()

    const other = seedGen(new SeededRandom(4), 3, FILES, { blockSize: 4096 })
    const w3 = await store.beginGeneration(other.header)
    assert.equal(store.seedProgress()?.generation, 3)
    assert.equal(store.seedProgress()?.durableBytes, 0)
    await writeOps(w3, other.ops)
    await w3.commit()
    assertContents(replicaContents(fs, store), new RefModel().apply(other), 'restarted seed')
  })

  it('abort with discardSeedProgress forgets the seed', async () => {
    const fs = new MemFs()
    const store = await open(fs)
    const spec = seedGen(new SeededRandom(5), 1, FILES, { blockSize: 4096 })
    const w = await store.beginGeneration(spec.header)
    await writeOps(w, spec.ops.slice(0, 8))
    await w.abort({ discardSeedProgress: true })
    assert.equal(store.seedProgress(), null)
    assert.equal(store.state().seeding, false)
    await store.close()
    const again = await open(fs)
    assert.deepEqual(fs.list(`${DIR}/files`), [])
    assert.equal(again.seedProgress(), null)
  })

  it('reset empties a replica for a reseed', async () => {
    const fs = new MemFs()
    const store = await open(fs)
    const spec = seedGen(new SeededRandom(6), 1, FILES, { blockSize: 8192 })
    await resume(store, spec, null)
    await store.reset()
    assert.equal(store.state().appliedGeneration, 0)
    assert.deepEqual(store.points(), [])
    assert.deepEqual(fs.list(`${DIR}/files`), [])
    const again = seedGen(new SeededRandom(7), 9, FILES, { blockSize: 8192 })
    await resume(store, again, null)
    assertContents(replicaContents(fs, store), new RefModel().apply(again), 'reseeded')
  })
})
