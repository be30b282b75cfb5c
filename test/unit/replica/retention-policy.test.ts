/**
 * The retention policy a source sends (`vms[].recoveryPoints`) reaches the store: setRetention
 * persists it, pruning follows it (count, keep-all window, hourly), it survives a reopen (a
 * reopen with the opener's default must not prune by that default), the newest point and a
 * restore in progress are never pruned. Virtual time: the clock follows the generations.
 */
import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { SeededRandom } from '../../../common/random.ts'
import { ReplicaStore } from '../../../storage/replica/store.ts'
import { MemFs } from './memfs.ts'
import { RefModel, randomGen, seedGen, applyGen, restoredContents, assertContents, type GenSpec } from './helpers.ts'

const DIR = '/r/web01'
const MIN = 60_000
const T0 = 1_700_000_000_000

interface Built { fs: MemFs, clock: ManualClock, store: ReplicaStore, refs: Map<number, RefModel>, ref: RefModel, rng: SeededRandom, next: number }

async function build (): Promise<Built> {
  const fs = new MemFs()
  const clock = new ManualClock(0, T0)
  const store = await ReplicaStore.open({ clock, fs }, { dir: DIR, vm: 'web01', source: 'hv-a' })
  return { fs, clock, store, refs: new Map(), ref: new RefModel(), rng: new SeededRandom(7), next: 1 }
}

/** `n` more consistent generations, one a minute (virtual). */
async function add (b: Built, n: number, stepMs = MIN): Promise<void> {
  for (let i = 0; i < n; i++) {
    const g = b.next++
    if (g > 1) b.clock.advance(stepMs)
    const at = b.clock.wallNow()
    const spec: GenSpec = g === 1
      ? seedGen(b.rng, 1, [{ path: '/vms/a.vhdx', size: 24_000 }], { createdAtMs: at })
      : randomGen(b.rng, b.ref, g, g - 1, { createdAtMs: at, blocks: 3 })
    await applyGen(b.store, spec)
    b.ref = b.ref.apply(spec)
    b.refs.set(g, b.ref)
  }
}

const ids = (s: ReplicaStore): number[] => s.points().map(p => p.generation)

describe('replica store: the source\'s retention policy', () => {
  it('default policy keeps every point of the last hour; a policy of 3 points keeps the newest 4 and deletes the other undo logs', async () => {
    const b = await build()
    await add(b, 30)
    assert.equal(b.store.points().length, 30, 'default: all within an hour')
    assert.equal(await b.store.setRetention({ maxPoints: 3, keepAllWithinMs: 0, hourlyBeyond: false }), true)
    assert.equal(await b.store.setRetention({ maxPoints: 3, keepAllWithinMs: 0, hourlyBeyond: false }), false, 'same policy: no change')
    const dropped = await b.store.applyRetention()
    assert.equal(dropped.length, 26)
    assert.deepEqual(ids(b.store), [27, 28, 29, 30])
    assert.equal(b.fs.list(`${DIR}/undo`).length, 3, 'one undo log per kept step')
    // every kept point still restores exactly
    let n = 0
    for (const p of b.store.points()) {
      const r = await b.store.restore(p.id, `/restore/${n++}`)
      assertContents(restoredContents(b.fs, r.files), b.refs.get(p.generation) as RefModel, `point ${p.id}`)
    }
    // later commits prune by it as well
    await add(b, 5)
    assert.deepEqual(ids(b.store), [32, 33, 34, 35])
    assert.equal(b.fs.list(`${DIR}/undo`).length, 3)
  })

  it('count 0 and no window: only the newest point, whatever comes', async () => {
    const b = await build()
    await b.store.setRetention({ maxPoints: 0, keepAllWithinMs: 0, hourlyBeyond: false })
    await add(b, 12)
    assert.deepEqual(ids(b.store), [12])
    assert.deepEqual(b.fs.list(`${DIR}/undo`), [])
    assert.equal(b.store.state().appliedConsistentGeneration, 12)
  })

  it('a keep-all window by age: points older than it go, hourly beyond keeps one per hour up to count', async () => {
    const b = await build()
    await b.store.setRetention({ maxPoints: 2, keepAllWithinMs: 10 * MIN, hourlyBeyond: true })
    // 4 hours of a point every 20 minutes (virtual)
    await add(b, 12, 20 * MIN)
    const now = b.clock.wallNow()
    const pts = b.store.points()
    const recent = pts.filter(p => p.createdAtMs >= now - 10 * MIN)
    const older = pts.filter(p => p.createdAtMs < now - 10 * MIN)
    assert.deepEqual(recent.map(p => p.generation), [12])
    assert.equal(older.length, 2, 'count beyond the window')
    assert.equal(new Set(older.map(p => Math.floor(p.createdAtMs / 3_600_000))).size, 2, 'one per hour')
  })

  it('persisted: a reopen with the default policy keeps pruning by the source\'s, not the default', async () => {
    const b = await build()
    await b.store.setRetention({ maxPoints: 50, keepAllWithinMs: 0, hourlyBeyond: false })
    // 40 points over 40 hours: the default (1 h window, 24 hourly) would keep 25 of them
    await add(b, 40, 3_600_000)
    assert.equal(b.store.points().length, 40)
    await b.store.close()
    const again = await ReplicaStore.open({ clock: b.clock, fs: b.fs }, { dir: DIR, vm: 'web01', source: 'hv-a' })
    assert.equal(again.points().length, 40)
    assert.deepEqual(again.retention(), { maxPoints: 50, keepAllWithinMs: 0, hourlyBeyond: false })
    // a reset (reseed) keeps the policy
    await again.reset()
    assert.deepEqual(again.retention(), { maxPoints: 50, keepAllWithinMs: 0, hourlyBeyond: false })
    await again.close()
  })

  it('a restore in progress holds its undo logs: retention waits for it', async () => {
    const b = await build()
    await add(b, 10)
    await b.store.setRetention({ maxPoints: 0, keepAllWithinMs: 0, hourlyBeyond: false })
    // block the restore's read phase: the store pins the chain until it finishes
    let release!: () => void
    const gate = new Promise<void>(resolve => { release = resolve })
    const origOpen = b.fs.open.bind(b.fs)
    let held = false
    b.fs.open = async (path, mode) => {
      if (!held && path.startsWith('/restore/held/')) { held = true; await gate }
      return await origOpen(path, mode)
    }
    const restoring = b.store.restore('2', '/restore/held')
    // wait until the copy phase is over and the read phase is blocked
    for (let i = 0; i < 1000 && !held; i++) await new Promise(resolve => setImmediate(resolve))
    assert.equal(held, true)
    assert.deepEqual(await b.store.applyRetention(), [], 'nothing pruned while a restore reads')
    assert.equal(b.store.points().length, 10)
    release()
    const r = await restoring
    assertContents(restoredContents(b.fs, r.files), b.refs.get(2) as RefModel, 'restored point 2')
    assert.equal((await b.store.applyRetention()).length, 9)
    assert.deepEqual(ids(b.store), [10])
  })

  it('an invalid policy is a typed error', async () => {
    const b = await build()
    await assert.rejects(b.store.setRetention({ maxPoints: -1 }), { name: 'ReplicaInvalidInputError' })
  })
})
