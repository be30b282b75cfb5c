/**
 * Bounded big-endian reader (protocol/common, with this codec's errors: a short body is
 * DeltaMalformedFrameError — the frame arrived whole but lies about itself) and the writer for
 * frame bodies.
 */
import { BoundedReader, type WireReaderErrors } from '../common/wire-reader.ts'
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

export class WireWriter {
  private pos = 0
  readonly bytes: Uint8Array
  private readonly view: DataView

  constructor (size: number) {
    this.bytes = new Uint8Array(size)
    this.view = new DataView(this.bytes.buffer)
  }

  u8 (v: number): void { this.view.setUint8(this.pos, v); this.pos += 1 }
  u16 (v: number): void { this.view.setUint16(this.pos, v); this.pos += 2 }
  u32 (v: number): void { this.view.setUint32(this.pos, v); this.pos += 4 }
  u64 (v: number): void { this.view.setBigUint64(this.pos, BigInt(v)); this.pos += 8 }
  raw (b: Uint8Array): void { this.bytes.set(b, this.pos); this.pos += b.byteLength }
  get position (): number { return this.pos }

  /** Asserts the precomputed size was exact (a bug otherwise, not a peer's fault). */
  finish (): Uint8Array {
    if (this.pos !== this.bytes.byteLength) throw new Error(`frame size mismatch: wrote ${this.pos} of ${this.bytes.byteLength}`)
    return this.bytes
  }
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
