/**
 * The bytes of a disk file at its newest copied point (qemu-fleece.ts, copy mode), per block,
 * kept across points within a byte budget.
 *
 * Why the blocks of older points stay valid: a point's copy holds every block the guest wrote
 * since the previous point, read while no write completed. A block copied at an older point and
 * not in any later point's ranges was not written since, so its bytes are still the file's at
 * the newest point. Each point therefore overwrites the blocks it read and keeps the rest — and a
 * target one generation behind still finds its pending ranges here. Anything that breaks that
 * chain (a point not taken by copy, a failed capture, a new bitmap chain) clears the cache.
 *
 * The budget evicts the oldest blocks first, and blocks not rewritten for `keepPoints` points go
 * too: a target that far behind reads the live file anyway, and memory falls back to what the
 * recent rounds changed once a burst is over (the budget is per VM, for as long as it runs). A
 * read of a block that is not here is a PointRangeMissError (the caller asks covers() first and
 * reads the live file otherwise).
 */
import { alignRanges, type Range } from '../../storage/changes/range.ts'
import { mapVirtualRanges, type LayoutSnapshot } from '../../storage/formats/layout.ts'
import { VmeshError } from '../../common/errors.ts'

/** A read of bytes the copied point does not hold. */
export class PointRangeMissError extends VmeshError {
  constructor (readonly offset: number, readonly length: number) { super('ERR_POINT_RANGE_MISS', `bytes ${offset}+${length} are not in the copied point`) }
}

export class PointCopy {
  /** block index → the block's bytes and the point that copied it (insertion order = age: the oldest first) */
  private readonly blocks = new Map<number, { buf: Buffer, point: number }>()
  private held = 0
  private point = 0

  /**
   * @param blockSize bytes per block (ranges put here are aligned to it, or end at the file's end)
   * @param keepPoints points a block stays after it was last copied @default 8
   */
  constructor (readonly blockSize: number, readonly maxBytes: number, readonly keepPoints = 8) {}

  /** A new point's blocks follow (put): blocks last copied `keepPoints` points ago go. */
  nextPoint (): void {
    this.point++
    for (const [b, v] of this.blocks) {
      if (v.point > this.point - this.keepPoints) break
      this.blocks.delete(b)
      this.held -= v.buf.length
    }
  }

  /** Bytes held. */
  get bytes (): number { return this.held }

  /** Stores `buf`, the file's bytes at `offset` (block-aligned) at the newest point, and evicts past the budget. */
  put (offset: number, buf: Uint8Array): void {
    const bs = this.blockSize
    if (offset % bs !== 0) throw new RangeError(`copied range at ${offset} is not aligned to ${bs}`)
    for (let o = 0; o < buf.length; o += bs) {
      const b = (offset + o) / bs
      const old = this.blocks.get(b)
      if (old !== undefined) { this.held -= old.buf.length; this.blocks.delete(b) }
      // a copy of the slice: the read buffer of a whole range is not kept alive by one block
      const part = Buffer.from(buf.subarray(o, Math.min(buf.length, o + bs)))
      this.blocks.set(b, { buf: part, point: this.point })
      this.held += part.length
    }
    for (const [b, v] of this.blocks) {
      if (this.held <= this.maxBytes) break
      this.blocks.delete(b)
      this.held -= v.buf.length
    }
  }

  /** Every byte of `ranges` is held. */
  covers (ranges: readonly Range[]): boolean {
    const bs = this.blockSize
    for (const r of ranges) {
      if (r.length === 0) continue
      const end = r.offset + r.length
      for (let b = Math.floor(r.offset / bs); b * bs < end; b++) {
        const v = this.blocks.get(b)?.buf
        if (v === undefined || b * bs + v.length < Math.min(end, (b + 1) * bs)) return false
      }
    }
    return true
  }

  /** The held bytes of [offset, offset+length); PointRangeMissError when any is not held. */
  read (offset: number, length: number): Buffer {
    const bs = this.blockSize
    const out = Buffer.allocUnsafe(length)
    for (let at = offset; at < offset + length;) {
      const b = Math.floor(at / bs)
      const v = this.blocks.get(b)?.buf
      const from = at - b * bs
      const n = Math.min(bs - from, offset + length - at)
      if (v === undefined || from + n > v.length) throw new PointRangeMissError(offset, length)
      v.copy(out, at - offset, from, from + n)
      at += n
    }
    return out
  }

  clear (): void {
    this.blocks.clear()
    this.held = 0
  }
}

/**
 * The file ranges a copied point of a fixed file must hold for the guest's virtual `ranges`:
 * mapped through its layout (static: the file keeps its size and a fixed image's BAT does not
 * move) and aligned to the VM's blocks exactly as the told source aligns its answer, so a
 * generation's ranges are the copied ones. Null when the BAT was too large to copy.
 */
export function copyPlan (snap: LayoutSnapshot, blockSize: number): ((virtual: Range[]) => Range[]) | null {
  const { layout, bat } = snap
  if (layout.bat !== null && bat === null) return null
  return (virtual) => alignRanges(mapVirtualRanges(layout, bat, alignRanges(virtual, blockSize, layout.virtualSize)), blockSize, layout.fileSize)
}
