/**
 * A change source that is *told* which ranges changed instead of reading to find out: the shape
 * for Hyper-V RCT, QEMU dirty bitmaps and write interception.
 *
 * How a real producer plugs in: something with platform access calls `report(file, ranges)`:
 *  - Hyper-V RCT: a poller asks `Msvm_ImageManagementService.GetVirtualDiskChanges` for the
 *    changes since the last RCT id, translates virtual-disk offsets to VHDX file offsets through
 *    the BAT (storage/formats), reports them, and keeps the new RCT id. Reports taken at a VM
 *    reference point are `consistent: true`.
 *  - QEMU/libvirt: a persistent dirty bitmap per disk; at each cycle the poller creates a new
 *    bitmap, reads the old one (NBD `qemu:dirty-bitmap:` context or `x-debug-query-block-dirty-
 *    bitmap`) and reports it, then drops it.
 *  - write interception (FUSE/NBD shim): report the ranges of every write, batched.
 * The consumer asks `changes(file, token)` exactly as with the hash scan. Reports are kept for
 * one extra round, so a consumer that crashed before saving the newest token can ask again with
 * the previous one; any other token (or null, or a restarted process) gets a full answer from
 * the fallback source (e.g. a hash scan), or the whole file when there is none.
 */
import { randomBytes } from 'node:crypto'
import { nodeScanIO } from './file-io.ts'
import type { ScanIO } from './file-io.ts'
import { BlockRuns, DEFAULT_BLOCK_SIZE, mergeRanges, validateBlockSize } from './range.ts'
import type { Range } from './range.ts'
import type { ChangeOptions, ChangeSet, ChangeSource, ChangeToken } from './source.ts'
import { fullAnswer } from './full-answer.ts'

export interface ReportedRangesInit {
  /** Grain ranges are widened to. @default 65536 */
  blockSizeBytes?: number
  /** Run budget per file before coarsening. @default 65536 */
  maxRuns?: number
}

interface Batch { runs: BlockRuns, consistent: boolean }

interface FileLog {
  seq: number
  /** Reports handed out with token `seq - 1` (kept for a retry) and those since. */
  prev: Batch | null
  acc: Batch
}

export class ReportedRangesSource implements ChangeSource {
  readonly blockSize: number
  private readonly epoch = randomBytes(6).toString('hex')
  private readonly logs = new Map<string, FileLog>()
  private readonly io: ScanIO
  private readonly maxRuns: number

  constructor (private readonly components: { io?: ScanIO, fallback?: ChangeSource } = {}, init: ReportedRangesInit = {}) {
    this.blockSize = validateBlockSize(init.blockSizeBytes ?? DEFAULT_BLOCK_SIZE)
    this.io = components.io ?? nodeScanIO
    this.maxRuns = init.maxRuns ?? 65536
  }

  /** Records that `ranges` of `file` changed. `consistent`: captured at one point in time. */
  report (file: string, ranges: Iterable<Range>, opts: { consistent?: boolean } = {}): void {
    const log = this.log(file)
    const runs = new BlockRuns(this.maxRuns)
    for (const r of mergeRanges(ranges)) runs.add(Math.floor(r.offset / this.blockSize), Math.ceil((r.offset + r.length) / this.blockSize))
    log.acc.runs.union(runs)
    log.acc.consistent &&= opts.consistent === true
  }

  async changes (file: string, since: ChangeToken | null, opts: ChangeOptions = {}): Promise<ChangeSet> {
    const log = this.log(file)
    const m = since != null ? /^rr1:([0-9a-f]+):(\d+)$/.exec(since) : null
    const seq = m != null && m[1] === this.epoch ? Number(m[2]) : -1
    if (seq === log.seq || (seq === log.seq - 1 && log.prev != null)) {
      const answer: Batch = { runs: new BlockRuns(this.maxRuns), consistent: log.acc.consistent }
      if (seq === log.seq - 1 && log.prev != null) {
        answer.runs.union(log.prev.runs)
        answer.consistent &&= log.prev.consistent
      }
      answer.runs.union(log.acc.runs)
      // Reset before awaiting: a report made during the stat belongs to the next answer.
      const taken = log.acc
      log.acc = emptyBatch(this.maxRuns)
      let size: number
      try {
        ({ size } = await this.io.stat(file))
      } catch (err) {
        taken.runs.union(log.acc.runs)
        taken.consistent &&= log.acc.consistent
        log.acc = taken
        throw err
      }
      log.prev = answer
      log.seq = seq + 1
      return {
        ranges: answer.runs.toRanges(this.blockSize, size), token: `rr1:${this.epoch}:${log.seq}`,
        consistent: answer.consistent, full: false, fileSize: size, blockSize: this.blockSize, scannedBytes: 0
      }
    }
    // Unknown position: everything reported so far is covered by a full answer.
    log.prev = null
    log.acc = emptyBatch(this.maxRuns)
    log.seq += 1
    const token = `rr1:${this.epoch}:${log.seq}`
    return await fullAnswer({ io: this.io, fallback: this.components.fallback }, file, token, { blockSize: this.blockSize, maxRuns: this.maxRuns }, opts)
  }

  private log (file: string): FileLog {
    let log = this.logs.get(file)
    if (log === undefined) {
      log = { seq: 0, prev: null, acc: emptyBatch(this.maxRuns) }
      this.logs.set(file, log)
    }
    return log
  }
}

function emptyBatch (maxRuns: number): Batch { return { runs: new BlockRuns(maxRuns), consistent: true } }
