/** Bit operations on fixed-size bitmap segments (bit i of a segment = byte i>>3, bit i&7). */

/** Bytes per persisted segment: 32768 blocks, i.e. 2 GiB of disk at 64 KiB blocks. */
export const SEGMENT_BYTES = 4096
export const SEGMENT_BITS = SEGMENT_BYTES * 8

/** Sets bits [from, to) of `seg`. */
export function setBits (seg: Uint8Array, from: number, to: number): void {
  let i = from
  while (i < to && (i & 7) !== 0) { seg[i >> 3] = (seg[i >> 3] as number) | (1 << (i & 7)); i++ }
  if (to - i >= 8) {
    const bytesEnd = (to >> 3)
    seg.fill(0xff, i >> 3, bytesEnd)
    i = bytesEnd << 3
  }
  while (i < to) { seg[i >> 3] = (seg[i >> 3] as number) | (1 << (i & 7)); i++ }
}

/** a |= b */
export function orInto (a: Uint8Array, b: Uint8Array): void {
  for (let i = 0; i < a.length; i++) a[i] = (a[i] as number) | (b[i] ?? 0)
}

/** a &= ~b */
export function andNotInto (a: Uint8Array, b: Uint8Array): void {
  for (let i = 0; i < a.length; i++) a[i] = (a[i] as number) & ~(b[i] ?? 0)
}

export function isEmpty (seg: Uint8Array): boolean {
  for (let i = 0; i < seg.length; i++) if (seg[i] !== 0) return false
  return true
}

const POP = new Uint8Array(256).map((_, i) => { let n = 0; for (let v = i; v !== 0; v >>= 1) n += v & 1; return n })

export function popcount (seg: Uint8Array): number {
  let n = 0
  for (let i = 0; i < seg.length; i++) n += POP[seg[i] as number] as number
  return n
}

export function testBit (seg: Uint8Array, i: number): boolean {
  return ((seg[i >> 3] as number) & (1 << (i & 7))) !== 0
}

/** Runs of set bits as [start, end) bit indexes, in order. */
export function * runsOf (seg: Uint8Array): Generator<[number, number]> {
  let start = -1
  for (let byte = 0; byte < seg.length; byte++) {
    const v = seg[byte] as number
    if (v === 0 && start < 0) continue
    if (v === 0xff && start >= 0) continue
    for (let bit = 0; bit < 8; bit++) {
      const i = (byte << 3) | bit
      const set = (v & (1 << bit)) !== 0
      if (set && start < 0) start = i
      else if (!set && start >= 0) { yield [start, i]; start = -1 }
    }
  }
  if (start >= 0) yield [start, seg.length * 8]
}
