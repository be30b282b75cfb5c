import assert from 'node:assert/strict'
import { Uint8ArrayList } from 'uint8arraylist'
import { SeededRandom } from '../../../common/random.ts'
import { encodeFrame } from '../../../protocol/delta/codec.ts'
import { DEFAULT_DELTA_LIMITS } from '../../../protocol/delta/limits.ts'
import { FrameType } from '../../../protocol/delta/messages.ts'
import type { Frame } from '../../../protocol/delta/messages.ts'
import { FrameDecoder, decodeFrames, encodeFrames } from '../../../protocol/delta/stream.ts'
import { collect, concat, encodeAll, rejectsNamed, sampleGeneration, throwsNamed } from './fixtures.ts'

function hexOf (frames: Frame[]): string[] {
  return frames.map(f => Buffer.from(encodeFrame(f)).toString('hex'))
}

function decodeInPieces (bytes: Uint8Array, cuts: number[]): Frame[] {
  const dec = new FrameDecoder()
  const out: Frame[] = []
  let prev = 0
  for (const cut of [...cuts, bytes.byteLength]) {
    out.push(...dec.push(bytes.subarray(prev, cut)))
    prev = cut
  }
  dec.end()
  return out
}

describe('delta streaming decoder', () => {
  let frames: Frame[]
  let stream: Uint8Array
  let expected: string[]

  before(async () => {
    frames = await sampleGeneration({ seed: 1, files: 2, blocksPerFile: 5, blockSize: 256 })
    stream = concat(encodeAll(frames))
    expected = hexOf(frames)
    assert.ok(frames.length >= 7, `sample has ${frames.length} frames`)
  })

  it('yields the same frames for every single split point', () => {
    for (let cut = 0; cut <= stream.byteLength; cut++) {
      assert.deepEqual(hexOf(decodeInPieces(stream, [cut])), expected, `split at ${cut}`)
    }
  })

  it('yields the same frames for many random multi-way splits and byte-by-byte input', () => {
    const rng = new SeededRandom(99)
    for (let i = 0; i < 300; i++) {
      const n = 1 + rng.int(12)
      const cuts = Array.from({ length: n }, () => rng.int(stream.byteLength + 1)).sort((a, b) => a - b)
      assert.deepEqual(hexOf(decodeInPieces(stream, cuts)), expected, `cuts ${cuts.join(',')}`)
    }
    const everyByte = Array.from({ length: stream.byteLength - 1 }, (_, i) => i + 1)
    assert.deepEqual(hexOf(decodeInPieces(stream, everyByte)), expected)
  })

  it('accepts Uint8ArrayList chunks', () => {
    const dec = new FrameDecoder()
    const list = new Uint8ArrayList()
    for (let at = 0; at < stream.byteLength; at += 37) list.append(stream.subarray(at, Math.min(at + 37, stream.byteLength)))
    const half = list.sublist(0, 500)
    const rest = list.sublist(500)
    const out = [...dec.push(half), ...dec.push(rest)]
    dec.end()
    assert.deepEqual(hexOf(out), expected)
  })

  it('refuses a declared 4 GiB body from the header alone, without allocating', () => {
    const before = process.memoryUsage().arrayBuffers
    const dec = new FrameDecoder()
    const header = new Uint8Array([FrameType.Blocks, 0xff, 0xff, 0xff, 0xff])
    throwsNamed(() => dec.push(header), 'DeltaFrameTooLargeError')
    assert.equal(dec.peakAllocation, 0)
    assert.ok(process.memoryUsage().arrayBuffers - before < 1024 * 1024)
    // poisoned: later input is refused with the same error
    throwsNamed(() => dec.push(stream), 'DeltaFrameTooLargeError')
    throwsNamed(() => dec.end(), 'DeltaFrameTooLargeError')
    // the same when the header dribbles in byte by byte
    const slow = new FrameDecoder()
    for (const b of header.subarray(0, 4)) assert.deepEqual(slow.push(new Uint8Array([b])), [])
    throwsNamed(() => slow.push(header.subarray(4)), 'DeltaFrameTooLargeError')
  })

  it('grows a body buffer with the bytes that arrive, not with the declared length', () => {
    const dec = new FrameDecoder()
    const header = new Uint8Array([FrameType.Blocks, 0, 0, 0, 0])
    new DataView(header.buffer).setUint32(1, DEFAULT_DELTA_LIMITS.maxFrameBodyBytes)
    dec.push(header)
    dec.push(new Uint8Array(1000))
    assert.ok(dec.peakAllocation <= 64 * 1024, `allocated ${dec.peakAllocation}`)
    assert.equal(dec.bufferedBytes, 1000)
    throwsNamed(() => dec.end(), 'DeltaTruncatedError')
  })

  it('refuses unknown frame types at the first byte', () => {
    const dec = new FrameDecoder()
    throwsNamed(() => dec.push(new Uint8Array([0x7f])), 'DeltaUnknownFrameError')
  })

  it('refuses input that ends inside a header or a body', () => {
    for (const cut of [1, 4, 5, 6, stream.byteLength - 1]) {
      const dec = new FrameDecoder()
      dec.push(stream.subarray(0, cut))
      throwsNamed(() => dec.end(), 'DeltaTruncatedError')
    }
  })

  it('decodeFrames and encodeFrames pipe a generation through', async () => {
    async function * chunks (): AsyncGenerator<Uint8Array> {
      for await (const b of encodeFrames(frames)) {
        yield b.subarray(0, 3)
        yield b.subarray(3)
      }
    }
    assert.deepEqual(hexOf(await collect(decodeFrames(chunks()))), expected)
    await rejectsNamed(collect(decodeFrames([stream.subarray(0, stream.byteLength - 2)])), 'DeltaTruncatedError')
  })

  it('decodeFrames stops with AbortedError when the signal fires, even while the source waits', async () => {
    const controller = new AbortController()
    let returned = false
    const stalled: AsyncIterable<Uint8Array> = {
      [Symbol.asyncIterator]: () => {
        let sent = false
        return {
          next: async () => {
            if (!sent) { sent = true; return { done: false, value: stream } }
            return await new Promise<IteratorResult<Uint8Array>>(() => {}) // never resolves
          },
          return: async () => { returned = true; return { done: true, value: undefined } }
        }
      }
    }
    const seen: Frame[] = []
    const run = (async () => {
      for await (const f of decodeFrames(stalled, { signal: controller.signal })) seen.push(f)
    })()
    // let the first chunk's frames through, then abort while next() hangs
    for (let i = 0; i < 50 && seen.length < frames.length; i++) await Promise.resolve()
    assert.equal(seen.length, frames.length)
    controller.abort()
    await rejectsNamed(run, 'AbortedError')
    assert.equal(returned, true)

    const pre = new AbortController()
    pre.abort()
    await rejectsNamed(collect(decodeFrames([stream], { signal: pre.signal })), 'AbortedError')
  })
})
