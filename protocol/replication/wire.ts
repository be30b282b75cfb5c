/**
 * Bounded big-endian reader (protocol/common, with this codec's errors: a short body is
 * ReplicationMalformedFrameError — the frame arrived whole but lies about itself) and growable
 * writer for control bodies; the writer validates values as it writes them, throwing
 * ReplicationEncodeError, so we never emit what a peer must refuse.
 */
import { BoundedReader, type WireReaderErrors } from '../common/wire-reader.ts'
import { ReplicationEncodeError, ReplicationLimitExceededError, ReplicationMalformedFrameError } from './errors.ts'

const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })
const utf8Encoder = new TextEncoder()

const ERRORS: WireReaderErrors = {
  malformed: (message, options) => new ReplicationMalformedFrameError(message, options),
  limit: (message) => new ReplicationLimitExceededError(message)
}

/** The shared bounded reader, throwing the replication codec's errors. */
export class Reader extends BoundedReader {
  constructor (buf: Uint8Array, what: string) { super(buf, what, ERRORS) }
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
