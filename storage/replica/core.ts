/**
 * What every part of the store shares: the file system and its layout, the in-memory copy of the
 * durable state (changed only through commitState, after the new document is on disk), fsync
 * policy, the step hook used for crash injection, and the log.
 *
 * Layout under the store directory:
 *   state.json                 the durable state (atomic replace)
 *   seed-progress.json         durable ranges of an interrupted seed
 *   files/<name>               the replica files
 *   journal/redo-<g>.log       the redo journal of generation g while it is received/applied
 *   undo/undo-<g>-<b>.log      turns the replica at g back into b (kept for recovery points)
 */
import { join } from 'node:path'
import type { Clock } from '../../common/clock.ts'
import type { ReplicaFs, ReplicaFileHandle } from './fs.ts'
import type { PersistedState } from './schema.ts'
import type { RetentionPolicy } from './retention.ts'
import type { ReplicaHooks, ReplicaLog, ReplicaStep } from './types.ts'
import { writeJsonAtomic } from './atomic.ts'

export const STATE_FILE = 'state.json'
export const SEED_PROGRESS_FILE = 'seed-progress.json'

export class Core {
  readonly filesDir: string
  readonly journalDir: string
  readonly undoDir: string
  /**
   * The generation the replica files are being changed to in place (a commit's in-place writes,
   * a finalize's rollback), or null when they hold exactly `state.applied`. Not persisted: a
   * crash mid-change is settled by open() before the store is used again. Left set when the
   * change fails without being settled (the store then needs recovery).
   */
  applying: number | null = null

  constructor (
    readonly fs: ReplicaFs,
    readonly dir: string,
    readonly fsync: boolean,
    readonly clock: Clock,
    readonly log: ReplicaLog,
    readonly hooks: ReplicaHooks,
    public retention: RetentionPolicy,
    public state: PersistedState
  ) {
    this.filesDir = join(dir, 'files')
    this.journalDir = join(dir, 'journal')
    this.undoDir = join(dir, 'undo')
  }

  /**
   * Makes `next` durable, then adopts it. On SwitchUncertainError the durable state may be
   * either document; on any other error it is still the old one.
   */
  async commitState (next: PersistedState): Promise<void> {
    await writeJsonAtomic(this.fs, this.dir, STATE_FILE, next, this.fsync)
    this.state = next
  }

  async step (name: ReplicaStep, generation: number): Promise<void> {
    const fn = this.hooks.step
    if (fn !== undefined) await fn(name, { generation })
  }

  filePath (name: string): string { return join(this.filesDir, name) }
  redoPath (generation: number): string { return join(this.journalDir, redoFileName(generation)) }
  undoPath (file: string): string { return join(this.undoDir, file) }

  async sync (fh: ReplicaFileHandle): Promise<void> { if (this.fsync) await fh.sync() }
  async syncDir (path: string): Promise<void> { if (this.fsync) await this.fs.syncDir(path) }
}

export function redoFileName (generation: number): string { return `redo-${generation}.log` }
export function undoFileName (generation: number, base: number): string { return `undo-${generation}-${base}.log` }

/** Parses `redo-<g>.log`; undefined for anything else. */
export function parseRedoFileName (name: string): number | undefined {
  const m = /^redo-(\d{1,16})\.log$/.exec(name)
  if (m === null) return undefined
  const g = Number(m[1])
  return Number.isSafeInteger(g) ? g : undefined
}

/** Closes every handle, keeping the first error. */
export async function closeAll (handles: Iterable<ReplicaFileHandle>): Promise<void> {
  let first: unknown
  for (const h of handles) {
    try { await h.close() } catch (err) { first ??= err }
  }
  if (first !== undefined) throw first
}
