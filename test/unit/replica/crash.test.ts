/**
 * Power-cut tests: the store runs on MemFs, which drops an arbitrary subset of unsynced writes
 * and a prefix of unsynced directory changes at a crash. Crashes are injected at every step
 * boundary (named hooks) and at every single mutating file-system operation of a generation's
 * apply, of a finalize and of a seed — then the store is reopened (sometimes crashing again
 * during recovery) and must hold exactly one committed generation, with every recovery point
 * restoring to its reference bytes.
 */
import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { SeededRandom } from '../../../common/random.ts'
import { ReplicaStore } from '../../../storage/replica/store.ts'
import type { ReplicaStep } from '../../../storage/replica/types.ts'
import { MemFs, SimulatedCrash, type RebootMode } from './memfs.ts'
import { RefModel, randomGen, seedGen, writeOps, replicaContents, restoredContents, assertContents, type GenSpec } from './helpers.ts'

const DIR = '/r/web01'
const HOUR = 3_600_000
const T0 = 1_700_000_000_000 - (1_700_000_000_000 % HOUR)

interface Harness {
  fs: MemFs
  clock: ManualClock
  reached: Set<ReplicaStep>
  crashAtStep: ReplicaStep | undefined
  refs: Map<number, RefModel>
  store: ReplicaStore
}

async function open (h: Omit<Harness, 'store'>): Promise<ReplicaStore> {
  return await ReplicaStore.open({
    clock: h.clock,
    fs: h.fs,
    hooks: {
      step: (s) => {
        if (h.crashAtStep === s) { h.fs.crash(); throw new SimulatedCrash() }
        h.reached.add(s)
      }
    }
  }, { dir: DIR, vm: 'web01', source: 'hv-a', retention: { maxPoints: 24, keepAllWithinMs: 0, hourlyBeyond: true } })
}

/** createdAtMs so that generations pair up per hour: (2,3) (4,5) ... → retention merges. */
function createdAt (g: number): number { return T0 + Math.floor(g / 2) * HOUR + (g % 2) * 60_000 }

function specFor (rng: SeededRandom, ref: RefModel, g: number): GenSpec {
  return randomGen(rng, ref, g, g - 1, {
    consistent: g % 5 !== 0,
    createdAtMs: createdAt(g),
    blocks: 6,
    resizeChance: 0.4,
    shrinkRegrowChance: 0.5,
    ...(g === 4 ? { newFile: { path: '/vms/web01/nvram.bin', size: 2500 } } : {})
  })
}

/** A store with generations 1..last applied; refs for each. */
async function build (last: number): Promise<Harness> {
  const base: Omit<Harness, 'store'> = { fs: new MemFs(), clock: new ManualClock(0, T0 + 100 * HOUR), reached: new Set<ReplicaStep>(), crashAtStep: undefined, refs: new Map<number, RefModel>() }
  const store = await open(base)
  const rng = new SeededRandom(42)
  const seed = seedGen(rng, 1, [{ path: '/vms/web01/web01.vhdx', size: 40_000 }, { path: '/vms/web01/web01.vmcx', size: 3000 }], { createdAtMs: createdAt(1), blockSize: 8192 })
  let ref = new RefModel().apply(seed)
  base.refs.set(1, ref)
  const w = await store.beginGeneration(seed.header)
  await writeOps(w, seed.ops)
  await w.commit()
  for (let g = 2; g <= last; g++) {
    const spec = specFor(rng, ref, g)
    const wg = await store.beginGeneration(spec.header)
    await writeOps(wg, spec.ops)
    await wg.commit()
    ref = ref.apply(spec)
    base.refs.set(g, ref)
  }
  base.reached.clear()
  // the same object the hook closure sees
  return Object.assign(base, { store })
}

async function tryRun (h: Harness, fn: () => Promise<void>): Promise<boolean> {
  try {
    await fn()
    return true
  } catch (err) {
    assert.ok(h.fs.crashed, `failed without a crash: ${String((err as Error).stack)}`)
    return false
  }
}

