/**
 * A change source that is *told* which ranges changed between two reference points of the
 * platform (an RCT id, a dirty bitmap's name), in the file's own offsets or in the virtual
 * disk's offsets, and keeps a replica a byte-identical copy of the *file*.
 *
 * Flow:
 *  tell(file, { since, until, ranges, space }) ─▶ per-file batch (file runs + virtual runs)
 *     a tell whose `since` is not the previous tell's `until` (or is null: a new chain) breaks
 *     the chain: the next answer is full, because changes between the points are unknown.
 *  changes(file, token)
 *     unknown token / broken chain / no chain ─▶ full answer (fallback source, else whole file)
 *     otherwise ─▶ file-space ranges as told, plus for virtual-space ranges (storage/formats
 *     layout.ts, read at answer time):
 *       - the payload bytes, VHD block bitmaps, differencing VHDX sector bitmap bits and BAT
 *         entries of the touched blocks (mapVirtualRanges);
 *       - every BAT entry that differs from the copy kept at the previous answer, with the whole
 *         block it now points at (an allocated or moved block is sent whole: the hypervisor may
 *         have written around the guest's bytes);
 *       - the small fixed structures whose fingerprint (SHA-1 per block) differs from the
 *         previous answer's: VHD footer, footer copy, dynamic header; VHDX file identifier,
 *         headers, region tables, log and metadata region. Fingerprints, not "always": the VHDX
 *         log (1 MiB with qemu) and headers change only when metadata is updated (allocation,
 *         first write after open), and header sequence numbers alone do not tell a log written
 *         under an already-active log GUID (Hyper-V keeps one while the disk is open). Reading
 *         them costs ~2.4 MiB per answer for a qemu VHDX; sending them only when they changed
 *         keeps the wire quiet.
 *       - a VHD that grew: its old footer's bytes (overwritten by the new block or left stale).
 *     The baseline (BAT copy + fingerprints) is taken before a full answer reads, so a change
 *     racing the read is over-reported next time, never lost.
 *
 * File-space tells (a QEMU bitmap on the protocol node, a write-intercepting shim) already
 * include every metadata write, so they are passed through without any parsing. Virtual-space
 * tells on a file without a VHD/VHDX signature are taken as raw (virtual = file offsets); tell a
 * raw disk in file space when its guest may hold a disk image at byte 0.
 *
 * Like ReportedRangesSource, the state is in memory: a restarted process (new epoch) answers in
 * full, and the answer for the previous token is kept for a consumer that crashed before saving
 * the newest one.
 */
import { createHash, randomBytes } from 'node:crypto'
import { DiskIoError, FormatError } from '../formats/errors.ts'
import { batChanges, mapVirtualRanges, readDiskLayout, readLayoutFrom } from '../formats/layout.ts'
import type { ByteReader } from '../formats/reader.ts'
import type { DiskLayout, LayoutSnapshot } from '../formats/layout.ts'
import { nodeScanIO, sameStat } from './file-io.ts'
import type { FileStat, ScanIO } from './file-io.ts'
import { BlockRuns, DEFAULT_BLOCK_SIZE, alignRanges, mergeRanges, totalBytes, validateBlockSize } from './range.ts'
import type { Range } from './range.ts'
import type { ChangeOptions, ChangeSet, ChangeSource, ChangeToken } from './source.ts'
import { fullAnswer } from './full-answer.ts'
import { systemClock, type Clock } from '../../common/clock.ts'
import { errorMessage } from '../../common/errors.ts'

/**
 * Waits between reads of metadata caught mid-update (ms). QEMU sets the VHDX log GUID, writes
 * the log, flushes, writes the BAT and clears the GUID for every block it allocates; a read in
 * that window (a few ms, more under load) finds a pending log. Waiting it out costs at most
 * their sum; giving up costs a read of the whole disk.
 */
const UNSETTLED_RETRY_MS = [25, 50, 100, 200, 400]

/** Which offsets a tell's ranges are in. */
export type RangeSpace = 'file' | 'virtual'

export interface Tell {
  /** The reference point the ranges count from; null starts a new chain (changes before are unknown). */
  since: string | null
  /** The reference point the ranges reach; the next tell's `since`. */
  until: string
  ranges: Iterable<Range>
  space: RangeSpace
  /** Captured at one point in time (the file read is frozen at `until`). @default false */
  consistent?: boolean
}

