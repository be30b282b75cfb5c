/**
 * Block encoding for the sender, adaptive: lz4 is tried on every block until a run of blocks
 * proves incompressible (random data, encrypted or already-compressed guests), then skipped for
 * a while and probed with one block; each probe that fails again doubles the skip (up to
 * `maxSkipBlocks`), one that compresses goes back to trying every block. On incompressible
 * disks this saves the lz4 attempt — a large share of the source's CPU — and leaves it to the
 * stream; compressible data is still caught at the next probe.
 */
import { BlockEncoding, blockChecksum, encodeBlock, isAllZero, zeroChecksum, type EncodedBlock } from '../../protocol/delta/index.ts'

export interface AdaptiveEncoderInit {
  /** Consecutive raw (incompressible) results that start a skip. @default 8 */
  rawStreak?: number
  /** Blocks sent without trying lz4 after such a streak. @default 64 */
  skipBlocks?: number
  /** Longest skip, reached by doubling while probes keep failing. @default 1024 */
  maxSkipBlocks?: number
}

export class AdaptiveEncoder {
  private streak = 0
  private skipping = 0
  /** the next skip's length, 0 while not backing off (every block tried) */
  private nextSkip = 0
  private readonly rawStreak: number
  private readonly skipBlocks: number
  private readonly maxSkipBlocks: number
  /** Blocks sent raw without an lz4 attempt (for tests and logs). */
  skipped = 0

  constructor (init: AdaptiveEncoderInit = {}) {
    this.rawStreak = init.rawStreak ?? 8
    this.skipBlocks = init.skipBlocks ?? 64
    this.maxSkipBlocks = Math.max(this.skipBlocks, init.maxSkipBlocks ?? 1024)
  }

  readonly encode = (raw: Uint8Array): EncodedBlock => {
    if (this.skipping > 0) {
      this.skipping--
      this.skipped++
      if (isAllZero(raw)) return { encoding: BlockEncoding.Zero, length: raw.byteLength, checksum: zeroChecksum(raw.byteLength), payload: new Uint8Array(0) }
      return { encoding: BlockEncoding.Raw, length: raw.byteLength, checksum: blockChecksum(raw), payload: raw }
    }
    const e = encodeBlock(raw)
    if (e.encoding === BlockEncoding.Raw) {
      if (this.nextSkip > 0) {
        // a failed probe: skip longer
        this.skipping = this.nextSkip
        this.nextSkip = Math.min(this.nextSkip * 2, this.maxSkipBlocks)
      } else if (++this.streak >= this.rawStreak) {
        this.skipping = this.skipBlocks
        this.nextSkip = Math.min(this.skipBlocks * 2, this.maxSkipBlocks)
        this.streak = 0
      }
    } else if (e.encoding === BlockEncoding.Lz4) {
      this.streak = 0
      this.nextSkip = 0
    }
    return e
  }
}
