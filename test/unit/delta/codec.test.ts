import assert from 'node:assert/strict'
import { SeededRandom } from '../../../common/random.ts'
import { BlockEncoding, encodeBlock } from '../../../protocol/delta/block.ts'
import { decodeFrame, encodeBlocksFrameParts, encodeFrame } from '../../../protocol/delta/codec.ts'
import { DEFAULT_DELTA_LIMITS } from '../../../protocol/delta/limits.ts'
import { FileKind, FrameType } from '../../../protocol/delta/messages.ts'
import type { BeginFrame, BlocksFrame, EndFrame, Frame, ResizeFrame } from '../../../protocol/delta/messages.ts'
import { compressible, randomBytes, throwsNamed } from './fixtures.ts'

const KiB = 1024
const MiB = 1024 * KiB

function roundTrip (frame: Frame): Frame {
  const bytes = encodeFrame(frame)
  const back = decodeFrame(bytes)
  assert.deepEqual(normalize(back), normalize(frame))
  // re-encoding what was decoded gives the same bytes
  assert.deepEqual(encodeFrame(back), bytes)
  return back
}

/** Views and Buffers compare as plain byte arrays. */
function normalize (f: Frame): unknown {
  return JSON.parse(JSON.stringify(f, (_k, v: unknown) => v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v))
}

const begin: BeginFrame = {
  type: 'begin',
  vm: 'web01',
  generation: 42,
  baseGeneration: 41,
  consistent: true,
  createdAtMs: 1_732_000_000_123,
  files: [
    { fileId: 0, path: '/vms/web01/web01.vhdx', size: 4 * 1024 * MiB, blockSize: 2 * MiB, kind: FileKind.Disk },
    { fileId: 7, path: 'C:\\VMs\\web01\\Virtual Machines\\ä ü 虚拟机.vmcx', size: 12345, blockSize: 4 * KiB, kind: FileKind.WholeFile }
  ]
}

/** Patches a big-endian integer inside an encoded frame. */
function patch (bytes: Uint8Array, at: number, width: 1 | 2 | 4 | 8, value: number | bigint): Uint8Array {
  const out = new Uint8Array(bytes)
  const v = new DataView(out.buffer)
  if (width === 1) v.setUint8(at, Number(value))
  else if (width === 2) v.setUint16(at, Number(value))
  else if (width === 4) v.setUint32(at, Number(value))
  else v.setBigUint64(at, BigInt(value))
  return out
}

