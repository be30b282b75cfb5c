/**
 * The frame assembler shared by the framed protocols (delta, replication): chunks split anywhere
 * in, whole frames out. Every frame is `type u8 | bodyLength u32 | body`.
 *
 * Flow: the 5-byte header is judged by the protocol's `checkHeader` the moment it is complete
 * (and the type byte alone as soon as it arrives), so a hostile length never causes buffering;
 * a body then grows geometrically up to its declared length, so memory follows what actually
 * arrived; a frame wholly inside one chunk is decoded in place (items may hold views into the
 * chunk). After a protocol error the assembler is poisoned and rethrows that error.
 *
 * `abortable` and `decodeFramed` put an assembler on an async byte source with an AbortSignal.
 */
import type { Uint8ArrayList } from 'uint8arraylist'
import { AbortedError } from '../../common/errors.ts'

export const FRAME_HEADER_BYTES = 5

const INITIAL_BODY_CAPACITY = 64 * 1024

/** What a protocol tells the assembler: how to judge a header, decode a body, name its errors. */
export interface FrameProtocol<T> {
  /** Throws the protocol's unknown-frame error unless `type` is a frame type it knows. */
  checkType: (type: number) => void
  /** Throws the protocol's typed error when a body of `bodyLength` bytes may not be buffered. */
  checkHeader: (type: number, bodyLength: number) => void
  /** Decodes a body whose header passed checkHeader. */
  decodeBody: (type: number, body: Uint8Array) => T
  /** The error for input that ends inside a frame. */
  truncated: (message: string) => Error
  /** The error for bytes after a whole frame where exactly one was expected. */
  malformed: (message: string) => Error
  /** True for the errors that poison the assembler (a peer's bad bytes; not our own bugs). */
  isProtocolError: (err: unknown) => err is Error
}

export class FrameAssembler<T> {
  private readonly header = new Uint8Array(FRAME_HEADER_BYTES)
  private headerFill = 0
  private type: number | undefined
  private bodyLength = 0
  private body: Uint8Array | undefined
  private bodyFill = 0
  private failure: Error | undefined
  private peak = 0

  constructor (private readonly protocol: FrameProtocol<T>) {}

  /** Bytes held for a frame not yet complete. */
  get bufferedBytes (): number { return this.headerFill + this.bodyFill }

  /** Largest body buffer this assembler has allocated (never above a declared, accepted length). */
  get peakAllocation (): number { return this.peak }

  /**
   * Feeds a chunk; returns the items it completed, in order. After a protocol error the assembler
   * is poisoned: every later call throws that error again.
   */
  push (chunk: Uint8Array | Uint8ArrayList): T[] {
    if (this.failure != null) throw this.failure
    const out: T[] = []
    try {
      if (chunk instanceof Uint8Array) this.consume(chunk, out)
      else for (const buf of chunk) this.consume(buf, out)
    } catch (err) {
      if (this.protocol.isProtocolError(err)) this.failure = err
      throw err
    }
    return out
  }

  /** Declares the end of input; throws the protocol's truncated error when it stopped inside a frame. */
  end (): void {
    if (this.failure != null) throw this.failure
    if (this.headerFill > 0 || this.type !== undefined) {
      this.failure = this.protocol.truncated(`input ended inside a frame (${this.bufferedBytes} bytes buffered)`)
      throw this.failure
    }
  }

  private consume (buf: Uint8Array, out: T[]): void {
    const p = this.protocol
    let pos = 0
    // each pass consumes at least one byte or completes a frame
    while (pos < buf.byteLength) {
      if (this.type === undefined) {
        if (this.headerFill === 0 && buf.byteLength - pos >= FRAME_HEADER_BYTES) {
          const type = buf[pos] as number
          p.checkType(type)
          const bodyLength = readU32(buf, pos + 1)
          p.checkHeader(type, bodyLength)
          pos += FRAME_HEADER_BYTES
          if (buf.byteLength - pos >= bodyLength) {
            out.push(p.decodeBody(type, buf.subarray(pos, pos + bodyLength)))
            pos += bodyLength
          } else {
            this.startBody(type, bodyLength)
          }
          continue
        }
        const b = buf[pos++] as number
        if (this.headerFill === 0) p.checkType(b)
        this.header[this.headerFill++] = b
        if (this.headerFill === FRAME_HEADER_BYTES) {
          this.headerFill = 0
          const type = this.header[0] as number
          const bodyLength = readU32(this.header, 1)
          p.checkHeader(type, bodyLength)
          if (bodyLength === 0) out.push(p.decodeBody(type, new Uint8Array(0)))
          else this.startBody(type, bodyLength)
        }
        continue
      }
      const take = Math.min(this.bodyLength - this.bodyFill, buf.byteLength - pos)
      const body = this.reserve(this.bodyFill + take)
      body.set(buf.subarray(pos, pos + take), this.bodyFill)
      this.bodyFill += take
      pos += take
      if (this.bodyFill === this.bodyLength) {
        const type = this.type
        this.type = undefined
        this.body = undefined
        this.bodyFill = 0
        out.push(p.decodeBody(type, body.subarray(0, this.bodyLength)))
      }
    }
  }

