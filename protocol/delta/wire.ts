/**
 * The shared bounded reader and writer (protocol/common) with this codec's errors: a short body
 * is DeltaMalformedFrameError — the frame arrived whole but lies about itself.
 */
import { BoundedReader, type WireReaderErrors } from '../common/wire-reader.ts'
import { WireWriter } from '../common/wire-writer.ts'
import { DeltaLimitExceededError, DeltaMalformedFrameError } from './errors.ts'

const utf8Encoder = new TextEncoder()

const ERRORS: WireReaderErrors = {
  malformed: (message, options) => new DeltaMalformedFrameError(message, options),
  limit: (message) => new DeltaLimitExceededError(message)
}

/** The shared bounded reader, throwing the delta codec's errors. */
export class WireReader extends BoundedReader {
  constructor (buf: Uint8Array, what: string) { super(buf, what, ERRORS) }
}

/**
 * The shared writer (protocol/common) for one frame of a precomputed size: allocated once,
 * and finish() asserts the size was exact.
 */
export class FrameWriter extends WireWriter {
  constructor (private readonly size: number) {
    super('', { error: (message) => new DeltaLimitExceededError(message), initialBytes: size })
  }

  get position (): number { return this.length }

  override finish (): Uint8Array { return super.finish(this.size) }
}

/** UTF-8 bytes of `s`, checked like WireReader.string checks them. */
export function encodeString (s: string, field: string, maxBytes: number): Uint8Array {
  const b = utf8Encoder.encode(s)
  if (b.byteLength > maxBytes) throw new DeltaLimitExceededError(`${field} of ${b.byteLength} bytes exceeds ${maxBytes}`)
  if (b.byteLength === 0) throw new DeltaMalformedFrameError(`empty ${field}`)
  if (b.includes(0)) throw new DeltaMalformedFrameError(`${field} contains NUL`)
  return b
}

export function checkU32 (v: number, field: string): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw new DeltaLimitExceededError(`${field} ${v} is not a u32`)
}

export function checkU64 (v: number, field: string): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new DeltaLimitExceededError(`${field} ${v} is not an integer in [0, 2^53 - 1]`)
}
