/**
 * Durable file replacement across Linux and Windows.
 *
 * Rename: on Windows a rename over a file that an antivirus scanner, a backup agent or the
 * search indexer holds open fails for a moment with EPERM, EBUSY or EACCES; it is retried
 * with a growing pause inside a time budget. On Linux those codes are real errors and the
 * first failure is final.
 *
 * Directory sync: POSIX needs an fsync of the folder to make a rename or create durable.
 * Windows cannot open a folder for fsync (EPERM, EISDIR) and does not need to: NTFS journals
 * its metadata, so the rename is durable once it returns. There those errors are ignored.
 */
import { open, rename } from 'node:fs/promises'
import { renameSync } from 'node:fs'
import type { Clock } from '../clock.ts'
import { systemClock } from '../clock.ts'
import type { OsKind } from './os.ts'
import { RenameBusyError } from './errors.ts'

const TRANSIENT_RENAME = new Set(['EPERM', 'EBUSY', 'EACCES'])
const DIR_SYNC_UNSUPPORTED = new Set(['EPERM', 'EISDIR', 'EACCES', 'EINVAL'])

export interface RenameOptions {
  os: OsKind
  /** Total time to keep retrying a transient failure (Windows only). @default 5000 */
  budgetMs?: number
  /** now/sleep for the retry pauses. @default systemClock */
  clock?: Pick<Clock, 'now' | 'sleep'>
  /** The rename itself. @default fs.promises.rename */
  rename?: (from: string, to: string) => Promise<void>
}

function codeOf (err: unknown): string | undefined {
  const c = (err as { code?: unknown } | null)?.code
  return typeof c === 'string' ? c : undefined
}

/** True when `err` from a rename on `os` may go away by itself. */
export function isTransientRenameError (err: unknown, os: OsKind): boolean {
  return os === 'win32' && TRANSIENT_RENAME.has(codeOf(err) ?? '')
}

/** The pause before attempt `n` (1-based retry count): 10, 20, 40 … capped at 250 ms. */
export function renameBackoffMs (n: number): number {
  return Math.min(250, 10 * 2 ** Math.max(0, n - 1))
}

/**
 * Renames `from` over `to`, retrying transient Windows failures within the budget. The last
 * failure is rethrown wrapped in RenameBusyError when the budget ran out on a transient code,
 * as it is otherwise.
 */
export async function renameDurable (from: string, to: string, o: RenameOptions): Promise<void> {
  const clock = o.clock ?? systemClock
  const doRename = o.rename ?? rename
  const budget = o.budgetMs ?? 5000
  const start = clock.now()
  for (let attempt = 1; ; attempt++) {
    try {
      await doRename(from, to)
      return
    } catch (err) {
      if (!isTransientRenameError(err, o.os)) throw err
      const pause = renameBackoffMs(attempt)
      if (clock.now() - start + pause > budget) throw new RenameBusyError(from, to, attempt, { cause: err })
      await clock.sleep(pause)
    }
  }
}

/** The synchronous form, for the watchdog's small state file (it blocks for the pauses). */
export function renameDurableSync (from: string, to: string, o: { os: OsKind, budgetMs?: number, rename?: (from: string, to: string) => void, sleepSync?: (ms: number) => void }): void {
  const doRename = o.rename ?? renameSync
  const sleepSync = o.sleepSync ?? ((ms: number) => { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms) })
  const budget = o.budgetMs ?? 2000
  let waited = 0
  for (let attempt = 1; ; attempt++) {
    try {
      doRename(from, to)
      return
    } catch (err) {
      if (!isTransientRenameError(err, o.os)) throw err
      const pause = renameBackoffMs(attempt)
      if (waited + pause > budget) throw new RenameBusyError(from, to, attempt, { cause: err })
      sleepSync(pause)
      waited += pause
    }
  }
}

export interface SyncDirOptions {
  os: OsKind
  /** Opens the folder and fsyncs it. @default fs.promises open + sync */
  syncFolder?: (path: string) => Promise<void>
}

async function fsyncFolder (path: string): Promise<void> {
  const fh = await open(path, 'r')
  try { await fh.sync() } finally { await fh.close() }
}

/**
 * Makes the folder's entries durable: fsync on POSIX (errors propagate: a replica must not
 * claim durability it does not have); on Windows the errors that mean "folders cannot be
 * synced here" are ignored, because NTFS journals the metadata itself.
 */
export async function syncDir (path: string, o: SyncDirOptions): Promise<void> {
  const sync = o.syncFolder ?? fsyncFolder
  try {
    await sync(path)
  } catch (err) {
    if (o.os === 'win32' && DIR_SYNC_UNSUPPORTED.has(codeOf(err) ?? '')) return
    throw err
  }
}
