/** Byte ranges of a file: sorting, merging, totals. Pure. */

export interface ByteRange {
  offset: number
  length: number
}

/**
 * Sorted, non-overlapping, non-adjacent copy of `ranges` clipped to [0, limit). Empty ranges are
 * dropped; touching ranges are joined.
 */
export function mergeRanges (ranges: readonly ByteRange[], limit = Number.MAX_SAFE_INTEGER): ByteRange[] {
  const clipped: ByteRange[] = []
  for (const r of ranges) {
    const start = Math.max(0, r.offset)
    const end = Math.min(limit, r.offset + r.length)
    if (end > start) clipped.push({ offset: start, length: end - start })
  }
  clipped.sort((a, b) => a.offset - b.offset)
  const out: ByteRange[] = []
  for (const r of clipped) {
    const last = out[out.length - 1]
    if (last !== undefined && r.offset <= last.offset + last.length) {
      last.length = Math.max(last.length, r.offset + r.length - last.offset)
    } else {
      out.push({ offset: r.offset, length: r.length })
    }
  }
  return out
}

/**
 * Ranges of `length` bytes starting at each of `starts` (any order), merged. Used for blocks,
 * whose starts are collected in a typed array so a large BAT does not become millions of objects.
 */
export function rangesFromStarts (starts: Float64Array, length: number, limit: number): ByteRange[] {
  const sorted = starts.slice().sort()
  const out: ByteRange[] = []
  for (let i = 0; i < sorted.length; i++) {
    const start = sorted[i] as number
    const end = Math.min(limit, start + length)
    if (end <= start) continue
    const last = out[out.length - 1]
    if (last !== undefined && start <= last.offset + last.length) {
      last.length = Math.max(last.length, end - last.offset)
    } else {
      out.push({ offset: start, length: end - start })
    }
  }
  return out
}

/** Sum of the lengths. */
export function totalLength (ranges: readonly ByteRange[]): number {
  let n = 0
  for (const r of ranges) n += r.length
  return n
}

/** True when the half-open spans [a, a+al) and [b, b+bl) share a byte. */
export function overlaps (a: number, al: number, b: number, bl: number): boolean {
  return al > 0 && bl > 0 && a < b + bl && b < a + al
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
