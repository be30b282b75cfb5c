/**
 * Bounded big-endian readers and writers for frame bodies. Every read checks the remaining length
 * first; a short body is DeltaMalformedFrameError (the frame arrived whole but lies about itself).
 */
import { DeltaLimitExceededError, DeltaMalformedFrameError } from './errors.ts'

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER)
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })
const utf8Encoder = new TextEncoder()

export class WireReader {
  private pos = 0
  private readonly view: DataView

  constructor (private readonly buf: Uint8Array, private readonly what: string) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  }

  get remaining (): number { return this.buf.byteLength - this.pos }

  private need (n: number, field: string): void {
    if (n > this.remaining) throw new DeltaMalformedFrameError(`${this.what}: ${field} needs ${n} bytes, ${this.remaining} left`)
  }

  u8 (field: string): number {
    this.need(1, field)
    return this.view.getUint8(this.pos++)
  }

  u16 (field: string): number {
    this.need(2, field)
    const v = this.view.getUint16(this.pos)
    this.pos += 2
    return v
  }

  u32 (field: string): number {
    this.need(4, field)
    const v = this.view.getUint32(this.pos)
    this.pos += 4
    return v
  }

  /** A u64 that must fit a JS number exactly. */
  u64 (field: string): number {
    this.need(8, field)
    const v = this.view.getBigUint64(this.pos)
    this.pos += 8
    if (v > MAX_SAFE) throw new DeltaLimitExceededError(`${this.what}: ${field} ${v} exceeds 2^53 - 1`)
    return Number(v)
  }

  /** A view of the next `n` bytes (no copy). */
  bytes (n: number, field: string): Uint8Array {
    this.need(n, field)
    const out = this.buf.subarray(this.pos, this.pos + n)
    this.pos += n
    return out
  }

  /** u16 length-prefixed UTF-8, non-empty, no NUL, at most `maxBytes`. */
  string (field: string, maxBytes: number): string {
    const len = this.u16(`${field} length`)
    if (len > maxBytes) throw new DeltaLimitExceededError(`${this.what}: ${field} of ${len} bytes exceeds ${maxBytes}`)
    if (len === 0) throw new DeltaMalformedFrameError(`${this.what}: empty ${field}`)
    const raw = this.bytes(len, field)
    if (raw.includes(0)) throw new DeltaMalformedFrameError(`${this.what}: ${field} contains NUL`)
    try {
      return utf8Decoder.decode(raw)
    } catch (err) {
      throw new DeltaMalformedFrameError(`${this.what}: ${field} is not valid UTF-8`, { cause: err })
    }
  }

  /** The body must be fully consumed. */
  end (): void {
    if (this.remaining !== 0) throw new DeltaMalformedFrameError(`${this.what}: ${this.remaining} trailing bytes`)
  }
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
