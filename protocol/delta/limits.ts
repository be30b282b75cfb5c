/**
 * Hard limits of the delta codec. Decoders check them before allocating anything sized by the
 * peer; encoders check them so we never emit a frame a peer would refuse.
 */
import { MAX_BLOCK_SIZE } from '../../common/block-size.ts'
import { DeltaLimitExceededError } from './errors.ts'

const MiB = 1024 * 1024

export interface DeltaLimits {
  /** Largest frame body (excluding the 5-byte header). @default 9 MiB (8 MiB payload + entry headers) */
  maxFrameBodyBytes: number
  /** Largest sum of raw (decoded) block lengths in one blocks frame. @default 8 MiB */
  maxFrameRawBytes: number
  /** Largest raw length of one block; also the largest blockSize a file may declare. @default 4 MiB */
  maxBlockLength: number
  /** Most files in one generation. @default 1024 */
  maxFilesPerGeneration: number
  /** Most entries in one blocks frame. @default 16384 */
  maxEntriesPerFrame: number
  /** Longest source path, in UTF-8 bytes. @default 4096 */
  maxPathBytes: number
  /** Longest VM name, in UTF-8 bytes. @default 255 */
  maxVmNameBytes: number
}

/** The largest block any peer may send (the largest block size); block buffers are sized by this at most. */
export const MAX_BLOCK_LENGTH = MAX_BLOCK_SIZE

export const DEFAULT_DELTA_LIMITS: Readonly<DeltaLimits> = Object.freeze({
  maxFrameBodyBytes: 9 * MiB,
  maxFrameRawBytes: 8 * MiB,
  maxBlockLength: MAX_BLOCK_LENGTH,
  maxFilesPerGeneration: 1024,
  maxEntriesPerFrame: 16384,
  maxPathBytes: 4096,
  maxVmNameBytes: 255
})

/** Wire ceilings the limits can never exceed (field widths). */
const CEILINGS: Readonly<DeltaLimits> = Object.freeze({
  maxFrameBodyBytes: 0xffff_ffff,
  maxFrameRawBytes: Number.MAX_SAFE_INTEGER,
  maxBlockLength: MAX_BLOCK_LENGTH,
  maxFilesPerGeneration: 0xffff_ffff,
  maxEntriesPerFrame: 0xffff_ffff,
  maxPathBytes: 0xffff,
  maxVmNameBytes: 0xffff
})

/** Defaults overridden by `partial`; each value must be a positive integer within its wire ceiling. */
export function resolveLimits (partial?: Partial<DeltaLimits>): DeltaLimits {
  if (partial == null) return DEFAULT_DELTA_LIMITS
  const out: DeltaLimits = { ...DEFAULT_DELTA_LIMITS }
  for (const key of Object.keys(DEFAULT_DELTA_LIMITS) as Array<keyof DeltaLimits>) {
    const v = partial[key]
    if (v === undefined) continue
    if (!Number.isSafeInteger(v) || v < 1 || v > CEILINGS[key]) {
      throw new DeltaLimitExceededError(`limit ${key}=${String(v)} is not an integer in [1, ${CEILINGS[key]}]`)
    }
    out[key] = v
  }
  return out
}
