/**
 * Checks that a sequence of frames forms one valid generation, frame by frame, before the receiver
 * applies anything: begin first (unique files, sane sizes), then blocks and resizes for declared
 * files within their bounds, then an end whose counts (and digest, when present) match what came.
 *
 * The digest is BLAKE3-128 over one 33-byte record per block entry and per resize, in stream
 * order: kind u8 (1 block, 2 resize) | fileId u32 | offset-or-size u64 | length u32 | checksum[16]
 * (length 0 and a zero checksum for resizes), integers big-endian. It proves the receiver saw the
 * exact set of blocks the sender meant, not merely the same number.
 *
 * Memory is O(files), never O(blocks): overlap is checked within a frame (entries ascending), not
 * across frames; a later frame rewriting a range simply wins.
 */
import { createBlake3, type Blake3Hasher } from '../../common/blake3.ts'
import { CHECKSUM_LENGTH } from './block.ts'
import { FileKind } from './messages.ts'
import type { BeginFrame, BlocksFrame, DeltaFile, EndFrame, Frame, ResizeFrame } from './messages.ts'
import { resolveLimits } from './limits.ts'
import type { DeltaLimits } from './limits.ts'
import {
  DeltaBadBeginError,
  DeltaBlockTooLargeError,
  DeltaCountMismatchError,
  DeltaDigestMismatchError,
  DeltaGenerationMismatchError,
  DeltaIncompleteError,
  DeltaLimitExceededError,
  DeltaMalformedFrameError,
  DeltaOutOfRangeError,
  DeltaOverlapError,
  DeltaProtocolError,
  DeltaResizeMismatchError,
  DeltaSequenceError,
  DeltaUnknownFileError
} from './errors.ts'

const RECORD_BYTES = 1 + 4 + 8 + 4 + CHECKSUM_LENGTH
const RECORD_BLOCK = 1
const RECORD_RESIZE = 2

export type GenerationPhase = 'awaiting-begin' | 'receiving' | 'complete' | 'failed'

/** What a complete generation was: its begin frame's fields and its totals. */
export interface GenerationSummary extends Omit<BeginFrame, 'type'> {
  blockCount: number
  byteCount: number
  digest: Uint8Array
}

export interface GenerationValidatorInit {
  limits?: Partial<DeltaLimits>
}

interface FileState {
  file: DeltaFile
  resized: boolean
}

export class GenerationValidator {
  private readonly limits: DeltaLimits
  private phaseValue: GenerationPhase = 'awaiting-begin'
  private beginFrame: BeginFrame | undefined
  private readonly files = new Map<number, FileState>()
  private hasher: Blake3Hasher | undefined
  private blocks = 0
  private bytes = 0
  private failure: DeltaProtocolError | undefined
  private finalDigest: Uint8Array | undefined

  constructor (init: GenerationValidatorInit = {}) {
    this.limits = resolveLimits(init.limits)
  }

  get phase (): GenerationPhase { return this.phaseValue }
  get begin (): BeginFrame | undefined { return this.beginFrame }
  get blockCount (): number { return this.blocks }
  get byteCount (): number { return this.bytes }

  /** The declared file, or undefined. */
  file (fileId: number): DeltaFile | undefined { return this.files.get(fileId)?.file }

  /** Digest of the blocks and resizes accepted so far (what an end frame should carry). */
  digest (): Uint8Array {
    if (this.finalDigest != null) return new Uint8Array(this.finalDigest)
    if (this.hasher == null) throw new DeltaSequenceError('no generation begun')
    return this.hasher.digest(CHECKSUM_LENGTH)
  }

  /**
   * Checks the next frame; throws a DeltaProtocolError subclass when it cannot follow what came
   * before. After a failure every call throws that first error again, so nothing of a bad stream
   * can slip through a swallowed exception.
   */
  accept (frame: Frame): void {
    if (this.failure != null) throw this.failure
    try {
      switch (frame.type) {
        case 'begin': this.onBegin(frame); break
        case 'blocks': this.onBlocks(frame); break
        case 'resize': this.onResize(frame); break
        case 'end': this.onEnd(frame); break
        default: throw new DeltaMalformedFrameError(`unknown frame ${String((frame as { type: unknown }).type)}`)
      }
    } catch (err) {
      if (err instanceof DeltaProtocolError) {
        this.failure = err
        this.phaseValue = 'failed'
        this.hasher?.dispose()
        this.hasher = undefined
      }
      throw err
    }
  }

