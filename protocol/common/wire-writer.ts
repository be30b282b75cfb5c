/**
 * Big-endian writer for message bodies, shared by the codecs (delta, replication control,
 * membership, election). It checks every value as it writes it and throws the codec's own encode
 * error, so we never emit what a peer must refuse; it grows by doubling, up to an optional
 * ceiling. The counterpart of BoundedReader (wire-reader.ts).
 */

export interface WireWriterOptions {
  /** The codec's error for a value the wire cannot carry (our bug, not a peer's). */
  error: (message: string) => Error
  /** Capacity allocated up front; a codec that knows the exact size passes it. @default 64 */
  initialBytes?: number
  /** Most bytes one message may take; writing past it throws `error`. @default unlimited */
  maxBytes?: number
}

const utf8Encoder = new TextEncoder()
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

export class WireWriter {
  private buf: Uint8Array
  private view: DataView
  private len = 0
  private readonly maxBytes: number
  private readonly error: (message: string) => Error

  /** @param what names the message in error texts ("hello: vm is empty"); '' for none. */
  constructor (private readonly what: string, options: WireWriterOptions) {
    this.error = options.error
    this.maxBytes = options.maxBytes ?? Number.MAX_SAFE_INTEGER
    this.buf = new Uint8Array(Math.max(1, options.initialBytes ?? 64))
    this.view = new DataView(this.buf.buffer)
  }

  /** Throws the codec's encode error for `field`. */
  fail (field: string, why: string): never {
    throw this.error(`${this.what !== '' ? `${this.what}: ` : ''}${field} ${why}`)
  }

  private reserve (n: number): void {
    if (this.len + n > this.maxBytes) throw this.error(`${this.what !== '' ? `${this.what}: ` : ''}message exceeds ${this.maxBytes} bytes`)
    if (this.len + n <= this.buf.byteLength) return
    const next = new Uint8Array(Math.min(this.maxBytes, Math.max(this.buf.byteLength * 2, this.len + n)))
    next.set(this.buf.subarray(0, this.len))
    this.buf = next
    this.view = new DataView(next.buffer)
  }

  u8 (v: number, field = 'u8'): void {
    if (!Number.isInteger(v) || v < 0 || v > 0xff) this.fail(field, `${String(v)} is not a u8`)
    this.reserve(1); this.view.setUint8(this.len, v); this.len += 1
  }

  u16 (v: number, field = 'u16'): void {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff) this.fail(field, `${String(v)} is not a u16`)
    this.reserve(2); this.view.setUint16(this.len, v); this.len += 2
  }

  u32 (v: number, field = 'u32'): void {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) this.fail(field, `${String(v)} is not a u32`)
    this.reserve(4); this.view.setUint32(this.len, v); this.len += 4
  }

  /** A u64 holding a JS number exactly (0 ≤ v ≤ 2^53 - 1). */
  u64 (v: number, field = 'u64'): void {
    if (!Number.isSafeInteger(v) || v < 0) this.fail(field, `${String(v)} is not an integer in [0, 2^53 - 1]`)
    this.reserve(8); this.view.setBigUint64(this.len, BigInt(v)); this.len += 8
  }

  /** Unsigned LEB128, canonical (no overlong form), up to 2^53 - 1. */
  varint (v: number, field = 'varint'): void {
    if (!Number.isSafeInteger(v) || v < 0) this.fail(field, `${String(v)} is not an integer in [0, 2^53 - 1]`)
    let x = v
    while (x >= 0x80) {
      this.u8((x % 0x80) | 0x80)
      x = Math.floor(x / 0x80)
    }
    this.u8(x)
  }

  raw (b: Uint8Array): void {
    this.reserve(b.byteLength); this.buf.set(b, this.len); this.len += b.byteLength
  }

  /**
   * A length-prefixed UTF-8 string, checked like BoundedReader.string checks it: at most
   * `maxBytes` bytes, at least `minBytes`, no NUL unless allowed, well-formed Unicode (a lone
   * surrogate would be replaced by U+FFFD and not round-trip).
   */
  string (s: string, field: string, opts: { maxBytes: number, minBytes?: number, prefix?: 'u8' | 'u16', allowNul?: boolean }): void {
    if (typeof s !== 'string') this.fail(field, 'is not a string')
    const b = utf8Encoder.encode(s)
    const min = opts.minBytes ?? 1
    if (b.byteLength > opts.maxBytes) this.fail(field, `of ${b.byteLength} bytes exceeds ${opts.maxBytes}`)
    if (b.byteLength < min) this.fail(field, min === 1 ? 'is empty' : `of ${b.byteLength} bytes is under ${min}`)
    if (opts.allowNul !== true && b.includes(0)) this.fail(field, 'contains NUL')
    if (utf8Decoder.decode(b) !== s) this.fail(field, 'is not well-formed Unicode')
    if (opts.prefix === 'u8') this.u8(b.byteLength, `${field} length`)
    else this.u16(b.byteLength, `${field} length`)
    this.raw(b)
  }

  /** Bytes written so far. */
  get length (): number { return this.len }

  /** The internal buffer (valid until the next write that grows it). */
  get bytes (): Uint8Array { return this.buf }

  /**
   * The bytes written (a view of the internal buffer). With `expectedBytes`, asserts that a
   * precomputed size was exact (a bug otherwise, not a peer's fault).
   */
  finish (expectedBytes?: number): Uint8Array {
    if (expectedBytes !== undefined && this.len !== expectedBytes) throw new Error(`frame size mismatch: wrote ${this.len} of ${expectedBytes}`)
    return this.buf.subarray(0, this.len)
  }
}
