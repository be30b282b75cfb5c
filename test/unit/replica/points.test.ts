import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { SeededRandom } from '../../../common/random.ts'
import { ReplicaStore } from '../../../storage/replica/store.ts'
import type { RetentionPolicy } from '../../../storage/replica/retention.ts'
import type { FinalizeResult, ReplicaStep } from '../../../storage/replica/types.ts'
import { MemFs } from './memfs.ts'
import { RefModel, randomGen, seedGen, applyGen, writeOps, replicaContents, restoredContents, assertContents, type GenSpec } from './helpers.ts'

const DIR = '/r/web01'
const HOUR = 3_600_000
const MIN = 60_000

interface Built { fs: MemFs, clock: ManualClock, store: ReplicaStore, refs: Map<number, RefModel> }

/** Generations 1..n; `consistent(g)` and `createdAt(g)` shape them; the clock follows createdAt. */
let onStep: ((step: ReplicaStep) => void) | undefined

async function build (n: number, o: { consistent?: (g: number) => boolean, createdAt?: (g: number) => number, retention?: Partial<RetentionPolicy>, seed?: number, hooks?: boolean } = {}): Promise<Built> {
  const createdAt = o.createdAt ?? ((g: number) => 1_700_000_000_000 + g * MIN)
  const fs = new MemFs()
  const clock = new ManualClock(0, createdAt(1))
  const store = await ReplicaStore.open({ clock, fs, hooks: { step: (s) => { if (o.hooks === true) onStep?.(s) } } }, { dir: DIR, vm: 'web01', source: 'hv-a', ...(o.retention !== undefined ? { retention: o.retention } : {}) })
  const rng = new SeededRandom(o.seed ?? 1)
  const refs = new Map<number, RefModel>()
  let ref = new RefModel()
  for (let g = 1; g <= n; g++) {
    clock.advance(Math.max(0, createdAt(g) - clock.wallNow()))
    const c = o.consistent?.(g) ?? true
    const spec: GenSpec = g === 1
      ? seedGen(rng, 1, [{ path: '/vms/a.vhdx', size: 24_000 }, { path: '/vms/a.vmcx', size: 2000 }], { consistent: c, createdAtMs: createdAt(g) })
      : randomGen(rng, ref, g, g - 1, { consistent: c, createdAtMs: createdAt(g), blocks: 4, resizeChance: 0.2, shrinkRegrowChance: 0.2 })
    await applyGen(store, spec)
    ref = ref.apply(spec)
    refs.set(g, ref)
  }
  return { fs, clock, store, refs }
}

let seq = 0
async function assertRestores (b: Built): Promise<void> {
  for (const p of b.store.points()) {
    const r = await b.store.restore(p.id, `/restore/${seq++}`)
    assert.equal(r.generation, p.generation)
    assertContents(restoredContents(b.fs, r.files), b.refs.get(p.generation) as RefModel, `point ${p.id}`)
  }
}

