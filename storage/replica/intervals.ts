/**
 * Disjoint, sorted half-open byte ranges [start, end). Adjacent and overlapping ranges merge, so
 * a sequential stream of blocks costs one entry; memory grows with the number of separate
 * extents, never with their bytes.
 */
export interface Range { start: number, end: number }

export class IntervalSet {
  private readonly starts: number[] = []
  private readonly ends: number[] = []

  get count (): number { return this.starts.length }

  /** Total bytes covered. */
  get bytes (): number {
    let n = 0
    for (let i = 0; i < this.starts.length; i++) n += (this.ends[i] as number) - (this.starts[i] as number)
    return n
  }

  /** Index of the first range whose end is >= start (a range it may merge with). */
  private firstTouching (start: number): number {
    let lo = 0
    let hi = this.ends.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if ((this.ends[mid] as number) < start) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  add (start: number, end: number): void {
    if (end <= start) return
    // fast path: appending past the last range (sequential streams)
    const n = this.starts.length
    if (n === 0 || start > (this.ends[n - 1] as number)) { this.starts.push(start); this.ends.push(end); return }
    const i = this.firstTouching(start)
    let j = i
    let s = start
    let e = end
    while (j < this.starts.length && (this.starts[j] as number) <= end) {
      s = Math.min(s, this.starts[j] as number)
      e = Math.max(e, this.ends[j] as number)
      j++
    }
    this.starts.splice(i, j - i, s)
    this.ends.splice(i, j - i, e)
  }

  /** True when [start, end) lies entirely inside the set. */
  covers (start: number, end: number): boolean {
    if (end <= start) return true
    const i = this.firstTouching(start + 1)
    return i < this.starts.length && (this.starts[i] as number) <= start && (this.ends[i] as number) >= end
  }

  * ranges (): Generator<Range> {
    for (let i = 0; i < this.starts.length; i++) yield { start: this.starts[i] as number, end: this.ends[i] as number }
  }

  toArray (): Range[] { return [...this.ranges()] }

  /** A new set with every range cut to [0, limit). */
  clip (limit: number): IntervalSet {
    const out = new IntervalSet()
    for (const r of this.ranges()) {
      if (r.start >= limit) break
      out.add(r.start, Math.min(r.end, limit))
    }
    return out
  }

  static from (ranges: Iterable<Range>): IntervalSet {
    const s = new IntervalSet()
    for (const r of ranges) s.add(r.start, r.end)
    return s
  }
}

/**
 * Pieces of `ranges` (sorted, disjoint) not covered by `minus` (an IntervalSet), in order.
 * Each piece keeps a reference to the range it came from and its offset inside it.
 */
export function * subtract<T extends Range> (ranges: Iterable<T>, minus: IntervalSet): Generator<{ start: number, end: number, from: T }> {
  const cut = minus.toArray()
  let k = 0
  for (const r of ranges) {
    let s = r.start
    while (k < cut.length && (cut[k] as Range).end <= s) k++
    let m = k
    while (s < r.end) {
      const c = cut[m]
      if (c === undefined || c.start >= r.end) { yield { start: s, end: r.end, from: r }; break }
      if (c.start > s) yield { start: s, end: c.start, from: r }
      s = Math.max(s, c.end)
      m++
    }
  }
}
