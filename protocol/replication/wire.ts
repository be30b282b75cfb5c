/**
 * Bounded big-endian reader and growable writer for control bodies. The reader checks the
 * remaining length before every read (a short body is ReplicationMalformedFrameError: the frame
 * arrived whole but lies about itself); the writer validates values as it writes them, throwing
 * ReplicationEncodeError, so we never emit what a peer must refuse.
 */
import { ReplicationEncodeError, ReplicationLimitExceededError, ReplicationMalformedFrameError } from './errors.ts'

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER)
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })
const utf8Encoder = new TextEncoder()

export class Reader {
  private pos = 0
  private readonly view: DataView

  constructor (private readonly buf: Uint8Array, private readonly what: string) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  }

  get remaining (): number { return this.buf.byteLength - this.pos }

  private need (n: number, field: string): void {
    if (n > this.remaining) throw new ReplicationMalformedFrameError(`${this.what}: ${field} needs ${n} bytes, ${this.remaining} left`)
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
    if (v > MAX_SAFE) throw new ReplicationLimitExceededError(`${this.what}: ${field} ${v} exceeds 2^53 - 1`)
    return Number(v)
  }

  /** A view of the next `n` bytes (no copy). */
  bytes (n: number, field: string): Uint8Array {
    this.need(n, field)
    const out = this.buf.subarray(this.pos, this.pos + n)
    this.pos += n
    return out
  }

  /** Flags byte whose bits outside `known` must be zero. */
  flags (field: string, known: number): number {
    const f = this.u8(field)
    if ((f & ~known) !== 0) throw new ReplicationMalformedFrameError(`${this.what}: reserved bits set in ${field} 0x${f.toString(16)}`)
    return f
  }

  /** u16 length-prefixed UTF-8 without NUL, at most `maxBytes`; empty only when `allowEmpty`. */
  string (field: string, maxBytes: number, allowEmpty = false): string {
    const len = this.u16(`${field} length`)
    if (len > maxBytes) throw new ReplicationLimitExceededError(`${this.what}: ${field} of ${len} bytes exceeds ${maxBytes}`)
    if (len === 0 && !allowEmpty) throw new ReplicationMalformedFrameError(`${this.what}: empty ${field}`)
    const raw = this.bytes(len, field)
    if (raw.includes(0)) throw new ReplicationMalformedFrameError(`${this.what}: ${field} contains NUL`)
    try {
      return utf8Decoder.decode(raw)
    } catch (err) {
      throw new ReplicationMalformedFrameError(`${this.what}: ${field} is not valid UTF-8`, { cause: err })
    }
  }

  /** The body must be fully consumed. */
  end (): void {
    if (this.remaining !== 0) throw new ReplicationMalformedFrameError(`${this.what}: ${this.remaining} trailing bytes`)
  }
}

export class Writer {
  private buf: Uint8Array
  private view: DataView
  private len = 0

  constructor (private readonly what: string, initial = 64) {
    this.buf = new Uint8Array(initial)
    this.view = new DataView(this.buf.buffer)
  }

  private reserve (n: number): void {
    if (this.len + n <= this.buf.byteLength) return
    const next = new Uint8Array(Math.max(this.buf.byteLength * 2, this.len + n))
    next.set(this.buf.subarray(0, this.len))
    this.buf = next
    this.view = new DataView(next.buffer)
  }

  private fail (field: string, why: string): never {
    throw new ReplicationEncodeError(`${this.what}: ${field} ${why}`)
  }

  u8 (v: number, field: string): void {
    if (!Number.isInteger(v) || v < 0 || v > 0xff) this.fail(field, `${String(v)} is not a u8`)
    this.reserve(1); this.view.setUint8(this.len, v); this.len += 1
  }

  u16 (v: number, field: string): void {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff) this.fail(field, `${String(v)} is not a u16`)
    this.reserve(2); this.view.setUint16(this.len, v); this.len += 2
  }

  u32 (v: number, field: string): void {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) this.fail(field, `${String(v)} is not a u32`)
    this.reserve(4); this.view.setUint32(this.len, v); this.len += 4
  }

  u64 (v: number, field: string): void {
    if (!Number.isSafeInteger(v) || v < 0) this.fail(field, `${String(v)} is not an integer in [0, 2^53 - 1]`)
    this.reserve(8); this.view.setBigUint64(this.len, BigInt(v)); this.len += 8
  }

  raw (b: Uint8Array): void {
    this.reserve(b.byteLength); this.buf.set(b, this.len); this.len += b.byteLength
  }

  /** Checked like Reader.string checks it. */
  string (s: string, field: string, maxBytes: number, allowEmpty = false): void {
    if (typeof s !== 'string') this.fail(field, 'is not a string')
    const b = utf8Encoder.encode(s)
    if (b.byteLength > maxBytes) this.fail(field, `of ${b.byteLength} bytes exceeds ${maxBytes}`)
    if (b.byteLength === 0 && !allowEmpty) this.fail(field, 'is empty')
    if (b.includes(0)) this.fail(field, 'contains NUL')
    // lone surrogates would be replaced by U+FFFD and not round-trip
    if (utf8Decoder.decode(b) !== s) this.fail(field, 'is not well-formed Unicode')
    this.u16(b.byteLength, `${field} length`)
    this.raw(b)
  }

  get length (): number { return this.len }

  /** The bytes written (a view of the internal buffer). */
  finish (): Uint8Array { return this.buf.subarray(0, this.len) }
}
