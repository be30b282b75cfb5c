/**
 * Block runs. Change sets speak byte ranges (what a sender reads, common/ranges.ts); scanners
 * and bitmaps speak block indexes. `BlockRuns` keeps its memory bounded: past `maxRuns` runs it
 * coarsens (rounds runs out to a growing granularity and merges them), which over-reports a few
 * unchanged blocks — always safe, a resend — instead of growing with the number of changes.
 */
import { InvalidRangeError } from './errors.ts'
import type { ByteRange } from '../../common/ranges.ts'

/** A byte range of a file. */
export type Range = ByteRange

// the range arithmetic and the block-size rule live in common/ (shared with protocol and dirty maps)
export { DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, blockCount, validateBlockSize } from '../../common/block-size.ts'
export { alignRanges, mergeRanges, totalLength as totalBytes } from '../../common/ranges.ts'

/** Block index runs [start, end) appended in order, bounded in memory by coarsening. */
export class BlockRuns {
  private starts: number[] = []
  private ends: number[] = []
  private granularity = 1
  private readonly maxRuns: number

  /** @param maxRuns runs kept before coarsening (≥ 2) @default 65536 */
  constructor (maxRuns = 65536) {
    this.maxRuns = Math.max(2, maxRuns)
  }

  /** Blocks per coarsening unit; 1 while exact. */
  get grain (): number { return this.granularity }
  get runCount (): number { return this.starts.length }

  /** Adds blocks [start, end). Starts must not decrease between calls (use union() otherwise). */
  add (start: number, end = start + 1): void {
    if (end <= start) return
    const g = this.granularity
    if (g > 1) { start = Math.floor(start / g) * g; end = Math.ceil(end / g) * g }
    const n = this.starts.length
    const lastEnd = n > 0 ? this.ends[n - 1] as number : -1
    if (n > 0 && start < (this.starts[n - 1] as number)) {
      throw new InvalidRangeError('BlockRuns.add needs non-decreasing starts')
    }
    if (n > 0 && start <= lastEnd) {
      if (end > lastEnd) this.ends[n - 1] = end
      return
    }
    this.starts.push(start)
    this.ends.push(end)
    if (this.starts.length > this.maxRuns) this.coarsen()
  }

  /** Merges another run set into this one (linear in both sizes). */
  union (other: BlockRuns): void {
    const a = this.runs()
    const b = other.runs()
    this.starts = []
    this.ends = []
    this.granularity = Math.max(this.granularity, other.granularity)
    let i = 0
    let j = 0
    while (i < a.length || j < b.length) {
      const ra = a[i]
      const rb = b[j]
      const pick = rb === undefined || (ra !== undefined && ra[0] <= rb[0]) ? ra : rb
      if (pick === ra) i++; else j++
      if (pick !== undefined) this.add(pick[0], pick[1])
    }
  }

  /** Number of blocks covered. */
  blocks (): number {
    let n = 0
    for (let i = 0; i < this.starts.length; i++) n += (this.ends[i] as number) - (this.starts[i] as number)
    return n
  }

  runs (): Array<[number, number]> {
    return this.starts.map((s, i) => [s, this.ends[i] as number])
  }

  /** Byte ranges of the runs, clipped to `fileSize`. */
  toRanges (blockSize: number, fileSize: number): Range[] {
    const out: Range[] = []
    for (let i = 0; i < this.starts.length; i++) {
      const start = (this.starts[i] as number) * blockSize
      const end = Math.min((this.ends[i] as number) * blockSize, fileSize)
      if (end > start) out.push({ offset: start, length: end - start })
    }
    return out
  }

  private coarsen (): void {
    const runs = this.runs()
    // Grow the grain until the runs fit in half the budget, so coarsening stays rare.
    for (let guard = 0; guard < 53 && this.starts.length > this.maxRuns / 2; guard++) {
      this.granularity *= 2
      this.starts = []
      this.ends = []
      const g = this.granularity
      for (const [s, e] of runs) {
        const cs = Math.floor(s / g) * g
        const ce = Math.ceil(e / g) * g
        const n = this.starts.length
        if (n > 0 && cs <= (this.ends[n - 1] as number)) this.ends[n - 1] = Math.max(this.ends[n - 1] as number, ce)
        else { this.starts.push(cs); this.ends.push(ce) }
      }
    }
  }
}
