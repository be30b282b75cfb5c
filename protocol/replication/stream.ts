/**
 * The replication stream: delta frames and control messages interleaved, one frame header.
 *
 * ReplicationDecoder takes chunks split anywhere. The 5-byte header is judged the moment it is
 * complete — the type picks the codec (1–15 delta, 64–127 control), and that codec's header check
 * refuses an impossible or over-limit length — so a hostile length never causes buffering. A body
 * then grows geometrically up to its declared length, so memory follows what actually arrived; a
 * frame wholly inside one chunk is decoded in place (items may hold views into the chunk). After
 * any protocol error the decoder is poisoned and rethrows it.
 */
import type { Uint8ArrayList } from 'uint8arraylist'
import { AbortedError } from '../../common/errors.ts'
import { checkHeader, decodeFrameBody, encodeFrame, isKnownFrameType } from '../delta/codec.ts'
import { resolveLimits } from '../delta/limits.ts'
import type { DeltaLimits } from '../delta/limits.ts'
import type { Frame, FrameType } from '../delta/messages.ts'
import { checkControlHeader, decodeControlBody, encodeControl, FRAME_HEADER_BYTES } from './codec.ts'
import { isPeerProtocolError, ReplicationTruncatedError, ReplicationUnknownFrameError } from './errors.ts'
import { resolveControlLimits } from './limits.ts'
import type { ControlLimits } from './limits.ts'
import { isControlMessage, isControlType } from './messages.ts'
import type { ControlMessage, ControlType } from './messages.ts'

/** One decoded item of a replication stream: a delta frame or a control message (tell by `type`). */
export type ReplicationItem = Frame | ControlMessage

export interface ReplicationCodecOptions {
  /** Limits of the control codec. */
  controlLimits?: Partial<ControlLimits>
  /** Limits of the delta codec. */
  deltaLimits?: Partial<DeltaLimits>
}

const INITIAL_BODY_CAPACITY = 64 * 1024

function isKnownType (type: number): boolean {
  return isKnownFrameType(type) || isControlType(type)
}

export class ReplicationDecoder {
  private readonly control: ControlLimits
  private readonly delta: DeltaLimits
  private readonly header = new Uint8Array(FRAME_HEADER_BYTES)
  private headerFill = 0
  private type: number | undefined
  private bodyLength = 0
  private body: Uint8Array | undefined
  private bodyFill = 0
  private failure: Error | undefined
  private peak = 0

  constructor (options: ReplicationCodecOptions = {}) {
    this.control = resolveControlLimits(options.controlLimits)
    this.delta = resolveLimits(options.deltaLimits)
  }

  /** Bytes held for a frame not yet complete. */
  get bufferedBytes (): number { return this.headerFill + this.bodyFill }

  /** Largest body buffer this decoder has allocated (never above a declared, accepted length). */
  get peakAllocation (): number { return this.peak }

  /** Feeds a chunk; returns the items it completed, in order. */
  push (chunk: Uint8Array | Uint8ArrayList): ReplicationItem[] {
    if (this.failure != null) throw this.failure
    const out: ReplicationItem[] = []
    try {
      if (chunk instanceof Uint8Array) this.consume(chunk, out)
      else for (const buf of chunk) this.consume(buf, out)
    } catch (err) {
      if (isPeerProtocolError(err)) this.failure = err
      throw err
    }
    return out
  }

  /** Declares the end of input; ReplicationTruncatedError when it stopped inside a frame. */
  end (): void {
    if (this.failure != null) throw this.failure
    if (this.headerFill > 0 || this.type !== undefined) {
      this.failure = new ReplicationTruncatedError(`input ended inside a frame (${this.bufferedBytes} bytes buffered)`)
      throw this.failure
    }
  }

  private checkHeader (type: number, bodyLength: number): void {
    if (isKnownFrameType(type)) checkHeader(type, bodyLength, this.delta)
    else checkControlHeader(type, bodyLength, this.control)
  }

