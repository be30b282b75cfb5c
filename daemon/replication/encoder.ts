/**
 * Block encoding for the sender, adaptive: lz4 is tried on every block until a run of blocks
 * proves incompressible (random data, encrypted or already-compressed guests), then skipped for
 * a while and probed again. On incompressible disks this saves the lz4 attempt — a large share
 * of the source's CPU — and leaves it to the stream; compressible data is still caught at the
 * next probe.
 */
import { BlockEncoding, blockChecksum, encodeBlock, isAllZero, zeroChecksum, type EncodedBlock } from '../../protocol/delta/index.ts'

export interface AdaptiveEncoderInit {
  /** Consecutive raw (incompressible) results that start a skip. @default 8 */
  rawStreak?: number
  /** Blocks sent without trying lz4 after such a streak. @default 64 */
  skipBlocks?: number
}

export class AdaptiveEncoder {
  private streak = 0
  private skipping = 0
  private readonly rawStreak: number
  private readonly skipBlocks: number
  /** Blocks sent raw without an lz4 attempt (for tests and logs). */
  skipped = 0

  constructor (init: AdaptiveEncoderInit = {}) {
    this.rawStreak = init.rawStreak ?? 8
    this.skipBlocks = init.skipBlocks ?? 64
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
      if (++this.streak >= this.rawStreak) { this.skipping = this.skipBlocks; this.streak = 0 }
    } else {
      this.streak = 0
    }
    return e
  }
}
