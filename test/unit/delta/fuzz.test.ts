/**
 * Seeded fuzz of the receive path: mutated generations go through FrameDecoder (in random chunk
 * splits), GenerationValidator and decodeBlock, exactly as a receiver would use them. The only
 * acceptable failures are DeltaProtocolError subclasses; any other exception, a body buffer larger
 * than what arrived, or a slow input fails the test. Rerun one case with FUZZ_ONLY=<index>.
 */
import assert from 'node:assert/strict'
import { SeededRandom } from '../../../common/random.ts'
import type { Random } from '../../../common/random.ts'
import { decodeBlock } from '../../../protocol/delta/block.ts'
import { DEFAULT_DELTA_LIMITS } from '../../../protocol/delta/limits.ts'
import { GenerationValidator } from '../../../protocol/delta/generation.ts'
import { FrameDecoder } from '../../../protocol/delta/stream.ts'
import { concat, encodeAll, isDeltaError, randomBytes, sampleGeneration } from './fixtures.ts'

const ITERATIONS = Number(process.env.FUZZ_ITERATIONS ?? 100_000)
const SEED = 0x5eed
const HUGE_U32 = [0xffff_ffff, 0x8000_0000, 0x7fff_ffff, DEFAULT_DELTA_LIMITS.maxFrameBodyBytes + 1, DEFAULT_DELTA_LIMITS.maxFrameBodyBytes, 0x0100_0000, 0]

interface Sample { frames: Uint8Array[] }

function frameStarts (frames: Uint8Array[]): number[] {
  const starts: number[] = []
  let at = 0
  for (const f of frames) { starts.push(at); at += f.byteLength }
  return starts
}

/** One mutated input derived from the corpus. */
function mutate (rng: Random, corpus: Sample[]): Uint8Array {
  const sample = corpus[rng.int(corpus.length)] as Sample
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
      const other = corpus[rng.int(corpus.length)] as Sample
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

/** What a receiver does with the bytes; returns 'ok' or the error code. */
function receive (rng: Random, bytes: Uint8Array, peak: { alloc: number }): string {
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

describe('delta receive path fuzz', function () {
  this.timeout(120_000)
  let corpus: Sample[]

  before(async () => {
    corpus = []
    for (let s = 0; s < 6; s++) {
      const frames = await sampleGeneration({ seed: 100 + s, files: 1 + (s % 3), blocksPerFile: 2 + (s % 4), blockSize: s % 2 === 0 ? 256 : 512, maxFramePayloadBytes: 1024 })
      corpus.push({ frames: encodeAll(frames) })
    }
  })

  it('the unmutated corpus is accepted', () => {
    for (const s of corpus) assert.equal(receive(new SeededRandom(1), concat(s.frames), { alloc: 0 }), 'ok')
  })

  it(`${ITERATIONS} mutated inputs fail only with typed errors, bounded memory and time`, () => {
    const only = process.env.FUZZ_ONLY
    const outcomes = new Map<string, number>()
    let slowest = 0
    const t0 = performance.now()
    for (let i = 0; i < ITERATIONS; i++) {
      if (only !== undefined && String(i) !== only) continue
      const rng = new SeededRandom(SEED + i)
      const input = mutate(rng, corpus)
      const peak = { alloc: 0 }
      const start = performance.now()
      let outcome: string
      try {
        outcome = receive(rng, input, peak)
      } catch (err) {
        assert.fail(`input ${i} (FUZZ_ONLY=${i}) threw a non-delta error: ${err instanceof Error ? `${err.name}: ${err.message}\n${err.stack ?? ''}` : String(err)}`)
      }
      const took = performance.now() - start
      slowest = Math.max(slowest, took)
      // the body buffer follows the bytes that arrived, never the declared length
      assert.ok(peak.alloc <= Math.max(64 * 1024, 2 * input.byteLength), `input ${i}: allocated ${peak.alloc} for ${input.byteLength} bytes`)
      assert.ok(took < 2000, `input ${i} took ${took.toFixed(0)} ms`)
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)
    }
    const seconds = (performance.now() - t0) / 1000
    if (only === undefined) {
      console.log(`      fuzz: ${ITERATIONS} inputs in ${seconds.toFixed(1)} s, slowest ${slowest.toFixed(1)} ms`)
      console.log(`      outcomes: ${JSON.stringify(Object.fromEntries([...outcomes].sort((a, b) => b[1] - a[1])))}`)
      // the mutations must reach deep: many distinct refusals, and some inputs still valid
      assert.ok(outcomes.size >= 15, `only ${outcomes.size} distinct outcomes`)
      for (const code of ['ERR_DELTA_CHECKSUM_MISMATCH', 'ERR_DELTA_FRAME_TOO_LARGE', 'ERR_DELTA_TRUNCATED', 'ERR_DELTA_UNKNOWN_FRAME', 'ERR_DELTA_SEQUENCE', 'ERR_DELTA_DIGEST_MISMATCH']) {
        assert.ok((outcomes.get(code) ?? 0) > 0, `no input reached ${code}`)
      }
    }
  })
})
