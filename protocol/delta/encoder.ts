/**
 * Turns one generation of changed blocks into frames: begin, per file an optional resize and its
 * blocks batched into frames of bounded raw size, then end with counts and digest. Blocks are
 * encoded through `encode` (in this thread by default, or a worker pool) with a bounded window of
 * encodes in flight, order preserved. Every frame passes a GenerationValidator before it is
 * yielded, so a bad change source fails here instead of at the peer.
 */
import { AbortedError } from '../../common/errors.ts'
import { encodeBlock } from './block.ts'
import type { EncodedBlock } from './block.ts'
import { blocksBodyBytes } from './codec.ts'
import { GenerationValidator } from './generation.ts'
import { resolveLimits } from './limits.ts'
import type { DeltaLimits } from './limits.ts'
import type { BlockEntry, DeltaFile, Frame } from './messages.ts'
import { DeltaBadEncodingError, DeltaLimitExceededError } from './errors.ts'

export interface GenerationFileSource extends DeltaFile {
  /** Size at the base generation; when given and different from `size`, a resize frame is sent. */
  baseSize?: number
}

export interface ChangedBlock {
  offset: number
  /** Raw content; must not be reused or modified after being yielded. */
  data: Uint8Array
}

export interface EncodeGenerationOptions {
  vm: string
  generation: number
  baseGeneration: number
  consistent: boolean
  /** Wall-clock epoch ms at capture. */
  createdAtMs: number
  files: GenerationFileSource[]
  /** The changed blocks of one file, each at most its blockSize and within its size. */
  readBlocks: (fileId: number, signal?: AbortSignal) => AsyncIterable<ChangedBlock> | Iterable<ChangedBlock>
  /** Block encoder, e.g. a worker pool running encodeBlock. @default encodeBlock in this thread */
  encode?: (raw: Uint8Array) => EncodedBlock | Promise<EncodedBlock>
  /** Raw bytes per blocks frame (a single larger block still travels alone). @default 4 MiB */
  maxFramePayloadBytes?: number
  /** Encodes started ahead of the one being batched. @default 4 */
  maxInFlight?: number
  signal?: AbortSignal
  limits?: Partial<DeltaLimits>
}

const MiB = 1024 * 1024

export async function * encodeGeneration (opts: EncodeGenerationOptions): AsyncGenerator<Frame, void, undefined> {
  const limits = resolveLimits(opts.limits)
  const maxRaw = opts.maxFramePayloadBytes ?? 4 * MiB
  if (!Number.isSafeInteger(maxRaw) || maxRaw < 1 || maxRaw > limits.maxFrameRawBytes) {
    throw new DeltaLimitExceededError(`maxFramePayloadBytes ${maxRaw} outside [1, ${limits.maxFrameRawBytes}]`)
  }
  const maxInFlight = Math.max(1, Math.floor(opts.maxInFlight ?? 4))
  const encode = opts.encode ?? encodeBlock
  const { signal } = opts
  const validator = new GenerationValidator({ limits })
  const checked = (frame: Frame): Frame => { validator.accept(frame); return frame }

  throwIfAborted(signal)
  yield checked({
    type: 'begin',
    vm: opts.vm,
    generation: opts.generation,
    baseGeneration: opts.baseGeneration,
    consistent: opts.consistent,
    createdAtMs: opts.createdAtMs,
    files: opts.files.map(({ fileId, path, size, blockSize, kind }) => ({ fileId, path, size, blockSize, kind }))
  })

  for (const file of opts.files) {
    if (file.baseSize !== undefined && file.baseSize !== file.size) {
      yield checked({ type: 'resize', fileId: file.fileId, size: file.size })
    }
    const pending: Array<{ offset: number, length: number, result: Promise<EncodedBlock> }> = []
    let batch: BlockEntry[] = []
    let batchRaw = 0
    let batchPayload = 0
    let batchEnd = -1

    // adds one encoded block, returning a full frame when the block does not fit the batch
    const add = (entry: BlockEntry): Frame | undefined => {
      let full: Frame | undefined
      const fits = batch.length < limits.maxEntriesPerFrame &&
        batchRaw + entry.length <= maxRaw &&
        blocksBodyBytes(batch.length + 1, batchPayload + entry.payload.byteLength) <= limits.maxFrameBodyBytes &&
        entry.offset >= batchEnd
      if (batch.length > 0 && !fits) {
        full = { type: 'blocks', fileId: file.fileId, entries: batch }
        batch = []; batchRaw = 0; batchPayload = 0
      }
      batch.push(entry)
      batchRaw += entry.length
      batchPayload += entry.payload.byteLength
      batchEnd = entry.offset + entry.length
      return full
    }
    const settle = async (): Promise<Frame | undefined> => {
      const next = pending.shift()
      if (next == null) return undefined
      const block = await next.result
      throwIfAborted(signal)
      if (block.length !== next.length) throw new DeltaBadEncodingError(`encoder returned ${block.length} bytes for a ${next.length}-byte block`)
      return add({ ...block, offset: next.offset })
    }

    try {
      for await (const { offset, data } of opts.readBlocks(file.fileId, signal)) {
        throwIfAborted(signal)
        // the length is read before encode: a worker pool may transfer (detach) `data`
        const length = data.byteLength
        const result = Promise.resolve().then(() => encode(data))
        result.catch(() => {}) // awaited in order below; avoid unhandled rejections meanwhile
        pending.push({ offset, length, result })
        if (pending.length > maxInFlight) {
          const frame = await settle()
          if (frame != null) yield checked(frame)
        }
      }
      while (pending.length > 0) {
        const frame = await settle()
        if (frame != null) yield checked(frame)
      }
    } finally {
      pending.length = 0
    }
    if (batch.length > 0) yield checked({ type: 'blocks', fileId: file.fileId, entries: batch })
  }

  throwIfAborted(signal)
  yield checked({ type: 'end', generation: opts.generation, blockCount: validator.blockCount, byteCount: validator.byteCount, digest: validator.digest() })
}

function throwIfAborted (signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw new AbortedError('generation encoding aborted', { cause: signal.reason })
}
