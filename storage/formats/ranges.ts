/** Byte ranges of a file (common/ranges.ts) as the format parsers use them, and a number list. Pure. */
import { clipRanges, mergeRanges as merge } from '../../common/ranges.ts'
import type { ByteRange } from '../../common/ranges.ts'

export type { ByteRange }
export { rangesFromStarts, totalLength } from '../../common/ranges.ts'

/** The merged form of `ranges` clipped to [0, limit) (see common/ranges.ts). */
export function mergeRanges (ranges: readonly ByteRange[], limit = Number.MAX_SAFE_INTEGER): ByteRange[] {
  return merge(clipRanges(ranges, limit))
}

/** A growable Float64Array of numbers (block start offsets) with amortised doubling. */
export class NumberList {
  private buf: Float64Array
  length = 0
  constructor (initial = 64) { this.buf = new Float64Array(Math.max(1, initial)) }

  push (n: number): void {
    if (this.length === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2)
      next.set(this.buf)
      this.buf = next
    }
    this.buf[this.length++] = n
  }

  values (): Float64Array { return this.buf.subarray(0, this.length) }
}
