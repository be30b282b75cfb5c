import assert from 'node:assert/strict'
import { SeededRandom } from '../../../common/random.ts'
import { BlockEncoding, decodeBlock, encodeBlock } from '../../../protocol/delta/block.ts'
import type { EncodedBlock } from '../../../protocol/delta/block.ts'
import { encodeGeneration } from '../../../protocol/delta/encoder.ts'
import type { ChangedBlock, EncodeGenerationOptions } from '../../../protocol/delta/encoder.ts'
import { GenerationValidator, validateFrames } from '../../../protocol/delta/generation.ts'
import { FileKind } from '../../../protocol/delta/messages.ts'
import type { BeginFrame, BlockEntry, BlocksFrame, EndFrame, Frame } from '../../../protocol/delta/messages.ts'
import { decodeFrames, encodeFrames } from '../../../protocol/delta/stream.ts'
import { collect, compressible, randomBytes, rejectsNamed, sampleGeneration, throwsNamed } from './fixtures.ts'

const KiB = 1024

const begin: BeginFrame = {
  type: 'begin',
  vm: 'db01',
  generation: 5,
  baseGeneration: 4,
  consistent: false,
  createdAtMs: 1,
  files: [
    { fileId: 1, path: '/vms/db01/disk.vhdx', size: 10 * KiB, blockSize: 4 * KiB, kind: FileKind.Disk },
    { fileId: 2, path: '/vms/db01/db01.vmcx', size: 100, blockSize: 4 * KiB, kind: FileKind.WholeFile }
  ]
}

function entry (offset: number, length: number, seed = offset): BlockEntry {
  return { ...encodeBlock(randomBytes(new SeededRandom(seed), length)), offset }
}

function blocks (fileId: number, ...entries: BlockEntry[]): BlocksFrame {
  return { type: 'blocks', fileId, entries }
}

/** Runs frames through a fresh validator; returns it. */
function run (...frames: Frame[]): GenerationValidator {
  const v = new GenerationValidator()
  for (const f of frames) v.accept(f)
  return v
}

/** A valid generation's frames with a matching end. */
function valid (): Frame[] {
  const v = run(begin, blocks(1, entry(0, 4096), entry(4096, 4096)), { type: 'resize', fileId: 2, size: 100 }, blocks(2, entry(0, 100)))
  return [begin, blocks(1, entry(0, 4096), entry(4096, 4096)), { type: 'resize', fileId: 2, size: 100 }, blocks(2, entry(0, 100)),
    { type: 'end', generation: 5, blockCount: v.blockCount, byteCount: v.byteCount, digest: v.digest() }]
}

