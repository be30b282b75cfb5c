/**
 * The change-source contract: "which byte ranges of this file changed since the token I last
 * got, and is what you saw one point in time?".
 *
 * Two kinds of source fit behind it:
 *  - sources that *find* changes by reading (the default `HashScanSource`: block hashes kept in
 *    a LevelDB manifest), and
 *  - sources that are *told* changes by something that saw the writes: Hyper-V resilient change
 *    tracking (RCT: `GetVirtualDiskChanges` between two reference points), QEMU persistent dirty
 *    bitmaps (`block-dirty-bitmap-add` + `x-debug-block-dirty-bitmap-sha256`/NBD
 *    `qemu:dirty-bitmap:` metadata context), or a write-intercepting FUSE/NBD layer. Those plug
 *    in as a `ChangeSource` whose token is the platform's reference point (RCT id, bitmap
 *    name + generation); `ReportedRangesSource` in reported.ts is a worked example where ranges
 *    are pushed in by a poller, with a fallback source for "since = null" (a full copy).
 *
 * Tokens are opaque strings so callers can persist them next to their own state. A source that
 * does not recognise a token (another source's, or state lost) must answer with `full: true`
 * rather than guess.
 */
import type { Range } from './range.ts'

export type { Range } from './range.ts'

/** Opaque, persistable position in a file's change history (source-specific format). */
export type ChangeToken = string

/** A point-in-time copy to read changed data from, when the source made one (reflink clone). */
export interface ChangeSnapshot {
  /** Path of the clone; read changed ranges from here for a consistent generation. */
  readonly path: string
  /** Deletes the clone. Idempotent. */
  release: () => Promise<void>
}

export interface ChangeSet {
  /** Changed byte ranges: sorted, merged, block-aligned, clipped to `fileSize`. */
  ranges: Range[]
  /** Pass back as `since` next time. */
  token: ChangeToken
  /**
   * True when the capture is one point in time (quiet pass or snapshot). A fuzzy change set
   * may mix states that never co-existed; apply it but do not make it a recovery point.
   */
  consistent: boolean
  /**
   * True when `since` was null or unusable: `ranges` then cover every non-zero block, and
   * everything outside them is zeros (not "unchanged").
   */
  full: boolean
  /** File size at capture time; growth/shrink is conveyed here, not by ranges. */
  fileSize: number
  blockSize: number
  /** Bytes read from the file (or snapshot) to produce this answer; 0 on the stat fast path. */
  scannedBytes: number
  /** Present only when requested with `keepSnapshot` and the source made one. */
  snapshot?: ChangeSnapshot
}

export interface ChangeOptions {
  signal?: AbortSignal
  /**
   * Keep the point-in-time clone (if one was made) and return it as `snapshot`; the caller must
   * release() it. Otherwise it is deleted before `changes()` returns.
   */
  keepSnapshot?: boolean
}

export interface ChangeSource {
  /**
   * Ranges of `file` changed since `since` (null: everything non-zero). Safe to call again with
   * an older token after a crash: the answer then covers every change after that token.
   */
  changes: (file: string, since: ChangeToken | null, opts?: ChangeOptions) => Promise<ChangeSet>
}

/** Whole-file data ranges: what to scan when nothing better is known. */
export type RangesOf = (path: string, fileSize: number) => Promise<Range[]>

/** Default `RangesOf`: the whole file. The lead swaps in storage/formats' `dataRangesForFile`. */
export const wholeFile: RangesOf = async (_path, fileSize) => fileSize > 0 ? [{ offset: 0, length: fileSize }] : []
