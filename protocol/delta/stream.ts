/**
 * Streaming frames. FrameDecoder takes chunks split anywhere and returns whole frames: the 5-byte
 * header is checked (type, length against the limit) the moment it is complete, so a hostile
 * length never causes buffering; a body then grows geometrically up to its declared length, so
 * memory follows what actually arrived. A frame wholly inside one chunk is decoded in place.
 */
import type { Uint8ArrayList } from 'uint8arraylist'
import { AbortedError } from '../../common/errors.ts'
import { FRAME_HEADER_BYTES, checkHeader, decodeFrameBody, encodeFrame, isKnownFrameType } from './codec.ts'
import type { CodecOptions } from './codec.ts'
import { resolveLimits } from './limits.ts'
import type { DeltaLimits } from './limits.ts'
import type { Frame, FrameType } from './messages.ts'
import { DeltaProtocolError, DeltaTruncatedError, DeltaUnknownFrameError } from './errors.ts'

const INITIAL_BODY_CAPACITY = 64 * 1024

export class FrameDecoder {
  private readonly limits: DeltaLimits
  private readonly header = new Uint8Array(FRAME_HEADER_BYTES)
  private headerFill = 0
  private type: FrameType | undefined
  private bodyLength = 0
  private body: Uint8Array | undefined
  private bodyFill = 0
  private failure: DeltaProtocolError | undefined
  private peak = 0

  constructor (options: CodecOptions = {}) {
    this.limits = resolveLimits(options.limits)
  }

  /** Bytes held for a frame not yet complete. */
  get bufferedBytes (): number { return this.headerFill + this.bodyFill }

  /** Largest body buffer this decoder has allocated (never above the frame limit). */
  get peakAllocation (): number { return this.peak }

  /**
   * Feeds a chunk; returns the frames it completed, in order. After a protocol error the decoder
   * is poisoned: every later call throws that error again.
   */
  push (chunk: Uint8Array | Uint8ArrayList): Frame[] {
    if (this.failure != null) throw this.failure
    const out: Frame[] = []
    try {
      if (chunk instanceof Uint8Array) this.consume(chunk, out)
      else for (const buf of chunk) this.consume(buf, out)
    } catch (err) {
      if (err instanceof DeltaProtocolError) this.failure = err
      throw err
    }
    return out
  }

  /** Declares the end of input; throws DeltaTruncatedError when it stopped inside a frame. */
  end (): void {
    if (this.failure != null) throw this.failure
    if (this.headerFill > 0 || this.type !== undefined) {
      this.failure = new DeltaTruncatedError(`input ended inside a frame (${this.bufferedBytes} bytes buffered)`)
      throw this.failure
    }
  }

  private consume (buf: Uint8Array, out: Frame[]): void {
    let pos = 0
    // each pass consumes at least one byte or completes a frame
    while (pos < buf.byteLength) {
      if (this.type === undefined) {
        if (this.headerFill === 0 && buf.byteLength - pos >= FRAME_HEADER_BYTES) {
          const type = buf[pos] as number
          const bodyLength = readU32(buf, pos + 1)
          checkHeader(type, bodyLength, this.limits)
          pos += FRAME_HEADER_BYTES
          if (buf.byteLength - pos >= bodyLength) {
            out.push(decodeFrameBody(type as FrameType, buf.subarray(pos, pos + bodyLength), this.limits))
            pos += bodyLength
          } else {
            this.startBody(type as FrameType, bodyLength)
          }
          continue
        }
        const b = buf[pos++] as number
        if (this.headerFill === 0 && !isKnownFrameType(b)) throw new DeltaUnknownFrameError(`unknown frame type ${b}`)
        this.header[this.headerFill++] = b
        if (this.headerFill === FRAME_HEADER_BYTES) {
          this.headerFill = 0
          const type = this.header[0] as number
          const bodyLength = readU32(this.header, 1)
          checkHeader(type, bodyLength, this.limits)
          this.startBody(type as FrameType, bodyLength)
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
        out.push(decodeFrameBody(type, body.subarray(0, this.bodyLength), this.limits))
      }
    }
  }

  private startBody (type: FrameType, bodyLength: number): void {
    this.type = type
    this.bodyLength = bodyLength
    this.bodyFill = 0
    this.body = undefined
  }

  /** The body buffer with room for `needed` bytes, grown by doubling but never past the declared length. */
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

function readU32 (b: Uint8Array, at: number): number {
  return (((b[at] as number) << 24) >>> 0) + ((b[at + 1] as number) << 16) + ((b[at + 2] as number) << 8) + (b[at + 3] as number)
}

function throwIfAborted (signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw new AbortedError('delta stream aborted', { cause: signal.reason })
}

export interface DecodeFramesOptions extends CodecOptions {
  signal?: AbortSignal
}

/**
 * Frames from a byte stream. Throws the decoder's typed errors, DeltaTruncatedError when the
 * source ends inside a frame, and AbortedError when `signal` fires (also while waiting on the
 * source, which is then told to return).
 */
export async function * decodeFrames (source: AsyncIterable<Uint8Array | Uint8ArrayList> | Iterable<Uint8Array | Uint8ArrayList>, options: DecodeFramesOptions = {}): AsyncGenerator<Frame, void, undefined> {
  const { signal } = options
  const decoder = new FrameDecoder(options)
  for await (const chunk of abortable(source, signal)) {
    for (const frame of decoder.push(chunk)) {
      throwIfAborted(signal)
      yield frame
    }
  }
  throwIfAborted(signal)
  decoder.end()
}

/** Bytes for a stream of frames, one buffer per frame. */
export async function * encodeFrames (source: AsyncIterable<Frame> | Iterable<Frame>, options: CodecOptions = {}): AsyncGenerator<Uint8Array, void, undefined> {
  for await (const frame of source) yield encodeFrame(frame, options)
}

/** Iterates `source`, throwing AbortedError as soon as `signal` fires, even mid-wait. */
async function * abortable<T> (source: AsyncIterable<T> | Iterable<T>, signal: AbortSignal | undefined): AsyncGenerator<T, void, undefined> {
  if (signal == null) {
    yield * source
    return
  }
  throwIfAborted(signal)
  const it = Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : toAsync(source[Symbol.iterator]())
  let onAbort: (() => void) | undefined
  const aborted = new Promise<never>((_resolve, reject) => {
    onAbort = () => { reject(new AbortedError('delta stream aborted', { cause: signal.reason })) }
    signal.addEventListener('abort', onAbort, { once: true })
  })
  aborted.catch(() => {})
  let done = false
  try {
    while (true) {
      // checked each turn too: a source that never waits would otherwise win every race
      throwIfAborted(signal)
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
