/**
 * Streaming scan of the VHDX BAT. Entries are 64-bit little-endian: state in bits 0-2, file
 * offset in MiB in bits 20-63. Every (chunkRatio+1)-th entry is the sector bitmap entry of the
 * chunk before it. The BAT is read 1 MiB at a time; only the start offsets of present blocks are
 * kept (in typed arrays, so a 1 TiB disk costs megabytes, not objects), and only when the caller
 * wants scan ranges.
 */
import { VhdxBadBatEntryError, VhdxOffsetOutOfRangeError, VhdxRegionOverlapError } from './errors.ts'
import { NumberList } from './ranges.ts'
import { readChecked } from './reader.ts'
import type { ByteReader } from './reader.ts'
import type { VhdxBlockStates } from './types.ts'

const MiB = 1024 * 1024
const ENTRIES_PER_READ = 128 * 1024 // 1 MiB of BAT

export const BAT_STATE = {
  notPresent: 0,
  undefined: 1,
  zero: 2,
  unmapped: 3,
  unmappedV095: 5,
  fullyPresent: 6,
  partiallyPresent: 7
} as const
export const SB_STATE = { notPresent: 0, present: 6 } as const

/** A structure that no block may overlap (header section, log, regions). Sorted, disjoint. */
export interface Extent { name: string, offset: number, length: number }

export interface BatScanInput {
  batOffset: number
  entries: number
  chunkRatio: number
  blockSize: number
  virtualSize: number
  dataBlocks: number
  hasParent: boolean
  fileSize: number
  /** Sorted by offset, non-overlapping. */
  structures: readonly Extent[]
  /** Keep the start offsets of present blocks (for scan ranges). */
  collect: boolean
}

export interface BatScanResult {
  states: VhdxBlockStates
  allocatedBlocks: number
  sectorBitmapBlocks: number
  payloadStarts: Float64Array | null
  bitmapStarts: Float64Array | null
}

/** Decodes the state of one BAT entry from its low 32 bits. */
export function batState (lo: number): number { return lo & 7 }

/** File offset in bytes of one BAT entry (bits 20-63 are MiB units). */
export function batOffsetBytes (lo: number, hi: number): number {
  return ((lo >>> 20) + hi * 4096) * MiB
}

export async function scanBat (reader: ByteReader, input: BatScanInput, signal?: AbortSignal): Promise<BatScanResult> {
  const { entries, chunkRatio, blockSize, virtualSize, dataBlocks, hasParent, fileSize, structures, collect } = input
  const states: VhdxBlockStates = { notPresent: 0, undefined: 0, zero: 0, unmapped: 0, fullyPresent: 0, partiallyPresent: 0 }
  const payload = collect ? new NumberList() : null
  const bitmaps = collect ? new NumberList() : null
  let allocatedBlocks = 0
  let sectorBitmapBlocks = 0

  const checkPlacement = (what: string, offset: number, length: number): void => {
    if (offset < MiB || offset + length > fileSize) throw new VhdxOffsetOutOfRangeError(what, offset, length, fileSize)
    const hit = findOverlap(structures, offset, length)
    if (hit !== null) throw new VhdxRegionOverlapError(what, hit.name)
  }

  for (let first = 0; first < entries; first += ENTRIES_PER_READ) {
    const count = Math.min(ENTRIES_PER_READ, entries - first)
    const bytes = await readChecked(reader, input.batOffset + first * 8, count * 8, signal)
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    for (let j = 0; j < count; j++) {
      const i = first + j
      const lo = v.getUint32(j * 8, true)
      const hi = v.getUint32(j * 8 + 4, true)
      const state = lo & 7
      if (i % (chunkRatio + 1) === chunkRatio) {
        if (state === SB_STATE.notPresent) continue
        if (state !== SB_STATE.present) throw new VhdxBadBatEntryError(i, state, 'is reserved for sector bitmap entries')
        if (!hasParent) throw new VhdxBadBatEntryError(i, state, '(sector bitmap present) is not valid without a parent')
        const off = batOffsetBytes(lo, hi)
        checkPlacement(`sector bitmap block ${Math.floor(i / (chunkRatio + 1))}`, off, MiB)
        sectorBitmapBlocks++
        bitmaps?.push(off)
        continue
      }
      const block = i - Math.floor(i / (chunkRatio + 1))
      // Differencing BATs are padded to whole chunks; entries past the last block mean nothing.
      if (block >= dataBlocks) continue
      switch (state) {
        case BAT_STATE.notPresent: states.notPresent++; break
        case BAT_STATE.undefined: states.undefined++; break
        case BAT_STATE.zero: states.zero++; break
        case BAT_STATE.unmapped:
        case BAT_STATE.unmappedV095: states.unmapped++; break
        case BAT_STATE.fullyPresent:
        case BAT_STATE.partiallyPresent: {
          if (state === BAT_STATE.partiallyPresent) {
            if (!hasParent) throw new VhdxBadBatEntryError(i, state, '(partially present) is not valid without a parent')
            states.partiallyPresent++
          } else {
            states.fullyPresent++
          }
          const off = batOffsetBytes(lo, hi)
          // Like qemu, accept a last block cut short at the end of the virtual disk (older qemu
          // wrote such files, and fixed VHDX from qemu 7 still do).
          checkPlacement(`payload block ${block}`, off, Math.min(blockSize, virtualSize - block * blockSize))
          allocatedBlocks++
          payload?.push(off)
          break
        }
        default: throw new VhdxBadBatEntryError(i, state, 'is reserved')
      }
    }
  }
  return {
    states,
    allocatedBlocks,
    sectorBitmapBlocks,
    payloadStarts: payload?.values() ?? null,
    bitmapStarts: bitmaps?.values() ?? null
  }
}

/** The extent of sorted, disjoint `extents` that overlaps [offset, offset+length), if any. */
export function findOverlap (extents: readonly Extent[], offset: number, length: number): Extent | null {
  // Binary search for the last extent starting before the span's end.
  let lo = 0
  let hi = extents.length - 1
  let idx = -1
  const end = offset + length
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1
    if ((extents[mid] as Extent).offset < end) { idx = mid; lo = mid + 1 } else hi = mid - 1
  }
  if (idx < 0) return null
  const e = extents[idx] as Extent
  return e.offset + e.length > offset && e.length > 0 && length > 0 ? e : null
}
