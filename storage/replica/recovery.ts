/**
 * Crash recovery at open. The durable state names the applied generation A; the journal
 * directory says what was in flight. For a redo journal of generation n > A based on A:
 *   - committed (every record verifies up to a commit record that counts them): complete it —
 *     rebuild the undo log if it was not sealed (in-place writes start only after the seal, so
 *     the replica still holds exactly A) and replay the in-place writes. We finish rather than
 *     discard because the commit record means the whole generation is already here; finishing
 *     is cheaper than receiving it again, and both are equally safe;
 *   - not committed (torn tail, bad checksum, missing commit): if a sealed undo log exists, the
 *     journal went bad after its commit and in-place writes may have begun, so roll back with
 *     the undo log; otherwise just delete it. Either way the replica is A.
 * Journals of generations ≤ A are leftovers of applied generations and are deleted, as are undo
 * logs and replica files the state does not reference, and temporary files. A finalize that was
 * in progress is resumed.
 */
import { join } from 'node:path'
import type { Core } from './core.ts'
import type { RecoveryAction } from './types.ts'
import { parseRedoFileName, undoFileName, SEED_PROGRESS_FILE, STATE_FILE } from './core.ts'
import { scanRedo } from './redo.ts'
import { undoIsSealed } from './undo.ts'
import { rollForward, rollBackGeneration, discardGeneration } from './apply.ts'
import { runFinalize } from './rollback.ts'
import { ReplicaError, ReplicaBaseMismatchError, ReplicaNeedsRecoveryError } from './errors.ts'
import { VmeshError } from '../../common/errors.ts'

function describe (err: unknown): RecoveryAction['error'] {
  if (err instanceof VmeshError) return err.toJSON()
  const e = err as { name?: unknown, code?: unknown, message?: unknown } | null
  return { name: String(e?.name ?? 'Error'), code: String(e?.code ?? 'ERR_UNKNOWN'), message: String(e?.message ?? err) }
}

async function recoverJournals (core: Core, actions: RecoveryAction[]): Promise<void> {
  const candidates: number[] = []
  for (const name of await core.fs.readdir(core.journalDir)) {
    const g = parseRedoFileName(name)
    const s = core.state
    if (g === undefined || g <= s.applied || s.finalized || s.finalizing !== null || s.seeding !== null) {
      await core.fs.unlink(join(core.journalDir, name))
      actions.push({ action: 'removed-orphan', path: join(core.journalDir, name) })
    } else {
      candidates.push(g)
    }
  }
  candidates.sort((a, b) => a - b)
  for (const g of candidates) {
    const base = core.state.applied
    if (g <= base) { await core.fs.unlink(core.redoPath(g)); continue }
    let committed = false
    let why: unknown
    try {
      const scan = await scanRedo(core, core.redoPath(g))
      if (scan.header.generation !== g || scan.header.baseGeneration !== base) {
        why = new ReplicaBaseMismatchError(`journal ${g} is based on ${scan.header.baseGeneration}, replica is at ${base}`)
      } else if (scan.committed) {
        committed = true
      } else if (scan.end?.kind === 'torn') {
        why = scan.end.error
      }
    } catch (err) {
      if (!(err instanceof ReplicaError)) throw err
      why = err
    }
    if (committed) {
      try {
        await rollForward(core, g)
        actions.push({ action: 'rolled-forward', generation: g })
        core.log.info({ generation: g }, 'recovery completed a committed generation')
      } catch (err) {
        // rollForward discarded or rolled back what it could not finish; only a failed rollback is fatal
        if (err instanceof ReplicaNeedsRecoveryError || !(err instanceof ReplicaError)) throw err
        actions.push({ action: 'discarded', generation: g, error: describe(err) })
        core.log.warn({ err, generation: g }, 'recovery discarded a committed generation it could not complete')
      }
      continue
    }
    const action: RecoveryAction['action'] = await undoIsSealed(core, core.undoPath(undoFileName(g, base))) ? 'rolled-back' : 'discarded'
    if (action === 'rolled-back') await rollBackGeneration(core, g, base)
    else await discardGeneration(core, g, base)
    actions.push({ action, generation: g, ...(why !== undefined ? { error: describe(why) } : {}) })
    if (why !== undefined) core.log.warn({ err: why, generation: g }, `recovery ${action} an uncommitted or damaged generation`)
  }
}

async function removeOrphans (core: Core, actions: RecoveryAction[]): Promise<void> {
  const s = core.state
  const undoFiles = new Set(s.undo.map(e => e.file))
  for (const name of await core.fs.readdir(core.undoDir)) {
    if (undoFiles.has(name)) continue
    await core.fs.unlink(join(core.undoDir, name))
    actions.push({ action: 'removed-orphan', path: join(core.undoDir, name) })
  }
  const names = new Set<string>()
  for (const f of Object.values(s.files)) names.add(f.name)
  for (const f of Object.values(s.seeding?.files ?? {})) names.add(f.name)
  for (const name of await core.fs.readdir(core.filesDir)) {
    if (names.has(name)) continue
    await core.fs.unlink(join(core.filesDir, name))
    actions.push({ action: 'removed-orphan', path: join(core.filesDir, name) })
  }
  for (const name of [`${STATE_FILE}.tmp`, `${SEED_PROGRESS_FILE}.tmp`]) await core.fs.unlink(join(core.dir, name))
  if (s.seeding === null) await core.fs.unlink(join(core.dir, SEED_PROGRESS_FILE))
  await core.syncDir(core.undoDir)
  await core.syncDir(core.filesDir)
  await core.syncDir(core.dir)
}

/** Brings the store to a clean state after whatever happened before; returns what it did. */
export async function recover (core: Core): Promise<RecoveryAction[]> {
  const actions: RecoveryAction[] = []
  await recoverJournals(core, actions)
  if (core.state.finalizing !== null) {
    // the walk needs only referenced undo logs; orphans go afterwards
    await runFinalize(core)
    actions.push({ action: 'finalize-resumed', generation: core.state.applied })
  }
  await removeOrphans(core, actions)
  await core.syncDir(core.journalDir)
  return actions
}