  private decodeBody (type: number, body: Uint8Array): ReplicationItem {
    return isKnownFrameType(type)
      ? decodeFrameBody(type, body, this.delta)
      : decodeControlBody(type as ControlType, body, this.control)
  }

  private consume (buf: Uint8Array, out: ReplicationItem[]): void {
    let pos = 0
    // each pass consumes at least one byte or completes a frame
    while (pos < buf.byteLength) {
      if (this.type === undefined) {
        if (this.headerFill === 0 && buf.byteLength - pos >= FRAME_HEADER_BYTES) {
          const type = buf[pos] as number
          if (!isKnownType(type)) throw new ReplicationUnknownFrameError(`unknown frame type ${type}`)
          const bodyLength = readU32(buf, pos + 1)
          this.checkHeader(type, bodyLength)
          pos += FRAME_HEADER_BYTES
          if (buf.byteLength - pos >= bodyLength) {
            out.push(this.decodeBody(type, buf.subarray(pos, pos + bodyLength)))
            pos += bodyLength
          } else {
            this.startBody(type, bodyLength)
          }
          continue
        }
        const b = buf[pos++] as number
        if (this.headerFill === 0 && !isKnownType(b)) throw new ReplicationUnknownFrameError(`unknown frame type ${b}`)
        this.header[this.headerFill++] = b
        if (this.headerFill === FRAME_HEADER_BYTES) {
          this.headerFill = 0
          const type = this.header[0] as number
          const bodyLength = readU32(this.header, 1)
          this.checkHeader(type, bodyLength)
          if (bodyLength === 0) out.push(this.decodeBody(type, new Uint8Array(0)))
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
        out.push(this.decodeBody(type, body.subarray(0, this.bodyLength)))
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

function readU32 (b: Uint8Array, at: number): number {
  return (((b[at] as number) << 24) >>> 0) + ((b[at + 1] as number) << 16) + ((b[at + 2] as number) << 8) + (b[at + 3] as number)
}

/** Encodes a delta frame or a control message as one frame. */
export function encodeReplicationItem (item: ReplicationItem, options: ReplicationCodecOptions = {}): Uint8Array {
  return isControlMessage(item)
    ? encodeControl(item, options.controlLimits !== undefined ? { limits: options.controlLimits } : {})
    : encodeFrame(item, options.deltaLimits !== undefined ? { limits: options.deltaLimits } : {})
}

export interface DecodeReplicationOptions extends ReplicationCodecOptions {
  signal?: AbortSignal
}

function throwIfAborted (signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw new AbortedError('replication stream aborted', { cause: signal.reason })
}

/**
 * Items from a byte stream (e.g. a libp2p stream's source). Throws the codecs' typed errors,
 * ReplicationTruncatedError when the source ends inside a frame, and AbortedError when `signal`
 * fires (also while waiting on the source, which is then told to return).
 */
export async function * decodeReplicationStream (
  source: AsyncIterable<Uint8Array | Uint8ArrayList> | Iterable<Uint8Array | Uint8ArrayList>,
  options: DecodeReplicationOptions = {}
): AsyncGenerator<ReplicationItem, void, undefined> {
  const { signal } = options
  const decoder = new ReplicationDecoder(options)
  for await (const chunk of abortable(source, signal)) {
    for (const item of decoder.push(chunk)) {
      throwIfAborted(signal)
      yield item
    }
  }
  throwIfAborted(signal)
  decoder.end()
}

/** Bytes for a stream of items, one buffer per frame. */
export async function * encodeReplicationStream (
  source: AsyncIterable<ReplicationItem> | Iterable<ReplicationItem>,
  options: ReplicationCodecOptions = {}
): AsyncGenerator<Uint8Array, void, undefined> {
  for await (const item of source) yield encodeReplicationItem(item, options)
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
    onAbort = () => { reject(new AbortedError('replication stream aborted', { cause: signal.reason })) }
    signal.addEventListener('abort', onAbort, { once: true })
  })
  aborted.catch(() => {})
  let done = false
  try {
    while (true) {
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