describe('delta generation validator', () => {
  it('accepts a valid generation and summarizes it', () => {
    const frames = valid()
    const v = run(...frames)
    assert.equal(v.phase, 'complete')
    const s = v.finish()
    assert.equal(s.blockCount, 3)
    assert.equal(s.byteCount, 8292)
    assert.deepEqual(s.digest, (frames[4] as EndFrame).digest)
    assert.equal(s.vm, 'db01')
  })

  it('requires begin first, one begin, nothing after end', () => {
    throwsNamed(() => run(blocks(1, entry(0, 10))), 'DeltaSequenceError')
    throwsNamed(() => run({ type: 'end', generation: 5, blockCount: 0, byteCount: 0 }), 'DeltaSequenceError')
    throwsNamed(() => run(begin, begin), 'DeltaSequenceError')
    throwsNamed(() => run(...valid(), blocks(1, entry(0, 10))), 'DeltaSequenceError')
    throwsNamed(() => run(...valid(), begin), 'DeltaSequenceError')
  })

  it('refuses begin frames that cannot start a generation', () => {
    const [a, b] = begin.files as [BeginFrame['files'][number], BeginFrame['files'][number]]
    throwsNamed(() => run({ ...begin, generation: 4 }), 'DeltaBadBeginError')
    throwsNamed(() => run({ ...begin, files: [a, { ...b, fileId: 1 }] }), 'DeltaBadBeginError')
    throwsNamed(() => run({ ...begin, files: [a, { ...b, path: a.path }] }), 'DeltaBadBeginError')
    throwsNamed(() => run({ ...begin, files: [{ ...a, blockSize: 0 }] }), 'DeltaBadBeginError')
    throwsNamed(() => run({ ...begin, files: [{ ...a, blockSize: 8 * 1024 * 1024 }] }), 'DeltaBadBeginError')
  })

  it('checks blocks against the declared files', () => {
    throwsNamed(() => run(begin, blocks(3, entry(0, 10))), 'DeltaUnknownFileError')
    throwsNamed(() => run(begin, blocks(1, entry(8192, 4096))), 'DeltaOutOfRangeError') // 12 KiB > 10 KiB
    throwsNamed(() => run(begin, blocks(2, entry(50, 51))), 'DeltaOutOfRangeError')
    run(begin, blocks(2, entry(50, 50)))
    throwsNamed(() => run(begin, blocks(1, entry(0, 4097))), 'DeltaBlockTooLargeError')
    throwsNamed(() => run(begin, blocks(1, entry(0, 4096), entry(4095, 10))), 'DeltaOverlapError')
    throwsNamed(() => run(begin, blocks(1, entry(4096, 10), entry(4096, 10))), 'DeltaOverlapError')
    throwsNamed(() => run(begin, blocks(1, entry(4096, 10), entry(0, 10))), 'DeltaOverlapError')
    throwsNamed(() => run(begin, blocks(1)), 'DeltaMalformedFrameError')
    // across frames a range may be sent again (the later one wins)
    run(begin, blocks(1, entry(0, 10)), blocks(1, entry(0, 10)))
  })

  it('checks resizes against begin', () => {
    throwsNamed(() => run(begin, { type: 'resize', fileId: 2, size: 99 }), 'DeltaResizeMismatchError')
    throwsNamed(() => run(begin, { type: 'resize', fileId: 2, size: 100 }, { type: 'resize', fileId: 2, size: 100 }), 'DeltaResizeMismatchError')
    throwsNamed(() => run(begin, { type: 'resize', fileId: 9, size: 100 }), 'DeltaUnknownFileError')
  })

  it('checks the end frame against what was received', () => {
    const frames = valid()
    const end = frames[4] as EndFrame
    const head = frames.slice(0, 4)
    throwsNamed(() => run(...head, { ...end, generation: 6 }), 'DeltaGenerationMismatchError')
    throwsNamed(() => run(...head, { ...end, blockCount: 2 }), 'DeltaCountMismatchError')
    throwsNamed(() => run(...head, { ...end, byteCount: end.byteCount + 1 }), 'DeltaCountMismatchError')
    const digest = new Uint8Array(end.digest as Uint8Array)
    digest[0] = (digest[0] as number) ^ 1
    throwsNamed(() => run(...head, { ...end, digest }), 'DeltaDigestMismatchError')
    // same counts, different blocks: only the digest notices
    const swapped = [begin, blocks(1, entry(0, 4096, 77), entry(4096, 4096)), head[2] as Frame, head[3] as Frame]
    throwsNamed(() => run(...swapped, end), 'DeltaDigestMismatchError')
    const { digest: _omit, ...noDigest } = end
    run(...head, noDigest)
  })

  it('stays failed after an error and refuses summaries of incomplete generations', () => {
    const v = new GenerationValidator()
    throwsNamed(() => v.finish(), 'DeltaIncompleteError')
    v.accept(begin)
    throwsNamed(() => v.finish(), 'DeltaIncompleteError')
    throwsNamed(() => v.accept(blocks(9, entry(0, 1))), 'DeltaUnknownFileError')
    assert.equal(v.phase, 'failed')
    throwsNamed(() => v.accept(blocks(1, entry(0, 1))), 'DeltaUnknownFileError')
    throwsNamed(() => v.finish(), 'DeltaUnknownFileError')
  })

  it('validateFrames passes back-to-back generations and refuses a cut-off one', async () => {
    const a = await sampleGeneration({ seed: 3 })
    const b = await sampleGeneration({ seed: 4 })
    const summaries: number[] = []
    const out = await collect(validateFrames([...a, ...b], { onGeneration: s => summaries.push(s.blockCount) }))
    assert.equal(out.length, a.length + b.length)
    assert.equal(summaries.length, 2)
    await rejectsNamed(collect(validateFrames([...a, ...b.slice(0, -1)])), 'DeltaIncompleteError')
  })
})