  private startBody (type: number, bodyLength: number): void {
    this.type = type
    this.bodyLength = bodyLength
    this.bodyFill = 0
    this.body = undefined
  }

  /** The body buffer with room for `needed` bytes, doubled as data arrives, never past the declared length. */
  private reserve (needed: number): Uint8Array {
    const cur = this.body
    if (cur != null && cur.byteLength >= needed) return cur
    const cap = Math.min(this.bodyLength, Math.max(needed, INITIAL_BODY_CAPACITY, (cur?.byteLength ?? 0) * 2))
    const next = new Uint8Array(cap)
    if (cur != null) next.set(cur.subarray(0, this.bodyFill))
    this.body = next
    if (cap > this.peak) this.peak = cap
    return next
  }
}

/** Decodes exactly one whole frame (header and body, nothing more) with the same checks. */
export function decodeWholeFrame<T> (bytes: Uint8Array, p: FrameProtocol<T>): T {
  if (bytes.byteLength < 1) throw p.truncated('empty input')
  const type = bytes[0] as number
  p.checkType(type)
  if (bytes.byteLength < FRAME_HEADER_BYTES) throw p.truncated(`frame header needs ${FRAME_HEADER_BYTES} bytes, got ${bytes.byteLength}`)
  const bodyLength = readU32(bytes, 1)
  p.checkHeader(type, bodyLength)
  const total = FRAME_HEADER_BYTES + bodyLength
  if (bytes.byteLength < total) throw p.truncated(`frame of ${total} bytes, got ${bytes.byteLength}`)
  if (bytes.byteLength > total) throw p.malformed(`${bytes.byteLength - total} bytes after the frame`)
  return p.decodeBody(type, bytes.subarray(FRAME_HEADER_BYTES))
}

function readU32 (b: Uint8Array, at: number): number {
  return (((b[at] as number) << 24) >>> 0) + ((b[at + 1] as number) << 16) + ((b[at + 2] as number) << 8) + (b[at + 3] as number)
}

type Source<T> = AsyncIterable<T> | Iterable<T>

function throwIfAborted (signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted === true) throw new AbortedError(`${what} aborted`, { cause: signal.reason })
}

/**
 * Items from a byte stream through `assembler`. Throws the protocol's typed errors, its truncated
 * error when the source ends inside a frame, and AbortedError (`${what} aborted`) when `signal`
 * fires (also while waiting on the source, which is then told to return).
 */
export async function * decodeFramed<T> (
  source: Source<Uint8Array | Uint8ArrayList>,
  assembler: FrameAssembler<T>,
  signal: AbortSignal | undefined,
  what: string
): AsyncGenerator<T, void, undefined> {
  for await (const chunk of abortable(source, signal, what)) {
    for (const item of assembler.push(chunk)) {
      throwIfAborted(signal, what)
      yield item
    }
  }
  throwIfAborted(signal, what)
  assembler.end()
}

/** Iterates `source`, throwing AbortedError as soon as `signal` fires, even mid-wait. */
export async function * abortable<T> (source: Source<T>, signal: AbortSignal | undefined, what: string): AsyncGenerator<T, void, undefined> {
  if (signal == null) {
    yield * source
    return
  }
  throwIfAborted(signal, what)
  const it = Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : toAsync(source[Symbol.iterator]())
  let onAbort: (() => void) | undefined
  const aborted = new Promise<never>((_resolve, reject) => {
    onAbort = () => { reject(new AbortedError(`${what} aborted`, { cause: signal.reason })) }
    signal.addEventListener('abort', onAbort, { once: true })
  })
  aborted.catch(() => {})
  let done = false
  try {
    while (true) {
      // checked each turn too: a source that never waits would otherwise win every race
      throwIfAborted(signal, what)
      const r = await Promise.race([it.next(), aborted])
      if (r.done === true) { done = true; return }
      yield r.value
    }
  } finally {
    if (onAbort != null) signal.removeEventListener('abort', onAbort)
    // a pending next() would block an awaited return(); fire and forget
    if (!done) it.return?.()?.catch(() => {})
  }
}

function toAsync<T> (it: Iterator<T>): AsyncIterator<T> {
  return {
    next: async () => it.next(),
    return: async () => it.return?.() ?? { done: true, value: undefined }
  }
}