/** Reboots, reopens (optionally crashing once more during recovery) and returns the new store. */
async function recover (h: Harness, seed: number, mode: RebootMode, crashInRecoveryAt?: number): Promise<ReplicaStore> {
  h.fs.reboot(new SeededRandom(seed), mode)
  h.crashAtStep = undefined
  if (crashInRecoveryAt !== undefined) {
    h.fs.armCrash(crashInRecoveryAt)
    try {
      const s = await open(h)
      h.fs.disarm()
      return s
    } catch (err) {
      assert.ok(h.fs.crashed, `recovery failed without a crash: ${String((err as Error).stack)}`)
      h.fs.reboot(new SeededRandom(seed + 1000), mode)
    }
  }
  return await open(h)
}

let restoreSeq = 0

/** The replica holds exactly one of `allowed`, and every point restores to its reference. */
async function check (h: Harness, store: ReplicaStore, allowed: number[], label: string): Promise<number> {
  const st = store.state()
  assert.ok(allowed.includes(st.appliedGeneration), `${label}: applied ${st.appliedGeneration}, expected one of ${allowed.join(',')}`)
  assertContents(replicaContents(h.fs, store), h.refs.get(st.appliedGeneration) as RefModel, `${label}: replica`)
  assert.deepEqual(h.fs.list(`${DIR}/journal`), [], `${label}: journal left over`)
  for (const p of store.points()) {
    const r = await store.restore(p.id, `/restores/${restoreSeq++}`)
    assertContents(restoredContents(h.fs, r.files), h.refs.get(p.generation) as RefModel, `${label}: point ${p.id}`)
  }
  const newest = store.points().at(-1)?.generation ?? 0
  assert.equal(st.appliedConsistentGeneration, newest)
  return st.appliedGeneration
}

/** After recovery the store must keep working: apply the next generation on top. */
async function applyNext (h: Harness, store: ReplicaStore, label: string): Promise<void> {
  const applied = store.state().appliedGeneration
  const next = applied + 1
  const spec = specFor(new SeededRandom(next * 7), h.refs.get(applied) as RefModel, next)
  const w = await store.beginGeneration(spec.header)
  await writeOps(w, spec.ops)
  await w.commit()
  assertContents(replicaContents(h.fs, store), (h.refs.get(applied) as RefModel).apply(spec), `${label}: next generation`)
}

const APPLY_STEPS: ReplicaStep[] = ['redo-appended', 'redo-committed', 'undo-partial', 'undo-synced', 'inplace-partial', 'inplace-synced', 'applied-recorded', 'merge-written']
const MODES: RebootMode[] = ['random', 'drop-all', 'keep-all']