describe('delta generation encoder', () => {
  const rng = new SeededRandom(5)
  const size = 64 * KiB * 20
  const disk = new Uint8Array(size)
  for (let i = 0; i < 20; i++) {
    const kind = i % 4
    if (kind === 1) disk.set(randomBytes(rng, 64 * KiB), i * 64 * KiB)
    if (kind === 2) disk.set(compressible(rng, 64 * KiB), i * 64 * KiB)
    if (kind === 3) disk.set(randomBytes(rng, 100), i * 64 * KiB + 5000)
  }
  const config = compressible(rng, 3000)

  function opts (over: Partial<EncodeGenerationOptions> = {}): EncodeGenerationOptions {
    return {
      vm: 'web01',
      generation: 3,
      baseGeneration: 2,
      consistent: true,
      createdAtMs: 1_700_000_000_000,
      files: [
        { fileId: 1, path: '/vms/web01.vhdx', size, blockSize: 64 * KiB, kind: FileKind.Disk },
        { fileId: 2, path: '/vms/web01.vmcx', size: config.length, blockSize: 64 * KiB, kind: FileKind.WholeFile, baseSize: 10 }
      ],
      readBlocks: function * (fileId): Generator<ChangedBlock> {
        if (fileId === 2) { yield { offset: 0, data: config }; return }
        for (let i = 0; i < 20; i++) yield { offset: i * 64 * KiB, data: disk.subarray(i * 64 * KiB, (i + 1) * 64 * KiB) }
      },
      maxFramePayloadBytes: 256 * KiB,
      ...over
    }
  }

  /** Rebuilds file contents from frames, decoding and checking every block. */
  function apply (frames: Frame[]): Map<number, Uint8Array> {
    const v = new GenerationValidator()
    const files = new Map<number, Uint8Array>()
    for (const f of frames) {
      v.accept(f)
      if (f.type === 'begin') for (const file of f.files) files.set(file.fileId, new Uint8Array(file.size))
      if (f.type === 'blocks') {
        const target = files.get(f.fileId) as Uint8Array
        const max = v.file(f.fileId)?.blockSize ?? 0
        for (const e of f.entries) target.set(decodeBlock(e, { maxLength: max }), e.offset)
      }
    }
    v.finish()
    return files
  }

  it('produces a generation that survives the wire and rebuilds the files', async () => {
    const bytes = await collect(encodeFrames(encodeGeneration(opts())))
    const frames = await collect(validateFrames(decodeFrames(bytes)))
    assert.deepEqual(frames.map(f => f.type), ['begin', 'blocks', 'blocks', 'blocks', 'blocks', 'blocks', 'resize', 'blocks', 'end'])
    const files = apply(frames)
    assert.ok(Buffer.from(files.get(1) as Uint8Array).equals(Buffer.from(disk)))
    assert.ok(Buffer.from(files.get(2) as Uint8Array).equals(Buffer.from(config)))
    const encodings = frames.flatMap(f => f.type === 'blocks' ? f.entries.map(e => e.encoding) : [])
    for (const enc of [BlockEncoding.Raw, BlockEncoding.Lz4, BlockEncoding.Zero]) assert.ok(encodings.includes(enc))
  })

  it('bounds the raw bytes and entries per frame', async () => {
    const frames = await collect(encodeGeneration(opts({ maxFramePayloadBytes: 200 * KiB })))
    for (const f of frames) {
      if (f.type !== 'blocks') continue
      const raw = f.entries.reduce((n, e) => n + e.length, 0)
      assert.ok(raw <= 200 * KiB, `frame of ${raw} raw bytes`)
    }
    const few = await collect(encodeGeneration(opts({ limits: { maxEntriesPerFrame: 2 } })))
    for (const f of few) if (f.type === 'blocks') assert.ok(f.entries.length <= 2)
    apply(few)
    await rejectsNamed(collect(encodeGeneration(opts({ maxFramePayloadBytes: 9 * 1024 * KiB }))), 'DeltaLimitExceededError')
  })

  it('starts a new frame when offsets go backwards, keeping frames valid', async () => {
    const order = [3, 4, 0, 1, 19, 2]
    const frames = await collect(encodeGeneration(opts({
      readBlocks: function * (fileId) {
        if (fileId !== 1) return
        for (const i of order) yield { offset: i * 64 * KiB, data: disk.subarray(i * 64 * KiB, (i + 1) * 64 * KiB) }
      }
    })))
    const offsets = frames.filter((f): f is BlocksFrame => f.type === 'blocks').map(f => f.entries.map(e => e.offset / (64 * KiB)))
    assert.deepEqual(offsets, [[3, 4], [0, 1, 19], [2]])
  })

  it('keeps block order with an asynchronous encoder finishing out of order', async () => {
    const resolvers: Array<() => void> = []
    let inFlight = 0
    let maxSeen = 0
    const encode = async (raw: Uint8Array): Promise<EncodedBlock> => {
      inFlight++
      maxSeen = Math.max(maxSeen, inFlight)
      await new Promise<void>(resolve => resolvers.push(resolve))
      inFlight--
      return encodeBlock(raw)
    }
    const it = encodeGeneration(opts({ encode, maxInFlight: 3 }))
    const frames: Frame[] = []
    const done = (async () => { for await (const f of it) frames.push(f) })()
    // release the pending encodes newest first, a bounded number of rounds
    for (let round = 0; round < 10_000; round++) {
      await new Promise(resolve => setImmediate(resolve))
      const r = resolvers.splice(0)
      r.reverse().forEach(fn => { fn() })
      if (frames.at(-1)?.type === 'end') break
    }
    await done
    assert.ok(maxSeen >= 2 && maxSeen <= 4, `max in flight ${maxSeen}`)
    const files = apply(frames)
    assert.ok(Buffer.from(files.get(1) as Uint8Array).equals(Buffer.from(disk)))
  })

  it('fails with typed errors on a bad change source or encoder', async () => {
    await rejectsNamed(collect(encodeGeneration(opts({
      readBlocks: function * () { yield { offset: size - 10, data: new Uint8Array(20).fill(1) } }
    }))), 'DeltaOutOfRangeError')
    await rejectsNamed(collect(encodeGeneration(opts({
      readBlocks: function * () { yield { offset: 0, data: new Uint8Array(64 * KiB + 1).fill(1) } }
    }))), 'DeltaBlockTooLargeError')
    await rejectsNamed(collect(encodeGeneration(opts({
      encode: (raw) => ({ ...encodeBlock(raw), length: raw.length + 1 })
    }))), 'DeltaBadEncodingError')
    await rejectsNamed(collect(encodeGeneration(opts({ generation: 2 }))), 'DeltaBadBeginError')
  })

  it('stops with AbortedError when the signal fires', async () => {
    const controller = new AbortController()
    const seen: Frame[] = []
    await rejectsNamed((async () => {
      for await (const f of encodeGeneration(opts({ signal: controller.signal }))) {
        seen.push(f)
        if (f.type === 'blocks') controller.abort()
      }
    })(), 'AbortedError')
    assert.equal(seen.filter(f => f.type === 'blocks').length, 1)
  })
})