export interface ToldRangesInit {
  /** Grain ranges are widened to. @default 65536 */
  blockSizeBytes?: number
  /** Run budget per file and space before coarsening. @default 65536 */
  maxRuns?: number
}

/**
 * `view`: the file as it was at the newest told point (a QEMU fleecing export): the layout, BAT
 * and metadata fingerprints are read from it instead of the live file, and the answer's
 * `fileSize` is its size — so ranges, metadata and (read by the caller from the same view)
 * data are one instant. Answers made with a view are consistent when every tell was.
 */
export interface ToldChangeOptions extends ChangeOptions { view?: ByteReader }

/** Why the last answer for a file was full (for status and logs). */
export type FullReason = 'no-token' | 'unknown-token' | 'no-chain' | 'chain-broken' | 'unmappable' | 'layout-changed'

interface Batch { file: BlockRuns, virtual: BlockRuns, consistent: boolean }

/** What the replica was last given of the metadata, to diff the next answer against. */
interface Baseline {
  stat: FileStat
  layout: DiskLayout
  bat: Uint8Array | null
  /** Block index → SHA-1 of that block of a metadata structure. */
  fingerprints: Map<number, string>
}

interface FileLog {
  seq: number
  /** The last tell's `until`; null before the first tell. */
  chain: string | null
  broken: boolean
  /** Any virtual-space tell since the chain began: answers need the layout. */
  virtual: boolean
  prev: Batch | null
  prevBase: Baseline | null
  acc: Batch
  base: Baseline | null
  lastFull: FullReason | null
  /** Why the metadata could not be mapped at the last full answer or since (logs). */
  unmappable: string | null
}

const TOKEN = /^told1:([0-9a-f]+):(\d+)$/

export class ToldRangesSource implements ChangeSource {
  readonly blockSize: number
  private readonly epoch = randomBytes(6).toString('hex')
  private readonly logs = new Map<string, FileLog>()
  private readonly io: ScanIO
  private readonly maxRuns: number

  constructor (private readonly components: { io?: ScanIO, fallback?: ChangeSource, /** @default systemClock */ clock?: Pick<Clock, 'sleep'> } = {}, init: ToldRangesInit = {}) {
    this.blockSize = validateBlockSize(init.blockSizeBytes ?? DEFAULT_BLOCK_SIZE)
    this.io = components.io ?? nodeScanIO
    this.maxRuns = init.maxRuns ?? 65536
  }

  /** Records that `ranges` of `file` changed between the reference points `since` and `until`. */
  tell (file: string, t: Tell): void {
    const log = this.log(file)
    if (t.since === null || t.since !== log.chain) {
      log.broken = true
      log.virtual = false
    }
    log.chain = t.until
    if (t.space === 'virtual') log.virtual = true
    const runs = t.space === 'virtual' ? log.acc.virtual : log.acc.file
    const add = new BlockRuns(this.maxRuns)
    for (const r of mergeRanges(t.ranges)) add.add(Math.floor(r.offset / this.blockSize), Math.ceil((r.offset + r.length) / this.blockSize))
    runs.union(add)
    log.acc.consistent &&= t.consistent === true
  }

  /** The newest reference point told for `file` (null before the first tell). */
  referencePoint (file: string): string | null { return this.logs.get(file)?.chain ?? null }

  /** Why the last answer for `file` was full; null when it was incremental. */
  lastFullReason (file: string): FullReason | null { return this.logs.get(file)?.lastFull ?? null }

  /** The format error that left `file` without a mappable baseline, if one did (logs). */
  unmappableDetail (file: string): string | null { return this.logs.get(file)?.unmappable ?? null }

  async changes (file: string, since: ChangeToken | null, opts: ToldChangeOptions = {}): Promise<ChangeSet> {
    const log = this.log(file)
    const m = since != null ? TOKEN.exec(since) : null
    const seq = m != null && m[1] === this.epoch ? Number(m[2]) : -1
    const retry = seq === log.seq - 1 && log.prev != null
    if (since == null) return await this.full(file, log, 'no-token', opts)
    if (seq !== log.seq && !retry) return await this.full(file, log, 'unknown-token', opts)
    if (log.chain === null) return await this.full(file, log, 'no-chain', opts)
    if (log.broken) return await this.full(file, log, 'chain-broken', opts)

    // Take the reports now: tells arriving while this answer is prepared belong to the next one.
    const taken = log.acc
    log.acc = emptyBatch(this.maxRuns)
    try {
      return await this.incremental(file, log, seq, retry, taken, opts)
    } catch (err) {
      mergeInto(log.acc, taken)
      throw err
    }
  }

