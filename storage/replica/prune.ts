/**
 * Applying the retention policy to the undo chain. Dropping the oldest point deletes the undo
 * logs below the new oldest point; dropping a point in the middle merges the two undo logs that
 * meet at it (older bytes win) so every older point stays reachable. Each change is crash-safe:
 * the merged log is written and synced first, then state.json switches to it, then the old
 * files are deleted (open() removes any undo file the state does not reference). Long runs of
 * fuzzy generations' undo logs are merged the same way, so their number stays bounded.
 */
import type { Core } from './core.ts'
import type { PersistedState, UndoEntry } from './schema.ts'
import { selectRetained } from './retention.ts'
import { mergeUndo } from './undo.ts'
import { undoFileName } from './core.ts'

async function unlinkAll (core: Core, files: string[]): Promise<void> {
  for (const f of files) {
    try { await core.fs.unlink(core.undoPath(f)) } catch (err) { core.log.warn({ err, file: f }, 'could not delete an undo log') }
  }
}

/** Drops undo entries no retained point needs (all of them when there is no point). */
async function trimBelowOldest (core: Core): Promise<void> {
  const s = core.state
  const oldest = s.points[0]?.generation ?? Number.POSITIVE_INFINITY
  const drop = s.undo.filter(e => e.generation <= oldest)
  if (drop.length === 0) return
  await core.commitState({ ...s, undo: s.undo.filter(e => e.generation > oldest) })
  await unlinkAll(core, drop.map(e => e.file))
}

/**
 * Merges the two undo logs that meet at `generation` (older wins) and, when `dropPoint`, removes
 * the point there too. Without both logs (nothing to merge) only the point goes.
 */
async function mergeAt (core: Core, generation: number, dropPoint: boolean): Promise<void> {
  const s = core.state
  const olderIdx = s.undo.findIndex(e => e.generation === generation)
  const newerIdx = s.undo.findIndex(e => e.base === generation)
  const points = dropPoint ? s.points.filter(p => p.generation !== generation) : s.points
  const older = s.undo[olderIdx]
  const newer = s.undo[newerIdx]
  if (older === undefined || newer === undefined || newerIdx !== olderIdx + 1) {
    if (dropPoint) await core.commitState({ ...s, points })
    return
  }
  const file = undoFileName(newer.generation, older.base)
  const bytes = await mergeUndo(core, core.undoPath(older.file), core.undoPath(newer.file), core.undoPath(file))
  await core.step('merge-written', generation)
  const undo = [...s.undo]
  undo.splice(olderIdx, 2, { generation: newer.generation, base: older.base, file, bytes })
  const next: PersistedState = { ...s, points, undo }
  await core.commitState(next)
  await unlinkAll(core, [older.file, newer.file])
}

/**
 * Undo logs of fuzzy generations pile up between two points (or above the newest one) when no
 * consistent generation comes for a while. Past MAX_FUZZY_RUN logs in a row, the two oldest
 * are merged — one merge per new log, so the count stays bounded and the cost amortized.
 */
const MAX_FUZZY_RUN = 8

async function compactFuzzyRuns (core: Core): Promise<void> {
  // bounded: each merge removes one undo entry
  for (let guard = core.state.undo.length; guard > 0; guard--) {
    const s = core.state
    const points = new Set(s.points.map(p => p.generation))
    let runStart = 0
    let target: number | undefined
    for (let i = 1; i <= s.undo.length; i++) {
      const e = s.undo[i]
      if (e === undefined || points.has(e.base)) {
        if (i - runStart > MAX_FUZZY_RUN) { target = (s.undo[runStart] as UndoEntry).generation; break }
        runStart = i
      }
    }
    if (target === undefined) return
    await mergeAt(core, target, false)
  }
}

/** Applies retention; returns the generations of the points dropped. */
export async function prune (core: Core): Promise<number[]> {
  const keep = selectRetained(core.state.points, core.clock.wallNow(), core.retention)
  const dropped = core.state.points.filter(p => !keep.has(p.generation)).map(p => p.generation)
  // The oldest points that go, in one state switch: a policy that just arrived (or a store
  // idle for long) may drop thousands at once, and one switch per point would be that many fsyncs.
  const drop = new Set(dropped)
  let lead = 0
  while (lead < core.state.points.length && drop.has((core.state.points[lead] as { generation: number }).generation)) lead++
  if (lead > 0) {
    await core.commitState({ ...core.state, points: core.state.points.slice(lead) })
    await trimBelowOldest(core)
  }
  // then the rest, oldest first; each step re-reads the state it changed. Bounded by the number of points.
  for (const g of dropped.filter(g => core.state.points.some(p => p.generation === g))) {
    const oldest = core.state.points[0]?.generation
    if (oldest === g) {
      await core.commitState({ ...core.state, points: core.state.points.slice(1) })
      await trimBelowOldest(core)
    } else {
      await mergeAt(core, g, true)
    }
  }
  await trimBelowOldest(core)
  await compactFuzzyRuns(core)
  return dropped
}