  /** The summary of a complete generation; DeltaIncompleteError before its end frame. */
  finish (): GenerationSummary {
    if (this.failure != null) throw this.failure
    const b = this.beginFrame
    if (this.phaseValue !== 'complete' || b == null) throw new DeltaIncompleteError(`generation not complete (${this.phaseValue})`)
    return {
      vm: b.vm,
      generation: b.generation,
      baseGeneration: b.baseGeneration,
      consistent: b.consistent,
      createdAtMs: b.createdAtMs,
      files: b.files,
      blockCount: this.blocks,
      byteCount: this.bytes,
      digest: this.digest()
    }
  }

  private onBegin (frame: BeginFrame): void {
    if (this.phaseValue !== 'awaiting-begin') throw new DeltaSequenceError(`begin while ${this.phaseValue}`)
    if (!(frame.generation > frame.baseGeneration)) {
      throw new DeltaBadBeginError(`generation ${frame.generation} not above base ${frame.baseGeneration}`)
    }
    if (frame.files.length > this.limits.maxFilesPerGeneration) {
      throw new DeltaLimitExceededError(`${frame.files.length} files exceeds ${this.limits.maxFilesPerGeneration}`)
    }
    const paths = new Set<string>()
    for (const f of frame.files) {
      if (this.files.has(f.fileId)) throw new DeltaBadBeginError(`duplicate fileId ${f.fileId}`)
      if (paths.has(f.path)) throw new DeltaBadBeginError('duplicate path')
      if (!Number.isInteger(f.blockSize) || f.blockSize < 1 || f.blockSize > this.limits.maxBlockLength) {
        throw new DeltaBadBeginError(`file ${f.fileId}: blockSize ${f.blockSize} outside [1, ${this.limits.maxBlockLength}]`)
      }
      if (!Number.isSafeInteger(f.size) || f.size < 0) throw new DeltaBadBeginError(`file ${f.fileId}: bad size ${f.size}`)
      if (f.kind !== FileKind.Disk && f.kind !== FileKind.WholeFile) throw new DeltaBadBeginError(`file ${f.fileId}: unknown kind`)
      paths.add(f.path)
      this.files.set(f.fileId, { file: f, resized: false })
    }
    this.beginFrame = frame
    this.hasher?.dispose()
    this.hasher = createBlake3()
    this.phaseValue = 'receiving'
  }

  private fileFor (fileId: number, what: string): FileState {
    if (this.phaseValue !== 'receiving') throw new DeltaSequenceError(`${what} while ${this.phaseValue}`)
    const state = this.files.get(fileId)
    if (state == null) throw new DeltaUnknownFileError(`${what} for undeclared fileId ${fileId}`)
    return state
  }