  private async incremental (file: string, log: FileLog, seq: number, retry: boolean, taken: Batch, opts: ToldChangeOptions): Promise<ChangeSet> {
    const answer: Batch = { file: new BlockRuns(this.maxRuns), virtual: new BlockRuns(this.maxRuns), consistent: taken.consistent }
    if (retry && log.prev != null) mergeInto(answer, log.prev)
    mergeInto(answer, taken)
    const baseline = retry ? log.prevBase : log.base

    const view = opts.view
    const st = view !== undefined ? viewStat(view) : await this.io.stat(file)
    const parts: Range[] = answer.file.toRanges(this.blockSize, st.size)
    let scanned = 0
    let newBase = baseline
    if (log.virtual) {
      if (baseline === null) return await this.full(file, log, 'unmappable', opts)
      // Nothing told and nothing moved: the metadata cannot have changed either.
      // (A view: every metadata write of the format driver comes with a guest write, so with
      // nothing told between the points nothing else moved either.)
      const moved = view !== undefined ? st.size !== baseline.stat.size : !sameStat(st, baseline.stat)
      if (answer.virtual.runCount > 0 || moved) {
        const got = await this.settledSnapshot(file, st, opts.signal, view)
        // (waited out already: the full answer's baseline is read once)
        if ('why' in got) { log.unmappable = got.why; return await this.full(file, log, 'unmappable', opts, false) }
        const snap = got.snap
        if (!sameGeometry(baseline.layout, snap.layout)) return await this.full(file, log, 'layout-changed', opts)
        scanned += (snap.bat?.length ?? 0) + fingerprintBytes(snap.layout, this.blockSize)
        parts.push(...mapVirtualRanges(snap.layout, snap.bat, answer.virtual.toRanges(this.blockSize, snap.layout.virtualSize)))
        if (baseline.bat !== null && snap.bat !== null) parts.push(...batChanges(snap.layout, baseline.bat, snap.bat))
        for (const [block, hash] of snap.fingerprints) {
          if (baseline.fingerprints.get(block) !== hash) parts.push({ offset: block * this.blockSize, length: this.blockSize })
        }
        if (snap.layout.format === 'vhd' && snap.layout.fileSize > baseline.layout.fileSize) {
          parts.push({ offset: Math.max(0, baseline.layout.fileSize - 512), length: 512 })
        }
        newBase = snap
      }
    }
    log.prev = answer
    log.prevBase = baseline
    log.base = newBase
    log.seq = seq + 1
    log.lastFull = null
    return {
      ranges: alignRanges(parts, this.blockSize, st.size),
      token: `told1:${this.epoch}:${log.seq}`,
      consistent: answer.consistent,
      full: false,
      fileSize: st.size,
      blockSize: this.blockSize,
      scannedBytes: scanned
    }
  }

  /** Everything non-zero (fallback) or the whole file, with a fresh baseline taken first. */
  private async full (file: string, log: FileLog, reason: FullReason, opts: ToldChangeOptions, waitForMetadata = true): Promise<ChangeSet> {
    log.prev = null
    log.prevBase = null
    log.acc = emptyBatch(this.maxRuns)
    log.seq += 1
    log.broken = false
    log.lastFull = reason
    const token = `told1:${this.epoch}:${log.seq}`
    log.base = null
    if (log.virtual) {
      const got = await this.settledSnapshot(file, opts.view !== undefined ? viewStat(opts.view) : await this.io.stat(file), opts.signal, opts.view, waitForMetadata)
      if ('snap' in got) { log.base = got.snap; log.unmappable = null } else log.unmappable = got.why
    }
    if (opts.view !== undefined) {
      // the whole file as it was at the point (one instant: consistent)
      const size = opts.view.size
      return { ranges: size > 0 ? alignRanges([{ offset: 0, length: size }], this.blockSize, size) : [], token, consistent: true, full: true, fileSize: size, blockSize: this.blockSize, scannedBytes: 0 }
    }
    return await fullAnswer({ io: this.io, fallback: this.components.fallback }, file, token, { blockSize: this.blockSize, maxRuns: this.maxRuns }, opts)
  }