describe('replica store: recovery points', () => {
  it('fuzzy generations are applied but are not points; finalize rolls back to the last consistent one', async () => {
    const b = await build(5, { consistent: g => g <= 3 })
    assert.deepEqual(b.store.points().map(p => p.id), ['1', '2', '3'])
    assert.equal(b.store.state().appliedGeneration, 5)
    assert.equal(b.store.state().appliedConsistentGeneration, 3)
    assertContents(replicaContents(b.fs, b.store), b.refs.get(5) as RefModel, 'applied fuzzy')
    await assertRestores(b)
    const fin = await b.store.finalize()
    assert.deepEqual({ generation: fin.generation, consistent: fin.consistent, rolledBack: fin.rolledBack }, { generation: 3, consistent: true, rolledBack: 2 })
    assertContents(replicaContents(b.fs, b.store), b.refs.get(3) as RefModel, 'finalized')
    assert.deepEqual(Object.keys(fin.files).sort(), ['/vms/a.vhdx', '/vms/a.vmcx'])
    assert.equal(b.store.state().finalized, true)
    assert.deepEqual(b.store.points(), [])
    assert.deepEqual(b.fs.list(`${DIR}/undo`), [])
    await assert.rejects(b.store.beginGeneration(randomGen(new SeededRandom(1), b.refs.get(3) as RefModel, 6, 3).header), { name: 'ReplicaFinalizedError' })
    // idempotent, and it survives a reopen
    assert.equal((await b.store.finalize()).generation, 3)
    await b.store.close()
    const again = await ReplicaStore.open({ clock: b.clock, fs: b.fs }, { dir: DIR, vm: 'web01', source: 'hv-a' })
    assert.equal(again.state().finalized, true)
    assertContents(replicaContents(b.fs, again), b.refs.get(3) as RefModel, 'reopened')
  })

  it('a long run of fuzzy generations keeps a bounded number of undo logs and still finalizes exactly', async () => {
    const b = await build(30, { consistent: g => g <= 3 })
    assert.deepEqual(b.store.points().map(p => p.id), ['1', '2', '3'])
    // 2→1, 3→2, then the 27 fuzzy logs above point 3 compacted to 8
    assert.equal(b.fs.list(`${DIR}/undo`).length, 10)
    await assertRestores(b)
    const fin = await b.store.finalize()
    assert.equal(fin.generation, 3)
    assertContents(replicaContents(b.fs, b.store), b.refs.get(3) as RefModel, 'finalized after a fuzzy run')
  })

  it('finalize to a chosen point, dropping files created after it', async () => {
    const fs = new MemFs()
    const store = await ReplicaStore.open({ clock: new ManualClock(), fs }, { dir: DIR, vm: 'web01', source: 'hv-a' })
    const rng = new SeededRandom(3)
    const s1 = seedGen(rng, 1, [{ path: '/vms/a.vhdx', size: 20_000 }])
    await applyGen(store, s1)
    const r1 = new RefModel().apply(s1)
    const s2 = randomGen(rng, r1, 2, 1, { newFile: { path: '/vms/new.bin', size: 3000 } })
    await applyGen(store, s2)
    assert.ok(store.state().files['/vms/new.bin'] !== undefined)
    const fin = await store.finalize({ pointId: '1' })
    assert.equal(fin.generation, 1)
    assert.deepEqual(Object.keys(fin.files), ['/vms/a.vhdx'])
    assertContents(replicaContents(fs, store), r1, 'finalized at 1')
    assert.deepEqual(fs.list(`${DIR}/files`), ['a.vhdx'])
  })

  it('finalize with no consistent generation needs acceptFuzzy', async () => {
    const b = await build(3, { consistent: () => false })
    assert.deepEqual(b.store.points(), [])
    assert.equal(b.store.state().appliedConsistentGeneration, 0)
    await assert.rejects(b.store.finalize(), { name: 'ReplicaNoConsistentPointError' })
    await assert.rejects(b.store.finalize({ pointId: '2' }), { name: 'ReplicaPointNotFoundError' })
    const fin = await b.store.finalize({ acceptFuzzy: true })
    assert.equal(fin.generation, 3)
    assert.equal(fin.consistent, false)
    assertContents(replicaContents(b.fs, b.store), b.refs.get(3) as RefModel, 'finalized fuzzy')
  })

  it('finalize discards a generation being received', async () => {
    const b = await build(3)
    const spec = randomGen(new SeededRandom(9), b.refs.get(3) as RefModel, 4, 3)
    const w = await b.store.beginGeneration(spec.header)
    await writeOps(w, spec.ops.slice(0, 2))
    const fin = await b.store.finalize()
    assert.equal(fin.generation, 3)
    await assert.rejects(w.writeBlock(1, 0, Buffer.alloc(1)), { code: 'ERR_REPLICA_WRITER_CLOSED' })
    assertContents(replicaContents(b.fs, b.store), b.refs.get(3) as RefModel, 'finalized')
    assert.deepEqual(b.fs.list(`${DIR}/journal`), [])
  })

  it('retention keeps every point of the last hour and one per hour for 24 hours, and all of them restore', async function () {
    this.timeout(60_000)
    // one generation every 10 minutes for 30 hours, starting on an hour boundary
    const h0 = 1_700_002_800_000 - (1_700_002_800_000 % HOUR)
    const b = await build(181, { createdAt: g => h0 + (g - 1) * 10 * MIN, seed: 5 })
    const expected = [...Array.from({ length: 24 }, (_, i) => 36 + 6 * i), 175, 176, 177, 178, 179, 180, 181]
    assert.deepEqual(b.store.points().map(p => p.generation), expected)
    // one undo log between each pair of neighbouring points: intermediate ones were merged
    assert.equal(b.fs.list(`${DIR}/undo`).length, expected.length - 1)
    await assertRestores(b)
    // time passes without new generations: the hour-old points thin out at the next commit
    b.clock.advance(2 * HOUR)
    const ref = b.refs.get(181) as RefModel
    const spec = randomGen(new SeededRandom(77), ref, 182, 181, { createdAtMs: b.clock.wallNow() })
    await applyGen(b.store, spec)
    b.refs.set(182, ref.apply(spec))
    assert.deepEqual(b.store.points().map(p => p.generation), [...Array.from({ length: 23 }, (_, i) => 48 + 6 * i), 181, 182])
    await assertRestores(b)
  })

  it('retention by count alone', async () => {
    const b = await build(10, { retention: { maxPoints: 3, keepAllWithinMs: 0, hourlyBeyond: false }, consistent: g => g !== 8 })
    assert.deepEqual(b.store.points().map(p => p.generation), [6, 7, 9, 10])
    assert.equal(b.store.state().appliedConsistentGeneration, 10)
    await assertRestores(b)
  })

  it('restore tells its progress: the files cloned, then the undo logs applied, toward one total that never moves back', async () => {
    const b = await build(4)
    const seen: Array<{ phase: string, doneBytes: number, totalBytes: number }> = []
    const r = await b.store.restore('1', '/out/progress', { onProgress: (p) => { seen.push({ ...p }) } })
    assertContents(restoredContents(b.fs, r.files), b.refs.get(1) as RefModel, 'restored 1')
    const total = seen[0]?.totalBytes ?? 0
    const fileBytes = seen.filter(p => p.phase === 'copy').at(-1)?.doneBytes ?? 0
    assert.ok(fileBytes > 0 && total > fileBytes, `total ${total} covers the files (${fileBytes}) and the three undo logs`)
    assert.ok(seen.every(p => p.totalBytes === total), 'one total from the start')
    assert.deepEqual([...new Set(seen.map(p => p.phase))], ['copy', 'rollback'])
    for (let i = 1; i < seen.length; i++) assert.ok((seen[i]?.doneBytes ?? 0) >= (seen[i - 1]?.doneBytes ?? 0), 'done never goes back')
    assert.deepEqual(seen.at(-1), { phase: 'rollback', doneBytes: total, totalBytes: total })
    assert.equal(seen.filter(p => p.phase === 'rollback').length, 3 + 1, 'before each of the three undo logs, and at the end')
  })

  it('restore runs while a generation streams in, and leaves the replica alone', async () => {
    const b = await build(4)
    const spec = randomGen(new SeededRandom(8), b.refs.get(4) as RefModel, 5, 4)
    const w = await b.store.beginGeneration(spec.header)
    await writeOps(w, spec.ops.slice(0, 2))
    const r = await b.store.restore('2', '/out/two')
    assertContents(restoredContents(b.fs, r.files), b.refs.get(2) as RefModel, 'restored 2')
    await writeOps(w, spec.ops.slice(2))
    await w.commit()
    assertContents(replicaContents(b.fs, b.store), (b.refs.get(4) as RefModel).apply(spec), 'replica after commit')
    assert.equal(r.files['/vms/a.vhdx'], '/out/two/a.vhdx')
  })

  it('finalize waits for a restore that is reading undo logs (no deadlock), and both are exact', async () => {
    const b = await build(4, { consistent: g => g !== 4, hooks: true })
    let finalizing: Promise<FinalizeResult> | undefined
    // once the copies exist (still under the lock), ask for a finalize: it must wait for the restore
    onStep = (step) => { if (step === 'restore-copied') finalizing = b.store.finalize() }
    // and make the restore slow, so a finalize that did not wait would delete its undo logs
    b.fs.delay = async (_op, path) => { if (path.startsWith('/out/')) for (let i = 0; i < 20; i++) await new Promise(resolve => setImmediate(resolve)) }
    const r = await b.store.restore('2', '/out/concurrent')
    onStep = undefined
    b.fs.delay = undefined
    assertContents(restoredContents(b.fs, r.files), b.refs.get(2) as RefModel, 'restore')
    assert.ok(finalizing !== undefined)
    assert.equal((await finalizing).generation, 3)
    assertContents(replicaContents(b.fs, b.store), b.refs.get(3) as RefModel, 'finalized')
    // a restore that comes second finds the points gone
    await assert.rejects(b.store.restore('2', '/out/late'), { name: 'ReplicaPointNotFoundError' })
  })

  it('restore refuses a bad target or an unknown point', async () => {
    const b = await build(2)
    await assert.rejects(b.store.restore('7', '/out/x'), { name: 'ReplicaPointNotFoundError' })
    await assert.rejects(b.store.restore('abc', '/out/x'), { name: 'ReplicaPointNotFoundError' })
    await assert.rejects(b.store.restore('1', `${DIR}/files/x`), { name: 'ReplicaRestoreTargetError' })
    await b.fs.mkdir('/out/busy')
    await (await b.fs.open('/out/busy/f', 'create')).close()
    await assert.rejects(b.store.restore('1', '/out/busy'), { name: 'ReplicaRestoreTargetError' })
    const ac = new AbortController()
    ac.abort()
    await assert.rejects(b.store.restore('1', '/out/aborted', { signal: ac.signal }), { name: 'AbortedError' })
    assert.deepEqual(b.fs.list('/out/aborted'), [])
  })
})