  private onBlocks (frame: BlocksFrame): void {
    const { file } = this.fileFor(frame.fileId, 'blocks')
    const n = frame.entries.length
    if (n === 0) throw new DeltaMalformedFrameError('blocks frame without entries')
    if (n > this.limits.maxEntriesPerFrame) throw new DeltaLimitExceededError(`${n} entries exceeds ${this.limits.maxEntriesPerFrame}`)
    const records = new Uint8Array(n * RECORD_BYTES)
    const view = new DataView(records.buffer)
    let prevEnd = -1
    let frameRaw = 0
    let at = 0
    for (const e of frame.entries) {
      if (!Number.isSafeInteger(e.offset) || e.offset < 0) throw new DeltaOutOfRangeError(`bad offset ${e.offset}`)
      if (!Number.isInteger(e.length) || e.length < 1 || e.length > file.blockSize) {
        throw new DeltaBlockTooLargeError(`file ${file.fileId}: block of ${e.length} bytes, blockSize ${file.blockSize}`)
      }
      if (e.offset + e.length > file.size) {
        throw new DeltaOutOfRangeError(`file ${file.fileId}: block [${e.offset}, +${e.length}) past size ${file.size}`)
      }
      if (e.offset < prevEnd) throw new DeltaOverlapError(`file ${file.fileId}: block at ${e.offset} overlaps or precedes the previous one`)
      if (e.checksum.byteLength !== CHECKSUM_LENGTH) throw new DeltaMalformedFrameError(`checksum of ${e.checksum.byteLength} bytes`)
      prevEnd = e.offset + e.length
      frameRaw += e.length
      view.setUint8(at, RECORD_BLOCK)
      view.setUint32(at + 1, frame.fileId)
      view.setBigUint64(at + 5, BigInt(e.offset))
      view.setUint32(at + 13, e.length)
      records.set(e.checksum, at + 17)
      at += RECORD_BYTES
    }
    if (frameRaw > this.limits.maxFrameRawBytes) throw new DeltaLimitExceededError(`${frameRaw} raw bytes in one frame exceeds ${this.limits.maxFrameRawBytes}`)
    // counts only move once the whole frame passed
    this.hasher?.update(records)
    this.blocks += n
    this.bytes += frameRaw
  }

  private onResize (frame: ResizeFrame): void {
    const state = this.fileFor(frame.fileId, 'resize')
    if (state.resized) throw new DeltaResizeMismatchError(`second resize for file ${frame.fileId}`)
    if (frame.size !== state.file.size) {
      throw new DeltaResizeMismatchError(`resize of file ${frame.fileId} to ${frame.size}, begin declared ${state.file.size}`)
    }
    state.resized = true
    const record = new Uint8Array(RECORD_BYTES)
    const view = new DataView(record.buffer)
    view.setUint8(0, RECORD_RESIZE)
    view.setUint32(1, frame.fileId)
    view.setBigUint64(5, BigInt(frame.size))
    this.hasher?.update(record)
  }

  private onEnd (frame: EndFrame): void {
    const b = this.beginFrame
    if (this.phaseValue !== 'receiving' || b == null) throw new DeltaSequenceError(`end while ${this.phaseValue}`)
    if (frame.generation !== b.generation) throw new DeltaGenerationMismatchError(`end of generation ${frame.generation}, begin was ${b.generation}`)
    if (frame.blockCount !== this.blocks || frame.byteCount !== this.bytes) {
      throw new DeltaCountMismatchError(`end declares ${frame.blockCount} blocks / ${frame.byteCount} bytes, received ${this.blocks} / ${this.bytes}`)
    }
    const digest = this.digest()
    if (frame.digest != null && Buffer.compare(digest, frame.digest) !== 0) throw new DeltaDigestMismatchError('generation digest mismatch')
    this.finalDigest = digest
    this.hasher?.dispose()
    this.hasher = undefined
    this.phaseValue = 'complete'
  }
}

export interface ValidateFramesOptions extends GenerationValidatorInit {
  /** Called with each completed generation's summary, before its end frame is yielded. */
  onGeneration?: (summary: GenerationSummary) => void
}

/**
 * Passes frames through once validated, for streams carrying generations back to back. An end
 * frame is yielded only after the whole generation checked out, so a receiver may stage
 * everything before it and commit on end. Throws DeltaIncompleteError if the source stops inside
 * a generation.
 */
export async function * validateFrames (source: AsyncIterable<Frame> | Iterable<Frame>, options: ValidateFramesOptions = {}): AsyncGenerator<Frame, void, undefined> {
  let validator = new GenerationValidator(options)
  for await (const frame of source) {
    validator.accept(frame)
    if (validator.phase === 'complete') {
      options.onGeneration?.(validator.finish())
      validator = new GenerationValidator(options)
    }
    yield frame
  }
  if (validator.phase !== 'awaiting-begin') throw new DeltaIncompleteError(`stream ended while ${validator.phase}`)
}
