import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { SeededRandom } from '../../../common/random.ts'
import { ReplicaStore } from '../../../storage/replica/store.ts'
import type { SeedProgress } from '../../../storage/replica/types.ts'
import { MemFs } from './memfs.ts'
import { RefModel, seedGen, writeOps, replicaContents, assertContents, randomBytes, type GenSpec } from './helpers.ts'
import type { GenerationHeader } from '../../../storage/replica/types.ts'

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

  describe('background checkpoints', () => {
    const BS = 4096
    const spec = (gen: number): { header: GenerationHeader, blocks: Buffer[] } => {
      const rng = new SeededRandom(40 + gen)
      const blocks = Array.from({ length: 24 }, () => randomBytes(rng, BS))
      return { header: { generation: gen, baseGeneration: 0, consistent: true, createdAtMs: 1, files: [{ fileId: 1, path: '/vms/d.img', size: 24 * BS, kind: 'disk' }] }, blocks }
    }
    /** memfs file syncs wait at a gate the test opens. */
    const gatedSyncs = (fs: MemFs): { held: () => number, open: () => void } => {
      let waiting: Array<() => void> = []
      let opened = false
      fs.delay = async (op, path) => {
        if (op !== 'sync' || opened || !path.includes('/files/')) return
        await new Promise<void>(resolve => { waiting.push(resolve) })
      }
      return { held: () => waiting.length, open: () => { opened = true; for (const w of waiting.splice(0)) w(); waiting = [] } }
    }

    it('let writes go on while their fsync runs, and claim only what was written before it', async () => {
      const fs = new MemFs()
      const store = await open(fs, 4 * BS)
      const { header, blocks } = spec(7)
      const gate = gatedSyncs(fs)
      const w = await store.beginGeneration(header)
      for (let i = 0; i < 4; i++) await w.writeBlock(1, i * BS, blocks[i] as Buffer)
      await flushAll()
      assert.equal(gate.held(), 1, 'the first checkpoint waits in its fsync')
      // writes are not held up by it
      for (let i = 4; i < 10; i++) await w.writeBlock(1, i * BS, blocks[i] as Buffer)
      assert.equal(store.seedProgress()?.durableBytes ?? 0, 0, 'nothing claimed before the fsync returns')
      gate.open()
      await flushAll()
      assert.equal(store.seedProgress()?.durableBytes, 4 * BS, 'exactly the blocks written before the fsync began')
      await w.checkpoint()
      assert.equal(store.seedProgress()?.durableBytes, 10 * BS)
      for (let i = 10; i < 24; i++) await w.writeBlock(1, i * BS, blocks[i] as Buffer)
      await w.commit()
      assert.deepEqual(fs.peek(store.state().files['/vms/d.img'] as string), Buffer.concat(blocks))
    })

    it('hold writes back once the disk is far behind', async () => {
      const fs = new MemFs()
      const store = await open(fs, BS)
      const { header, blocks } = spec(8)
      const gate = gatedSyncs(fs)
      const w = await store.beginGeneration(header)
      let written = 0
      const writer = (async () => { for (let i = 0; i < 12; i++) { await w.writeBlock(1, i * BS, blocks[i] as Buffer); written++ } })()
      await flushAll()
      // block 1 starts a checkpoint; 8 checkpoints' worth of blocks later the writer waits for it
      assert.equal(written, 8)
      assert.equal(gate.held(), 1)
      gate.open()
      await writer
      assert.equal(written, 12)
      await w.abort()
    })

    it('a crash while a checkpoint syncs leaves only durable ranges claimed, and the seed resumes', async () => {
      for (const mode of ['drop-all', 'keep-all', 'random'] as const) {
        const fs = new MemFs()
        const store = await open(fs, 4 * BS)
        const { header, blocks } = spec(9)
        const w = await store.beginGeneration(header)
        for (let i = 0; i < 4; i++) await w.writeBlock(1, i * BS, blocks[i] as Buffer)
        await flushAll()
        const gate = gatedSyncs(fs)
        for (let i = 4; i < 9; i++) await w.writeBlock(1, i * BS, blocks[i] as Buffer)
        await flushAll()
        assert.equal(gate.held(), 1)
        fs.crash()
        gate.open()
        await flushAll()
        fs.reboot(new SeededRandom(5), mode)
        const again = await open(fs, 4 * BS)
        const p = again.seedProgress()
        assert.equal(p?.durableBytes, 4 * BS, `${mode}: the first checkpoint only`)
        const actual = fs.peek(again.state().files['/vms/d.img'] as string) as Buffer
        assert.ok(actual.subarray(0, 4 * BS).equals(Buffer.concat(blocks.slice(0, 4))), `${mode}: durable ranges hold their bytes`)
        const w2 = await again.beginGeneration(header)
        for (let i = 4; i < 24; i++) await w2.writeBlock(1, i * BS, blocks[i] as Buffer)
        await w2.commit()
        assert.deepEqual(fs.peek(again.state().files['/vms/d.img'] as string), Buffer.concat(blocks))
      }
    })
  })

  it('writes blocks given as parts exactly like one buffer, seeding and journaled', async () => {
    const fs = new MemFs()
    const store = await open(fs)
    const rng = new SeededRandom(77)
    const size = 40_000
    const data = randomBytes(rng, size)
    const header = (g: number, base: number): GenerationHeader => ({ generation: g, baseGeneration: base, consistent: true, createdAtMs: 1, files: [{ fileId: 2, path: '/vms/p.img', size, kind: 'disk' }] })
    const w = await store.beginGeneration(header(1, 0))
    // parts of uneven sizes, one empty
    await w.writeBlock(2, 0, [data.subarray(0, 100), data.subarray(100, 100), data.subarray(100, 30_000)])
    await w.writeBlock(2, 30_000, [data.subarray(30_000, 35_000), data.subarray(35_000)])
    await w.commit()
    assert.deepEqual(fs.peek(store.state().files['/vms/p.img'] as string), data)
    const next = Buffer.from(data)
    const patch = randomBytes(rng, 9000)
    patch.copy(next, 5000)
    const w2 = await store.beginGeneration(header(2, 1))
    await w2.writeBlock(2, 5000, [patch.subarray(0, 1), patch.subarray(1, 4096), patch.subarray(4096)])
    await w2.commit()
    assert.deepEqual(fs.peek(store.state().files['/vms/p.img'] as string), next)
    await assert.rejects(store.beginGeneration(header(3, 2)).then(async w3 => await w3.writeBlock(2, size - 10, [Buffer.alloc(6), Buffer.alloc(6)])), { code: 'ERR_REPLICA_INVALID_INPUT' })
  })
})

/** Lets pending microtasks and immediate callbacks run (memfs completes in them). */
async function flushAll (): Promise<void> {
  for (let i = 0; i < 50; i++) await new Promise<void>(resolve => setImmediate(resolve))
}

