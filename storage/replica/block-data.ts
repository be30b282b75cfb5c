/** Helpers for BlockData: one buffer, or parts that follow each other in the file. */
import type { BlockData } from './types.ts'

export function blockDataLength (data: BlockData): number {
  if (data instanceof Uint8Array) return data.byteLength
  let n = 0
  for (const p of data) n += p.byteLength
  return n
}

/** Bytes [from, to) of block data, as views (no copy). */
export function sliceBlockData (data: BlockData, from: number, to: number): Uint8Array[] {
  const parts = data instanceof Uint8Array ? [data] : data
  const out: Uint8Array[] = []
  let at = 0
  for (const p of parts) {
    const end = at + p.byteLength
    if (end > from && at < to) out.push(p.subarray(Math.max(0, from - at), Math.min(p.byteLength, to - at)))
    at = end
    if (at >= to) break
  }
  return out
}
