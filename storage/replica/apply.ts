/**
 * Completing a committed generation, shared by commit() and by recovery at open:
 *
 *   summarize redo (the writer's own summary, or at recovery a scan verifying to the commit record)
 *   → capture undo (skipped when a sealed undo log already exists), fsync
 *   → replay redo in place, fsync
 *   → state.json: applied = n (the single atomic switch)
 *   → delete redo
 *
 * In-place writes start only once the undo log is sealed, so until then the replica still holds
 * exactly the base generation; after it, the sealed undo log can always take it back there.
 * Failure handling follows from that:
 *   - before in-place writes: discard the journals; the replica is untouched;
 *   - during in-place writes: roll back with the undo log, then discard;
 *   - while recording the state: before the rename, as during in-place writes; at or after the
 *     rename it may or may not have landed, so nothing is undone — the store refuses further
 *     work and the next open() decides from the durable state (applied = n: leftover journal
 *     deleted; applied = n−1: roll forward again).
 */
import type { Core } from './core.ts'
import type { PersistedState } from './schema.ts'
import type { RedoScan } from './redo.ts'
import { scanRedo, applyRedoInPlace, type HeldRecord } from './redo.ts'
import { captureUndo, undoIsSealed, applyUndo } from './undo.ts'
import { undoFileName, redoFileName } from './core.ts'
import { SwitchUncertainError } from './atomic.ts'
import { ReplicaJournalCorruptError, ReplicaBaseMismatchError, ReplicaFinalizedError, ReplicaDiskFullError, ReplicaNeedsRecoveryError, isDiskFull } from './errors.ts'
import { errorMessage } from '../../common/errors.ts'

export interface RollForwardResult { generation: number, consistent: boolean, dataBytes: number }

/** Unlinks the redo journal and the undo log of an unapplied generation, durably. */
export async function discardGeneration (core: Core, generation: number, base: number): Promise<void> {
  await core.fs.unlink(core.redoPath(generation))
  await core.fs.unlink(core.undoPath(undoFileName(generation, base)))
  await core.syncDir(core.journalDir)
  await core.syncDir(core.undoDir)
}

/** Takes a partly written replica back to its base with the sealed undo log, then discards. */
export async function rollBackGeneration (core: Core, generation: number, base: number): Promise<void> {
  await applyUndo(core, core.undoPath(undoFileName(generation, base)), core.filesDir)
  await discardGeneration(core, generation, base)
}

function mapError (err: unknown, what: string): unknown {
  if (isDiskFull(err)) return new ReplicaDiskFullError(`disk full while ${what}; generation discarded`, { cause: err })
  return err
}

/** The durable state once `scan`'s generation is applied. */
function appliedState (s: PersistedState, scan: RedoScan, undoFile: string, undoBytes: number): PersistedState {
  const h = scan.header
  const files = { ...s.files }
  for (const f of h.files) {
    const old = files[f.path]
    files[f.path] = { name: old?.name ?? f.name, kind: f.kind, size: scan.files.get(f.fileId)?.finalSize ?? f.size }
  }
  return {
    ...s,
    applied: h.generation,
    appliedCreatedAtMs: h.createdAtMs,
    appliedIsConsistent: h.consistent,
    files,
    points: h.consistent ? [...s.points, { generation: h.generation, createdAtMs: h.createdAtMs }] : s.points,
    undo: [...s.undo, { generation: h.generation, base: h.baseGeneration, file: undoFile, bytes: undoBytes }]
  }
}

/**
 * Completes committed generation `generation` (`known`: the writer's summary of the journal it
 * just committed, when there is one; from the writer also: `sealedUndoBytes` when its undo log is
 * already sealed and durable, `held` when it kept the journal's records in memory). Throws ReplicaNeedsRecoveryError when the outcome
 * could not be settled in-process (the caller must stop using the store until reopened).
 */
export async function rollForward (core: Core, generation: number, known?: RedoScan, fromWriter: { sealedUndoBytes?: number, held?: readonly HeldRecord[] } = {}): Promise<RollForwardResult> {
  const { sealedUndoBytes, held } = fromWriter
  const base = core.state.applied
  const undoFile = undoFileName(generation, base)
  const undoPath = core.undoPath(undoFile)
  let scan: RedoScan
  let undoBytes: number
  try {
    if (core.state.finalized || core.state.finalizing !== null) throw new ReplicaFinalizedError('the replica was finalized for failover')
    // the writer's own summary saves re-reading the journal; recovery has to scan it
    scan = known ?? await scanRedo(core, core.redoPath(generation))
    if (!scan.committed) throw scan.end?.kind === 'torn' ? scan.end.error : new ReplicaJournalCorruptError(`${redoFileName(generation)} has no commit record`)
    if (scan.header.generation !== generation || scan.header.baseGeneration !== base) {
      throw new ReplicaBaseMismatchError(`journal of generation ${scan.header.generation} is based on ${scan.header.baseGeneration}, replica is at ${base}`)
    }
    if (sealedUndoBytes !== undefined) {
      // the writer captured and synced it while the blocks arrived
      undoBytes = sealedUndoBytes
    } else if (await undoIsSealed(core, undoPath)) {
      undoBytes = (await core.fs.stat(undoPath))?.size ?? 0
    } else {
      undoBytes = await captureUndo(core, undoPath, scan, core.state.files)
    }
  } catch (err) {
    try { await discardGeneration(core, generation, base) } catch (e2) {
      throw new ReplicaNeedsRecoveryError(`could not discard generation ${generation}: ${errorMessage(e2)}`, { cause: err })
    }
    throw mapError(err, 'capturing the undo log')
  }

  // from the first in-place write until the state names `generation` (or the rollback is
  // done), the files hold neither generation exactly: readers of the files see `applying`
  core.applying = generation
  try {
    await applyRedoInPlace(core, core.redoPath(generation), scan, core.state.files, held)
    await core.step('inplace-synced', generation)
    await core.commitState(appliedState(core.state, scan, undoFile, undoBytes))
    core.applying = null
  } catch (err) {
    if (err instanceof SwitchUncertainError) {
      throw new ReplicaNeedsRecoveryError(`recording generation ${generation} as applied was interrupted: ${errorMessage(err.cause)}`, { cause: err.cause })
    }
    // state.json still says `base`: take the files back there too
    try { await rollBackGeneration(core, generation, base) } catch (e2) {
      throw new ReplicaNeedsRecoveryError(`generation ${generation} half-applied and the rollback failed: ${errorMessage(e2)}`, { cause: err })
    }
    core.applying = null
    throw mapError(err, 'writing the replica')
  }

  try {
    await core.step('applied-recorded', generation)
  } catch (err) {
    throw new ReplicaNeedsRecoveryError(`interrupted after generation ${generation} was recorded`, { cause: err })
  }

  // the generation is applied; a leftover journal is harmless (open() deletes it)
  try { await core.fs.unlink(core.redoPath(generation)) } catch (err) {
    core.log.warn({ err, generation }, 'could not delete an applied redo journal')
  }
  return { generation, consistent: scan.header.consistent, dataBytes: scan.dataBytes }
}
