/**
 * Fuzz inputs for the delta receive path (protocol/delta), shared by its unit test (CI counts)
 * and `npm run bench -- fuzz` (millions): a corpus of encoded generations, the mutator and the
 * receiver's use of the decoders.
 */
import assert from 'node:assert/strict'
import type { Random } from '../../../common/random.ts'
import { decodeBlock } from '../../../protocol/delta/block.ts'
import { DEFAULT_DELTA_LIMITS } from '../../../protocol/delta/limits.ts'
import { GenerationValidator } from '../../../protocol/delta/generation.ts'
import { FrameDecoder } from '../../../protocol/delta/stream.ts'
import { concat, encodeAll, isDeltaError, randomBytes, sampleGeneration } from '../../unit/delta/fixtures.ts'

const HUGE_U32 = [0xffff_ffff, 0x8000_0000, 0x7fff_ffff, DEFAULT_DELTA_LIMITS.maxFrameBodyBytes + 1, DEFAULT_DELTA_LIMITS.maxFrameBodyBytes, 0x0100_0000, 0]

/** One encoded generation, frame by frame. */
export interface DeltaSample { frames: Uint8Array[] }

function frameStarts (frames: Uint8Array[]): number[] {
  const starts: number[] = []
  let at = 0
  for (const f of frames) { starts.push(at); at += f.byteLength }
  return starts
}

/** One mutated input derived from the corpus. */
export function mutateDelta (rng: Random, corpus: DeltaSample[]): Uint8Array {
  const sample = corpus[rng.int(corpus.length)] as DeltaSample
  let frames = sample.frames.slice()
  // frame-level edits first (they keep frames intact, testing the validator)
  if (rng.int(4) === 0) {
    const op = rng.int(4)
    const i = rng.int(frames.length)
    const j = rng.int(frames.length)
    if (op === 0) frames.splice(i, 1)
    else if (op === 1) frames.splice(i, 0, frames[j] as Uint8Array)
    else if (op === 2) { const t = frames[i] as Uint8Array; frames[i] = frames[j] as Uint8Array; frames[j] = t }
    else {
      const other = corpus[rng.int(corpus.length)] as DeltaSample
      frames.splice(i, 1, other.frames[rng.int(other.frames.length)] as Uint8Array)
    }
  }
  const starts = frameStarts(frames)
  let bytes = concat(frames)
  frames = []
  const edits = 1 + rng.int(3)
  for (let e = 0; e < edits; e++) {
    const n = bytes.byteLength
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    switch (rng.int(10)) {
      case 0: // flip one bit
        if (n > 0) { const at = rng.int(n); bytes[at] = (bytes[at] as number) ^ (1 << rng.int(8)) }
        break
      case 1: // random byte
        if (n > 0) bytes[rng.int(n)] = rng.int(256)
        break
      case 2: // truncate
        bytes = bytes.subarray(0, rng.int(n + 1))
        break
      case 3: // extend with garbage
        bytes = concat([bytes, randomBytes(rng, 1 + rng.int(64))])
        break
      case 4: { // a frame's length field
        const s = starts[rng.int(starts.length)] as number
        if (s + 5 <= n) view.setUint32(s + 1, rng.int(3) === 0 ? rng.int(0x1_0000_0000) : HUGE_U32[rng.int(HUGE_U32.length)] as number)
        break
      }
      case 5: { // a 4-byte field anywhere: counts, lengths, payload sizes
        if (n >= 4) view.setUint32(rng.int(n - 3), rng.int(2) === 0 ? HUGE_U32[rng.int(HUGE_U32.length)] as number : rng.int(64))
        break
      }
      case 6: { // an 8-byte field anywhere: offsets, sizes, generations, counts
        const values = [2n ** 64n - 1n, 2n ** 53n, 2n ** 53n - 1n, 2n ** 32n, 0n, BigInt(rng.int(1 << 20))]
        if (n >= 8) view.setBigUint64(rng.int(n - 7), values[rng.int(values.length)] as bigint)
        break
      }
      case 7: // insert garbage in the middle
        if (n > 0) { const at = rng.int(n); bytes = concat([bytes.subarray(0, at), randomBytes(rng, 1 + rng.int(16)), bytes.subarray(at)]) }
        break
      case 8: // pure garbage
        bytes = randomBytes(rng, rng.int(300))
        break
      default: // a string length or small field
        if (n >= 2) view.setUint16(rng.int(n - 1), rng.int(2) === 0 ? 0xffff : rng.int(300))
    }
  }
  return bytes
}

/**
 * What a receiver does with the bytes (FrameDecoder in random chunk splits, GenerationValidator,
 * decodeBlock); returns 'ok' or the delta error code and rethrows anything else.
 */
export function receiveDelta (rng: Random, bytes: Uint8Array, peak: { alloc: number }): string {
  const decoder = new FrameDecoder()
  let validator = new GenerationValidator()
  try {
    const cuts = Array.from({ length: rng.int(4) }, () => rng.int(bytes.byteLength + 1)).sort((a, b) => a - b)
    let prev = 0
    for (const cut of [...cuts, bytes.byteLength]) {
      for (const frame of decoder.push(bytes.subarray(prev, cut))) {
        validator.accept(frame)
        if (frame.type === 'blocks') {
          const max = validator.file(frame.fileId)?.blockSize ?? 0
          for (const e of frame.entries) decodeBlock(e, { maxLength: max })
        }
        if (validator.phase === 'complete') { validator.finish(); validator = new GenerationValidator() }
      }
      prev = cut
      assert.ok(decoder.bufferedBytes <= DEFAULT_DELTA_LIMITS.maxFrameBodyBytes + 5)
    }
    decoder.end()
    if (validator.phase !== 'awaiting-begin') validator.finish()
    return 'ok'
  } catch (err) {
    if (!isDeltaError(err)) throw err
    return err.code
  } finally {
    peak.alloc = Math.max(peak.alloc, decoder.peakAllocation)
  }
}

/** Six generations of 1–3 files and 2–5 blocks: the corpus the mutations start from. */
export async function deltaCorpus (): Promise<DeltaSample[]> {
  const corpus: DeltaSample[] = []
  for (let s = 0; s < 6; s++) {
    const frames = await sampleGeneration({ seed: 100 + s, files: 1 + (s % 3), blocksPerFile: 2 + (s % 4), blockSize: s % 2 === 0 ? 256 : 512, maxFramePayloadBytes: 1024 })
    corpus.push({ frames: encodeAll(frames) })
  }
  return corpus
}
