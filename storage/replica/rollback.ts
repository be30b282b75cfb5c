/**
 * Going back in time with the undo chain.
 *
 * restore: the replica files are cloned (reflink where the file system can, else copied) while
 * the store lock pauses apply, then the undo logs from the applied generation down to the point
 * are applied, newest first, onto the copies — outside the lock, so replication continues; the
 * logs used are pinned so retention leaves them alone meanwhile.
 *
 * finalize: the same walk, in place, one undo log at a time; after each, state.json records the
 * generation reached, so a crash resumes the walk (re-applying an undo log is idempotent).
 */
import { join } from 'node:path'
import type { Core } from './core.ts'
import type { FileEntry, UndoEntry } from './schema.ts'
import { applyUndo } from './undo.ts'
import { AbortedError } from '../../common/errors.ts'
import { ReplicaJournalCorruptError } from './errors.ts'

/** The undo entries leading from the applied generation down to `target`, newest first. */
export function chainDownTo (core: Core, target: number): UndoEntry[] {
  const s = core.state
  const out: UndoEntry[] = []
  let at = s.applied
  for (let i = s.undo.length - 1; i >= 0 && at > target; i--) {
    const e = s.undo[i] as UndoEntry
    if (e.generation !== at) break
    out.push(e)
    at = e.base
  }
  if (at !== target) throw new ReplicaJournalCorruptError(`the undo chain does not lead from ${s.applied} to ${target}`)
  return out
}

function applyFileTable (files: Record<string, FileEntry>, table: Awaited<ReturnType<typeof applyUndo>>): Record<string, FileEntry> {
  const out = { ...files }
  for (const f of table) {
    if (f.oldSize === null) delete out[f.path]
    else out[f.path] = { name: f.name, kind: f.kind, size: f.oldSize }
  }
  return out
}

/**
 * A restore's progress, told after each file cloned and each undo log applied (a file is copied
 * by one call, so a copy without reflinks moves in steps of whole files): bytes of the replica
 * files, then of the undo logs.
 */
export interface RestoreProgress { phase: 'copy' | 'rollback', doneBytes: number, totalBytes: number }

/** Clones every replica file into `toDir` (which must exist and be empty). */
export async function copyReplica (core: Core, toDir: string, onProgress?: (p: RestoreProgress) => void, chain: UndoEntry[] = []): Promise<Record<string, FileEntry>> {
  const files = { ...core.state.files }
  // the total covers the rollback that follows, so the fraction never goes back
  let total = onProgress === undefined ? 0 : (await undoSizes(core, chain)).reduce((a, b) => a + b, 0)
  for (const f of Object.values(files)) total += f.size
  let done = 0
  onProgress?.({ phase: 'copy', doneBytes: 0, totalBytes: total })
  for (const f of Object.values(files)) {
    await core.fs.copyFile(core.filePath(f.name), join(toDir, f.name))
    done += f.size
    onProgress?.({ phase: 'copy', doneBytes: done, totalBytes: total })
  }
  return files
}

async function undoSizes (core: Core, chain: UndoEntry[]): Promise<number[]> {
  const out: number[] = []
  for (const e of chain) out.push((await core.fs.stat(core.undoPath(e.file)))?.size ?? 0)
  return out
}

/** Applies `chain` (newest first) onto the copies in `toDir`; returns the file map at the end. */
export async function rollBackCopy (core: Core, toDir: string, chain: UndoEntry[], files: Record<string, FileEntry>, signal?: AbortSignal, onProgress?: (p: RestoreProgress) => void): Promise<Record<string, FileEntry>> {
  let out = files
  let copied = 0
  for (const f of Object.values(files)) copied += f.size
  const sizes = onProgress === undefined ? [] : await undoSizes(core, chain)
  const total = copied + sizes.reduce((a, b) => a + b, 0)
  let done = copied
  for (const [i, e] of chain.entries()) {
    onProgress?.({ phase: 'rollback', doneBytes: done, totalBytes: total })
    if (signal?.aborted === true) throw new AbortedError('restore aborted', { cause: signal.reason })
    out = applyFileTable(out, await applyUndo(core, core.undoPath(e.file), toDir))
    done += sizes[i] ?? 0
  }
  onProgress?.({ phase: 'rollback', doneBytes: done, totalBytes: total })
  return out
}

/** Rolls the replica back in place to state.finalizing.target, then marks it finalized. */
export async function runFinalize (core: Core): Promise<number> {
  const target = core.state.finalizing?.target
  if (target === undefined) return 0
  let rolled = 0
  // bounded: every iteration removes one undo entry or throws
  while (core.state.applied > target) {
    const s = core.state
    const e = s.undo[s.undo.length - 1]
    if (e === undefined || e.generation !== s.applied) throw new ReplicaJournalCorruptError(`no undo log leads back from generation ${s.applied}`)
    // a failure leaves `applying` set: the store needs recovery (open() resumes the finalize)
    core.applying = e.base
    const table = await applyUndo(core, core.undoPath(e.file), core.filesDir)
    await core.step('finalize-undo-applied', e.generation)
    const point = s.points.find(p => p.generation === e.base)
    await core.commitState({
      ...s,
      applied: e.base,
      appliedCreatedAtMs: point?.createdAtMs ?? 0,
      appliedIsConsistent: point !== undefined,
      files: applyFileTable(s.files, table),
      undo: s.undo.slice(0, -1),
      points: s.points.filter(p => p.generation <= e.base)
    })
    core.applying = null
    await core.fs.unlink(core.undoPath(e.file))
    rolled++
  }
  const s = core.state
  // the VM will now write to these files: older undo logs no longer describe them
  await core.commitState({ ...s, finalizing: null, finalized: true, points: [], undo: [] })
  for (const e of s.undo) await core.fs.unlink(core.undoPath(e.file))
  await core.syncDir(core.undoDir)
  return rolled
}
