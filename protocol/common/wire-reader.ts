/**
 * Bounded big-endian reader for frame bodies, shared by the codecs (delta, replication control).
 * Every read checks the remaining length first: a short body means the frame arrived whole but
 * lies about itself. Each codec passes the error classes of its own family, so a peer's bad
 * bytes always surface as that codec's typed errors.
 */

export interface WireReaderErrors {
  /** The body is inconsistent with its own layout (short fields, trailing bytes, bad UTF-8...). */
  malformed: (message: string, options?: { cause?: unknown }) => Error
  /** A value beyond a limit (string length, u64 above 2^53 - 1). */
  limit: (message: string) => Error
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER)
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

export class BoundedReader {
  private pos = 0
  private readonly view: DataView

  constructor (private readonly buf: Uint8Array, private readonly what: string, private readonly errors: WireReaderErrors) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  }

  get remaining (): number { return this.buf.byteLength - this.pos }

  private need (n: number, field: string): void {
    if (n > this.remaining) throw this.errors.malformed(`${this.what}: ${field} needs ${n} bytes, ${this.remaining} left`)
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
    if (v > MAX_SAFE) throw this.errors.limit(`${this.what}: ${field} ${v} exceeds 2^53 - 1`)
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
    if ((f & ~known) !== 0) throw this.errors.malformed(`${this.what}: reserved bits set in ${field} 0x${f.toString(16)}`)
    return f
  }

  /** u16 length-prefixed UTF-8 without NUL, at most `maxBytes`; empty only when `allowEmpty`. */
  string (field: string, maxBytes: number, allowEmpty = false): string {
    const len = this.u16(`${field} length`)
    if (len > maxBytes) throw this.errors.limit(`${this.what}: ${field} of ${len} bytes exceeds ${maxBytes}`)
    if (len === 0 && !allowEmpty) throw this.errors.malformed(`${this.what}: empty ${field}`)
    const raw = this.bytes(len, field)
    if (raw.includes(0)) throw this.errors.malformed(`${this.what}: ${field} contains NUL`)
    try {
      return utf8Decoder.decode(raw)
    } catch (err) {
      throw this.errors.malformed(`${this.what}: ${field} is not valid UTF-8`, { cause: err })
    }
  }

  /** The body must be fully consumed. */
  end (): void {
    if (this.remaining !== 0) throw this.errors.malformed(`${this.what}: ${this.remaining} trailing bytes`)
  }
}