describe('replica store: crash consistency', function () {
  this.timeout(120_000)

  for (const step of APPLY_STEPS) {
    it(`crash at step "${step}" leaves exactly generation n-1 or n`, async () => {
      for (const [i, mode] of MODES.entries()) {
        // generation 7 shares its hour with point 6, so retention merges undo logs in its commit
        const h = await build(6)
        const rng = new SeededRandom(100 + i)
        const spec = specFor(rng, h.refs.get(6) as RefModel, 7)
        h.refs.set(7, (h.refs.get(6) as RefModel).apply(spec))
        h.crashAtStep = step
        const done = await tryRun(h, async () => {
          const w = await h.store.beginGeneration(spec.header)
          await writeOps(w, spec.ops)
          await w.commit()
        })
        assert.ok(h.fs.crashed, `step ${step} was never reached`)
        // every step after the journal's comes after the commit record is durable, except the
        // undo log's: it is captured while the blocks arrive and synced alongside the commit
        // record (either generation is then exact); a commit-time capture comes after it
        const committed = done || !['redo-appended', 'undo-partial', 'undo-synced'].includes(step)
        const allowed = committed ? [7] : step === 'redo-appended' ? [6] : [6, 7]
        const store = await recover(h, i, mode)
        await check(h, store, allowed, `${step}/${mode}`)
        await applyNext(h, store, `${step}/${mode}`)
      }
    })
  }

  it('a crash right after onDurable fires leaves exactly generation n: an early ack is honest', async () => {
    for (const [i, mode] of MODES.entries()) {
      const h = await build(6)
      const spec = specFor(new SeededRandom(200 + i), h.refs.get(6) as RefModel, 7)
      h.refs.set(7, (h.refs.get(6) as RefModel).apply(spec))
      let calls = 0
      let appliedBefore = true
      const done = await tryRun(h, async () => {
        const w = await h.store.beginGeneration(spec.header)
        await writeOps(w, spec.ops)
        await w.commit({
          onDurable: () => {
            calls++
            // durable means before the in-place writes and the state switch, not after them
            appliedBefore = h.reached.has('inplace-partial') || h.reached.has('applied-recorded')
            h.fs.crash()
          }
        })
      })
      assert.equal(done, false, 'the crash inside onDurable should fail the commit')
      assert.equal(calls, 1)
      assert.equal(appliedBefore, false, 'onDurable came after the in-place apply')
      const store = await recover(h, 300 + i, mode)
      await check(h, store, [7], `onDurable/${mode}`)
      await applyNext(h, store, `onDurable/${mode}`)
    }
  })

  it('a seed calls onDurable once its state switch is durable: a crash then keeps the seed', async () => {
    for (const [i, mode] of MODES.entries()) {
      const base: Omit<Harness, 'store'> = { fs: new MemFs(), clock: new ManualClock(0, T0), reached: new Set<ReplicaStep>(), crashAtStep: undefined, refs: new Map<number, RefModel>() }
      const h: Harness = Object.assign(base, { store: await open(base) })
      const seed = seedGen(new SeededRandom(400 + i), 1, [{ path: '/vms/web01/web01.vhdx', size: 40_000 }], { createdAtMs: createdAt(1), blockSize: 8192 })
      h.refs.set(1, new RefModel().apply(seed))
      let calls = 0
      await tryRun(h, async () => {
        const w = await h.store.beginGeneration(seed.header)
        await writeOps(w, seed.ops)
        await w.commit({ onDurable: () => { calls++; h.fs.crash() } })
      })
      assert.equal(calls, 1)
      const store = await recover(h, 500 + i, mode)
      await check(h, store, [1], `seed-onDurable/${mode}`)
    }
  })

  it('crash at every file-system operation of an apply (with retention merges), and again during recovery', async () => {
    let crashes = 0
    // bounded: the operation count of one apply is finite; 400 is far above it
    for (let k = 1; k <= 400; k++) {
      const h = await build(6)
      const spec = specFor(new SeededRandom(7), h.refs.get(6) as RefModel, 7)
      h.refs.set(7, (h.refs.get(6) as RefModel).apply(spec))
      h.fs.armCrash(k)
      let returned = false
      await tryRun(h, async () => {
        const w = await h.store.beginGeneration(spec.header)
        await writeOps(w, spec.ops)
        await w.commit()
        returned = true
      })
      if (!h.fs.crashed) {
        assert.ok(k > 20, 'the sweep ended suspiciously early')
        assert.ok(h.reached.has('merge-written'), 'the apply did not merge undo logs')
        break
      }
      crashes++
      const mustBeNew = returned || h.reached.has('redo-committed')
      const store = await recover(h, k, MODES[k % 3] as RebootMode, k % 4 === 0 ? 1 + (k % 13) : undefined)
      await check(h, store, mustBeNew ? [7] : [6, 7], `op ${k}`)
      if (k % 5 === 0) await applyNext(h, store, `op ${k}`)
    }
    assert.ok(crashes > 20)
  })

  it('crash at every file-system operation of an apply whose undo log is captured as the blocks arrive', async () => {
    let crashes = 0
    let early = 0
    // bounded: the operation count of one apply is finite; 400 is far above it
    for (let k = 1; k <= 400; k++) {
      const h = await build(6)
      // ascending blocks, no size change: the shape the writer captures early
      const spec = randomGen(new SeededRandom(70), h.refs.get(6) as RefModel, 7, 6, { consistent: true, createdAtMs: createdAt(7), blocks: 10, sorted: true })
      h.refs.set(7, (h.refs.get(6) as RefModel).apply(spec))
      h.fs.armCrash(k)
      let returned = false
      await tryRun(h, async () => {
        const w = await h.store.beginGeneration(spec.header)
        await writeOps(w, spec.ops)
        // the undo log exists before the commit: it was captured while the blocks arrived
        if (h.fs.list(`${DIR}/undo`).includes('undo-7-6.log')) early++
        await w.commit()
        returned = true
      })
      if (!h.fs.crashed) break
      crashes++
      const mustBeNew = returned || h.reached.has('redo-committed')
      const store = await recover(h, k, MODES[k % 3] as RebootMode, k % 4 === 0 ? 1 + (k % 13) : undefined)
      await check(h, store, mustBeNew ? [7] : [6, 7], `early op ${k}`)
      if (k % 5 === 0) await applyNext(h, store, `early op ${k}`)
    }
    assert.ok(crashes > 20)
    assert.ok(early > 10, 'the early capture was exercised')
  })

  it('crash at every file-system operation of a finalize', async () => {
    let crashes = 0
    for (let k = 1; k <= 400; k++) {
      // 5 is fuzzy: finalize must walk back to 4
      const h = await build(5)
      h.fs.armCrash(k)
      let result: number | undefined
      await tryRun(h, async () => { result = (await h.store.finalize()).generation })
      if (!h.fs.crashed) { assert.equal(result, 4); break }
      crashes++
      const store = await recover(h, k, MODES[k % 3] as RebootMode, k % 3 === 0 ? 1 + (k % 5) : undefined)
      const st = store.state()
      assert.ok(st.appliedGeneration === 5 || st.appliedGeneration === 4, `op ${k}: applied ${st.appliedGeneration}`)
      assertContents(replicaContents(h.fs, store), h.refs.get(st.appliedGeneration) as RefModel, `op ${k}`)
      if (st.finalized) assert.equal(st.appliedGeneration, 4)
      const fin = await store.finalize()
      assert.equal(fin.generation, 4)
      assert.equal(fin.consistent, true)
      assertContents(replicaContents(h.fs, store), h.refs.get(4) as RefModel, `op ${k}: finalized`)
    }
    assert.ok(crashes > 5)
  })

  it('crash at every file-system operation of a seed, then resume', async () => {
    let crashes = 0
    const files = [{ path: '/vms/a.vhdx', size: 50_000 }, { path: '/vms/b.vhdx', size: 9000 }]
    const spec = seedGen(new SeededRandom(9), 3, files, { blockSize: 4096 })
    // a shrink and regrow at the end zeroes a tail that progress had already reported durable
    const written = new RefModel().apply(spec)
    spec.ops.push({ kind: 'size', fileId: 1, size: 30_000 }, { kind: 'size', fileId: 1, size: 50_000 })
    const ref = new RefModel().apply(spec)
    for (let k = 1; k <= 1000; k++) {
      const fs = new MemFs()
      const clock = new ManualClock(0, T0)
      const store = await ReplicaStore.open({ clock, fs }, { dir: DIR, vm: 'web01', source: 'hv-a', seedCheckpointBytes: 12_000 })
      fs.armCrash(k)
      let returned = false
      try {
        const w = await store.beginGeneration(spec.header)
        await writeOps(w, spec.ops)
        await w.commit()
        returned = true
      } catch (err) {
        assert.ok(fs.crashed, String(err))
      }
      if (!fs.crashed) break
      crashes++
      fs.reboot(new SeededRandom(k), MODES[k % 3] as RebootMode)
      const s2 = await ReplicaStore.open({ clock, fs }, { dir: DIR, vm: 'web01', source: 'hv-a', seedCheckpointBytes: 12_000 })
      const st = s2.state()
      if (returned) assert.equal(st.appliedGeneration, 3)
      if (st.appliedGeneration === 3) {
        assertContents(replicaContents(fs, s2), ref, `op ${k}: seeded`)
        continue
      }
      assert.equal(st.appliedGeneration, 0)
      assert.deepEqual(s2.points(), [])
      // every range reported durable holds the right bytes; resume sends only the rest
      const progress = s2.seedProgress()
      const skip = new Map<string, Array<{ offset: number, length: number }>>()
      if (progress !== null && progress.generation === 3) {
        for (const [path, ranges] of Object.entries(progress.files)) {
          const actual = fs.peek(st.files[path] as string) as Buffer
          // durable ranges hold the bytes the blocks wrote (a later shrink must have withdrawn its tail)
          for (const r of ranges) assert.ok(actual.subarray(r.offset, r.offset + r.length).equals((written.files.get(path) as Buffer).subarray(r.offset, r.offset + r.length)), `op ${k}: durable range of ${path}`)
          skip.set(path, ranges)
        }
      }
      const w = await s2.beginGeneration(spec.header)
      const idToPath = new Map(spec.header.files.map(f => [f.fileId, f.path]))
      let sent = 0
      for (const op of spec.ops) {
        if (op.kind === 'size') { await w.setSize(op.fileId, op.size); continue }
        const ranges = skip.get(idToPath.get(op.fileId) as string) ?? []
        if (ranges.some(r => r.offset <= op.offset && op.offset + op.data.length <= r.offset + r.length)) continue
        await w.writeBlock(op.fileId, op.offset, op.data)
        sent++
      }
      await w.commit()
      assert.equal(s2.state().appliedGeneration, 3)
      assertContents(replicaContents(fs, s2), ref, `op ${k}: resumed seed (${sent} blocks re-sent)`)
      assert.deepEqual(s2.points().map(p => p.id), ['3'])
    }
    assert.ok(crashes > 10)
  })

  it('a redo record corrupted after its commit is never applied', async () => {
    for (const step of ['redo-committed', 'inplace-partial'] as const) {
      const h = await build(3)
      const spec = specFor(new SeededRandom(5), h.refs.get(3) as RefModel, 4)
      // the first in-place write must change an existing file
      spec.ops.unshift({ kind: 'block', fileId: 1, offset: 0, data: Buffer.alloc(8192, 0xa5) })
      h.refs.set(4, (h.refs.get(3) as RefModel).apply(spec))
      h.crashAtStep = step
      await tryRun(h, async () => {
        const w = await h.store.beginGeneration(spec.header)
        await writeOps(w, spec.ops)
        await w.commit()
      })
      h.fs.reboot(undefined, 'keep-all')
      h.crashAtStep = undefined
      const redo = h.fs.peek(`${DIR}/journal/redo-4.log`) as Buffer
      // flip a byte inside the second record's payload
      h.fs.corrupt(`${DIR}/journal/redo-4.log`, Math.floor(redo.length / 2), Buffer.from([(redo[Math.floor(redo.length / 2)] as number) ^ 0xff]))
      const store = await open(h)
      const report = store.recoveryReport().find(a => a.generation === 4)
      // at redo-committed the in-place writes have not begun: nothing to undo, unless the undo
      // log captured while the blocks arrived is already sealed (rolling back is then a no-op)
      assert.ok(step === 'redo-committed' ? ['discarded', 'rolled-back'].includes(report?.action ?? '') : report?.action === 'rolled-back', `${step}: ${report?.action}`)
      assert.equal(report?.error?.code, 'ERR_REPLICA_JOURNAL_CORRUPT')
      await check(h, store, [3], `corrupt/${step}`)
      await applyNext(h, store, `corrupt/${step}`)
    }
  })
})