describe('delta frame codec', () => {
  const rng = new SeededRandom(7)

  describe('round trips', () => {
    it('begin, with unicode paths, u64 sizes and both flags', () => {
      roundTrip(begin)
      roundTrip({ ...begin, consistent: false, files: [] })
      roundTrip({ ...begin, generation: Number.MAX_SAFE_INTEGER, baseGeneration: 0, createdAtMs: 0 })
    })

    it('blocks with every encoding at 4 KiB and 4 MiB', () => {
      for (const size of [4 * KiB, 4 * MiB]) {
        const raws = [randomBytes(rng, size), compressible(rng, size), new Uint8Array(size)]
        const entries = raws.map((raw, i) => ({ ...encodeBlock(raw), offset: i * size }))
        assert.deepEqual(entries.map(e => e.encoding), [BlockEncoding.Raw, BlockEncoding.Lz4, BlockEncoding.Zero])
        // 4 MiB: one entry per frame keeps it under the raw limit except raw+lz4 (8 MiB) together
        const frame: BlocksFrame = { type: 'blocks', fileId: 3, entries: size === 4 * MiB ? entries.slice(0, 2) : entries }
        roundTrip(frame)
      }
    })

    it('blocks as parts: the same bytes as one frame, payloads passed through without copies', () => {
      const raws = [randomBytes(rng, 4 * KiB), new Uint8Array(4 * KiB), compressible(rng, 4 * KiB), new Uint8Array(4 * KiB), new Uint8Array(4 * KiB), randomBytes(rng, 100)]
      const frames: BlocksFrame[] = [
        { type: 'blocks', fileId: 5, entries: raws.map((raw, i) => ({ ...encodeBlock(raw), offset: i * 4 * KiB })) },
        // only zero blocks: headers and no payload at all
        { type: 'blocks', fileId: 6, entries: [0, 1].map(i => ({ ...encodeBlock(new Uint8Array(512)), offset: i * 512 })) },
        // a zero block last: its header is the final part
        { type: 'blocks', fileId: 7, entries: [{ ...encodeBlock(randomBytes(rng, 64)), offset: 0 }, { ...encodeBlock(new Uint8Array(64)), offset: 64 }] }
      ]
      for (const frame of frames) {
        const parts = encodeBlocksFrameParts(frame)
        assert.deepEqual(Buffer.concat(parts), Buffer.from(encodeFrame(frame)))
        for (const e of frame.entries) {
          if (e.payload.byteLength > 0) assert.ok(parts.includes(e.payload), 'a payload is passed as it is')
        }
        assert.deepEqual(normalize(decodeFrame(new Uint8Array(Buffer.concat(parts)))), normalize(frame))
      }
      // and the same checks as encodeFrame
      throwsNamed(() => encodeBlocksFrameParts({ type: 'blocks', fileId: 1, entries: [] }), 'DeltaMalformedFrameError')
      const e = { ...encodeBlock(randomBytes(rng, 4 * KiB)), offset: 0 }
      throwsNamed(() => encodeBlocksFrameParts({ type: 'blocks', fileId: 1, entries: [{ ...e, payload: e.payload.subarray(1) }] }), 'DeltaBadEncodingError')
      throwsNamed(() => encodeBlocksFrameParts({ type: 'blocks', fileId: 2 ** 32, entries: [e] }), 'DeltaLimitExceededError')
    })

    it('resize and end, with and without digest', () => {
      roundTrip({ type: 'resize', fileId: 0xffff_ffff, size: 2 ** 40 } satisfies ResizeFrame)
      roundTrip({ type: 'end', generation: 42, blockCount: 0, byteCount: 0 } satisfies EndFrame)
      roundTrip({ type: 'end', generation: 42, blockCount: 9, byteCount: 2 ** 50, digest: randomBytes(rng, 16) })
    })

    it('puts the documented header in front: type u8, body length u32 big-endian', () => {
      const bytes = encodeFrame({ type: 'resize', fileId: 1, size: 2 })
      assert.deepEqual(Array.from(bytes.subarray(0, 5)), [FrameType.Resize, 0, 0, 0, 12])
      assert.equal(bytes.byteLength, 17)
    })
  })

  describe('encoder refuses what a peer would refuse', () => {
    it('strings over their limits, empty or with NUL', () => {
      throwsNamed(() => encodeFrame({ ...begin, vm: 'x'.repeat(256) }), 'DeltaLimitExceededError')
      throwsNamed(() => encodeFrame({ ...begin, vm: 'é'.repeat(128) }), 'DeltaLimitExceededError') // 256 bytes
      encodeFrame({ ...begin, vm: 'x'.repeat(255) })
      const file = begin.files[0] as BeginFrame['files'][number]
      throwsNamed(() => encodeFrame({ ...begin, files: [{ ...file, path: 'p'.repeat(4097) }] }), 'DeltaLimitExceededError')
      encodeFrame({ ...begin, files: [{ ...file, path: 'p'.repeat(4096) }] })
      throwsNamed(() => encodeFrame({ ...begin, vm: '' }), 'DeltaMalformedFrameError')
      throwsNamed(() => encodeFrame({ ...begin, vm: 'a\0b' }), 'DeltaMalformedFrameError')
    })

    it('numbers outside their wire types, unknown kinds, too many files', () => {
      throwsNamed(() => encodeFrame({ ...begin, generation: 2 ** 53 }), 'DeltaLimitExceededError')
      throwsNamed(() => encodeFrame({ ...begin, generation: -1 }), 'DeltaLimitExceededError')
      throwsNamed(() => encodeFrame({ type: 'resize', fileId: 2 ** 32, size: 1 }), 'DeltaLimitExceededError')
      throwsNamed(() => encodeFrame({ type: 'resize', fileId: 1, size: 1.5 }), 'DeltaLimitExceededError')
      const file = begin.files[0] as BeginFrame['files'][number]
      throwsNamed(() => encodeFrame({ ...begin, files: [{ ...file, kind: 9 as FileKind }] }), 'DeltaMalformedFrameError')
      const many = Array.from({ length: DEFAULT_DELTA_LIMITS.maxFilesPerGeneration + 1 }, (_, i) => ({ ...file, fileId: i, path: `/f${i}` }))
      throwsNamed(() => encodeFrame({ ...begin, files: many }), 'DeltaLimitExceededError')
    })

    it('blocks frames that are empty, too big or inconsistent', () => {
      const e = { ...encodeBlock(randomBytes(rng, 4 * KiB)), offset: 0 }
      throwsNamed(() => encodeFrame({ type: 'blocks', fileId: 1, entries: [] }), 'DeltaMalformedFrameError')
      const tooMany = Array.from({ length: DEFAULT_DELTA_LIMITS.maxEntriesPerFrame + 1 }, (_, i) => ({ ...e, offset: i * 4096 }))
      throwsNamed(() => encodeFrame({ type: 'blocks', fileId: 1, entries: tooMany }), 'DeltaLimitExceededError')
      const zero = { ...encodeBlock(new Uint8Array(4 * MiB)), offset: 0 }
      const threeZeros = [0, 1, 2].map(i => ({ ...zero, offset: i * 4 * MiB }))
      throwsNamed(() => encodeFrame({ type: 'blocks', fileId: 1, entries: threeZeros }), 'DeltaLimitExceededError')
      throwsNamed(() => encodeFrame({ type: 'blocks', fileId: 1, entries: [{ ...e, payload: e.payload.subarray(1) }] }), 'DeltaBadEncodingError')
      throwsNamed(() => encodeFrame({ type: 'blocks', fileId: 1, entries: [{ ...e, checksum: new Uint8Array(15) }] }), 'DeltaBadEncodingError')
      throwsNamed(() => encodeFrame({ type: 'blocks', fileId: 1, entries: [{ ...e, encoding: 3 as BlockEncoding }] }), 'DeltaBadEncodingError')
      throwsNamed(() => encodeFrame({ type: 'blocks', fileId: 1, entries: [{ ...zero, length: 4 * MiB + 1 }] }), 'DeltaBlockTooLargeError')
      throwsNamed(() => encodeFrame({ type: 'blocks', fileId: 1, entries: [{ ...e, offset: 2 ** 53 - 10 }] }), 'DeltaLimitExceededError')
      throwsNamed(() => encodeFrame({ type: 'end', generation: 1, blockCount: 0, byteCount: 0, digest: new Uint8Array(3) }), 'DeltaMalformedFrameError')
    })
  })

  describe('decoder refuses hostile frames', () => {
    const resize = encodeFrame({ type: 'resize', fileId: 1, size: 2 })
    const blocks = encodeFrame({ type: 'blocks', fileId: 1, entries: [{ ...encodeBlock(compressible(rng, 4096)), offset: 4096 }] })
    const beginBytes = encodeFrame(begin)
    // begin body: vm len u16 at 5, vm at 7..12, generation at 12, base at 20, flags at 28, created at 29, count at 37
    const vmEnd = 7 + 5

    it('truncated input and trailing bytes', () => {
      throwsNamed(() => decodeFrame(new Uint8Array(0)), 'DeltaTruncatedError')
      throwsNamed(() => decodeFrame(resize.subarray(0, 3)), 'DeltaTruncatedError')
      throwsNamed(() => decodeFrame(blocks.subarray(0, blocks.byteLength - 1)), 'DeltaTruncatedError')
      const longer = new Uint8Array(resize.byteLength + 1)
      longer.set(resize)
      throwsNamed(() => decodeFrame(longer), 'DeltaMalformedFrameError')
    })

    it('unknown frame types, even with a plausible body', () => {
      for (const t of [0, 5, 200, 255]) throwsNamed(() => decodeFrame(patch(resize, 0, 1, t)), 'DeltaUnknownFrameError')
    })

    it('declared lengths over the limit or impossible for the type', () => {
      throwsNamed(() => decodeFrame(patch(blocks, 1, 4, 0xffff_ffff)), 'DeltaFrameTooLargeError')
      throwsNamed(() => decodeFrame(patch(blocks, 1, 4, DEFAULT_DELTA_LIMITS.maxFrameBodyBytes + 1)), 'DeltaFrameTooLargeError')
      throwsNamed(() => decodeFrame(patch(resize, 1, 4, 13)), 'DeltaMalformedFrameError')
      throwsNamed(() => decodeFrame(patch(blocks, 1, 4, 10)), 'DeltaMalformedFrameError')
      throwsNamed(() => decodeFrame(blocks, { limits: { maxFrameBodyBytes: blocks.byteLength - 6 } }), 'DeltaFrameTooLargeError')
    })

    it('u64 values beyond 2^53 - 1 and unknown flags', () => {
      throwsNamed(() => decodeFrame(patch(beginBytes, vmEnd, 8, 2n ** 53n)), 'DeltaLimitExceededError')
      throwsNamed(() => decodeFrame(patch(beginBytes, vmEnd, 8, 2n ** 64n - 1n)), 'DeltaLimitExceededError')
      throwsNamed(() => decodeFrame(patch(resize, 9, 8, 2n ** 60n)), 'DeltaLimitExceededError')
      throwsNamed(() => decodeFrame(patch(beginBytes, vmEnd + 16, 1, 2)), 'DeltaMalformedFrameError')
      const end = encodeFrame({ type: 'end', generation: 1, blockCount: 0, byteCount: 0 })
      throwsNamed(() => decodeFrame(patch(end, 29, 1, 0x80)), 'DeltaMalformedFrameError')
      // digest flag set without the digest bytes
      throwsNamed(() => decodeFrame(patch(end, 29, 1, 1)), 'DeltaMalformedFrameError')
    })

    it('counts that cannot fit the body or exceed limits', () => {
      throwsNamed(() => decodeFrame(patch(beginBytes, vmEnd + 25, 4, 1_000_000)), 'DeltaLimitExceededError')
      throwsNamed(() => decodeFrame(patch(beginBytes, vmEnd + 25, 4, 3)), 'DeltaMalformedFrameError')
      throwsNamed(() => decodeFrame(patch(blocks, 9, 4, 0)), 'DeltaMalformedFrameError')
      throwsNamed(() => decodeFrame(patch(blocks, 9, 4, 2)), 'DeltaMalformedFrameError')
      throwsNamed(() => decodeFrame(patch(blocks, 9, 4, 0xffff_ffff)), 'DeltaLimitExceededError')
      decodeFrame(blocks, { limits: { maxEntriesPerFrame: 1 } })
      throwsNamed(() => decodeFrame(patch(blocks, 9, 4, 2), { limits: { maxEntriesPerFrame: 1 } }), 'DeltaLimitExceededError')
    })

    it('entries whose fields disagree', () => {
      // entry at 13: offset u64 | length u32 (21) | encoding u8 (25) | checksum (26..42) | payloadLength u32 (42)
      throwsNamed(() => decodeFrame(patch(blocks, 21, 4, 0)), 'DeltaBlockTooLargeError')
      throwsNamed(() => decodeFrame(patch(blocks, 21, 4, 5 * MiB)), 'DeltaBlockTooLargeError')
      throwsNamed(() => decodeFrame(patch(blocks, 25, 1, 9)), 'DeltaBadEncodingError')
      throwsNamed(() => decodeFrame(patch(blocks, 25, 1, BlockEncoding.Raw)), 'DeltaBadEncodingError')
      throwsNamed(() => decodeFrame(patch(blocks, 25, 1, BlockEncoding.Zero)), 'DeltaBadEncodingError')
      throwsNamed(() => decodeFrame(patch(blocks, 42, 4, 0xffff_fff0)), 'DeltaBadEncodingError')
      throwsNamed(() => decodeFrame(patch(blocks, 42, 4, 1)), 'DeltaMalformedFrameError') // trailing bytes
      throwsNamed(() => decodeFrame(patch(blocks, 13, 8, 2 ** 53 - 100)), 'DeltaLimitExceededError')
    })

    it('strings that are empty, too long, not UTF-8 or contain NUL', () => {
      throwsNamed(() => decodeFrame(patch(beginBytes, 5, 2, 0)), 'DeltaMalformedFrameError')
      throwsNamed(() => decodeFrame(patch(beginBytes, 5, 2, 256)), 'DeltaLimitExceededError')
      throwsNamed(() => decodeFrame(patch(beginBytes, 7, 1, 0xff)), 'DeltaMalformedFrameError')
      throwsNamed(() => decodeFrame(patch(beginBytes, 8, 1, 0)), 'DeltaMalformedFrameError')
      throwsNamed(() => decodeFrame(patch(beginBytes, vmEnd + 29 + 4, 1, 7)), 'DeltaMalformedFrameError') // file kind
    })

    it('keeps payloads as views of the input instead of copies', () => {
      const frame = decodeFrame(blocks) as BlocksFrame
      assert.equal(frame.entries[0]?.payload.buffer, blocks.buffer)
    })
  })
})