  /**
   * A mappable snapshot (no metadata update in flight), read again after a short wait while the
   * format driver is caught mid-update (a pending log, a BAT entry past the end of the file, a
   * torn header): without the wait, such a moment costs a full read of the disk now and then.
   * A view is one instant: read once.
   */
  private async settledSnapshot (file: string, st: FileStat, signal: AbortSignal | undefined, view: ByteReader | undefined, wait = true): Promise<{ snap: Baseline } | { why: string }> {
    const clock = this.components.clock ?? systemClock
    for (let attempt = 0; ; attempt++) {
      let why: string
      try {
        const snap = await this.snapshot(file, st, signal, view)
        if (mappable(snap)) return { snap }
        why = snap.layout.logPending ? 'a metadata log is pending (an update in progress)' : 'a payload block or the BAT lies outside the file'
      } catch (err) {
        if (!isFormatError(err)) throw err
        why = errorMessage(err)
      }
      const ms = UNSETTLED_RETRY_MS[attempt]
      if (!wait || view !== undefined || ms === undefined) return { why }
      await clock.sleep(ms, signal)
      st = await this.io.stat(file)
    }
  }

  /** Layout, BAT copy and metadata fingerprints of `file` now. */
  private async snapshot (file: string, st: FileStat, signal?: AbortSignal, view?: ByteReader): Promise<Baseline> {
    const { layout, bat }: LayoutSnapshot = view !== undefined ? await readLayoutFrom(view, { signal }) : await readDiskLayout(file, { signal })
    const fingerprints = new Map<number, string>()
    const bs = this.blockSize
    const regions = alignRanges(layout.metadata, bs, layout.fileSize)
    if (regions.length > 0 && view !== undefined) {
      for (const r of regions) {
        for (let off = r.offset; off < r.offset + r.length; off += bs) {
          const len = Math.min(bs, r.offset + r.length - off)
          fingerprints.set(off / bs, createHash('sha1').update(await view.read(off, len)).digest('base64'))
        }
      }
    } else if (regions.length > 0) {
      const fh = await this.io.open(file)
      try {
        const buf = new Uint8Array(bs)
        for (const r of regions) {
          for (let off = r.offset; off < r.offset + r.length; off += bs) {
            const len = Math.min(bs, r.offset + r.length - off)
            let done = 0
            while (done < len) {
              const n = await fh.read(buf, done, len - done, off + done)
              if (n <= 0) break
              done += n
            }
            fingerprints.set(off / bs, createHash('sha1').update(buf.subarray(0, done)).digest('base64'))
          }
        }
      } finally {
        await fh.close()
      }
    }
    return { stat: st, layout, bat, fingerprints }
  }

  private log (file: string): FileLog {
    let log = this.logs.get(file)
    if (log === undefined) {
      log = { seq: 0, chain: null, broken: false, virtual: false, prev: null, prevBase: null, acc: emptyBatch(this.maxRuns), base: null, lastFull: null, unmappable: null }
      this.logs.set(file, log)
    }
    return log
  }
}

/** A view has no stat: its size stands for it (see incremental). */
function viewStat (view: ByteReader): FileStat {
  return { size: view.size, mtimeNs: -1n, ctimeNs: -1n, ino: -1n, dev: -1n }
}

function mergeInto (into: Batch, from: Batch): void {
  into.file.union(from.file)
  into.virtual.union(from.virtual)
  into.consistent &&= from.consistent
}

function emptyBatch (maxRuns: number): Batch {
  return { file: new BlockRuns(maxRuns), virtual: new BlockRuns(maxRuns), consistent: true }
}

/** No pending VHDX log, and the BAT (if any) small enough to have been copied. */
function mappable (snap: Baseline): boolean {
  return !snap.layout.logPending && (snap.layout.bat === null || snap.bat !== null)
}

/** Same format and BAT placement: a BAT diff between the two means something. */
function sameGeometry (a: DiskLayout, b: DiskLayout): boolean {
  if (a.format === 'raw' && b.format === 'raw') return true
  return a.format === b.format && a.blockSize === b.blockSize && a.virtualSize === b.virtualSize &&
    a.bat?.offset === b.bat?.offset && a.bat?.length === b.bat?.length
}

function fingerprintBytes (layout: DiskLayout, bs: number): number {
  return totalBytes(alignRanges(layout.metadata, bs, layout.fileSize))
}

/** A damaged image (not I/O trouble): it cannot be mapped, so the answer is full. */
function isFormatError (err: unknown): boolean {
  return err instanceof FormatError && !(err instanceof DiskIoError)
}
