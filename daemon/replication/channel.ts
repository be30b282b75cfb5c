/**
 * One replication session's byte stream, seen as items in and frames out, for both ends.
 *
 * In: 'message' events are gathered until a whole frame is there (its header judged by the
 * codecs' own header checks first, so a hostile length is refused before anything is
 * buffered), then the frame goes to the ReplicationDecoder in one piece — decoded in place,
 * instead of growing a body buffer chunk by chunk. A frame that arrived in several chunks is
 * gathered into a buffer from a small per-channel pool; the consumer hands it back with
 * release(item) once nothing refers to it any more (a fresh 1 MiB allocation per frame costs
 * several times the copy: page faults and GC pressure). Decoded items wait in a queue that the
 * session's single consumer loop drains with next(). When the queue holds more than
 * `highWaterBytes` the stream is paused (yamux then stops granting window, so the sender
 * blocks), and resumed below `lowWaterBytes`: memory is bounded whatever the peer does. A
 * decode error poisons the channel and aborts the stream — nothing after garbage is used.
 *
 * Out: write() hands bytes to stream.send() and, when it returns false, waits for the 'drain'
 * event (js-libp2p 3's onDrain() promise is not reset after the first drain). A limiter, when
 * given and finite, is paid in ≤ 32 KiB pieces so a cap holds over short windows.
 */
import { Uint8ArrayList } from 'uint8arraylist'
import { ReplicationDecoder, encodeReplicationItem, checkControlHeader, resolveControlLimits, type ReplicationItem, type PingMessage, type PongMessage } from '../../protocol/replication/index.ts'
import { checkHeader, encodeBlocksFrameParts, isKnownFrameType, resolveLimits } from '../../protocol/delta/index.ts'
import { AbortedError, errorMessage } from '../../common/errors.ts'
import { throttle, type Takes } from '../bandwidth/throttle.ts'
import { ReplicationStreamClosedError } from './errors.ts'

/** The slice of a libp2p v3 Stream a channel uses (tests pass fakes). */
export interface StreamLike {
  send: (data: Uint8Array | Uint8ArrayList) => boolean
  addEventListener: (type: string, fn: (evt: any) => void) => void // eslint-disable-line @typescript-eslint/no-explicit-any
  removeEventListener: (type: string, fn: (evt: any) => void) => void // eslint-disable-line @typescript-eslint/no-explicit-any
  pause: () => void
  resume: () => void
  abort: (err: Error) => void
  close: () => Promise<void>
  maxReadBufferLength?: number
  /** The protocol ID multistream-select settled on (libp2p sets it; fakes may not). */
  protocol?: string
}

export interface ChannelInit {
  /** Queue size that pauses the stream. @default 16 MiB */
  highWaterBytes?: number
  /** Queue size that resumes it. @default 4 MiB */
  lowWaterBytes?: number
  /** Called once when the peer's bytes fail to decode (the stream is already aborted). */
  onProtocolError?: (err: Error) => void
  /**
   * Answer pings as they arrive, ahead of queued work: the peer learns we are alive even while
   * a long generation is still being applied. Returns the pong to send.
   */
  answerPing?: (ping: PingMessage) => PongMessage
  /**
   * Sees every pong the moment it arrives (a sender's pacer: a pong proves delivery of every byte
   * written before its ping). Pongs handed here are not queued for next().
   */
  onPong?: (pong: PongMessage) => void
  /** Called when the stream ends or fails (a pacing wait must not outlive it). */
  onEnded?: () => void
}

/** Frames up to this size are gathered in pooled buffers (the sender's frames carry 1 MiB). */
const POOLED_FRAME_BYTES = 1024 * 1024 + 64 * 1024
/** Free pooled buffers kept per channel. */
const POOL_KEEP = 32

/** Rough memory held by a decoded item. */
function itemBytes (item: ReplicationItem): number {
  if (item.type !== 'blocks') return 64
  let n = 64
  for (const e of item.entries) n += e.payload.byteLength + 48
  return n
}

export class Channel {
  private readonly decoder = new ReplicationDecoder()
  private readonly incoming = new Uint8ArrayList()
  /** Total length of the frame at the head of `incoming`, once its header was judged. */
  private frameLength = -1
  private static readonly deltaLimits = resolveLimits()
  private static readonly controlLimits = resolveControlLimits()
  private readonly queue: Array<{ item: ReplicationItem, bytes: number }> = []
  private queuedBytes = 0
  private paused = false
  private ended = false
  private failure: Error | undefined
  private wake: (() => void) | undefined
  private readonly free: Uint8Array[] = []
  /** items decoded from a pooled buffer, and that buffer */
  private readonly owned = new WeakMap<object, Uint8Array>()
  private readonly high: number
  private readonly low: number
  /** Bytes received from the peer, for rate displays and tests. */
  bytesIn = 0
  bytesOut = 0

  constructor (readonly stream: StreamLike, private readonly init: ChannelInit = {}) {
    this.high = init.highWaterBytes ?? 16 * 1024 * 1024
    this.low = init.lowWaterBytes ?? 4 * 1024 * 1024
    // yamux may deliver a whole 16 MiB window while we are paused; leave room for it
    stream.maxReadBufferLength = Math.max(stream.maxReadBufferLength ?? 0, 64 * 1024 * 1024)
    stream.addEventListener('message', this.onMessage)
    stream.addEventListener('remoteCloseWrite', this.onEnd)
    stream.addEventListener('close', this.onClose)
  }

  private readonly onMessage = (evt: { data: Uint8Array | Uint8ArrayList }): void => {
    if (this.failure !== undefined) return
    this.bytesIn += evt.data.byteLength
    const items: ReplicationItem[] = []
    try {
      this.incoming.append(evt.data)
      // each pass hands one whole frame to the decoder or waits for more bytes
      for (;;) {
        if (this.frameLength < 0) {
          if (this.incoming.byteLength < 5) break
          const type = this.incoming.get(0)
          const len = this.incoming.getUint32(1)
          if (isKnownFrameType(type)) checkHeader(type, len, Channel.deltaLimits)
          else checkControlHeader(type, len, Channel.controlLimits)
          this.frameLength = 5 + len
        }
        if (this.incoming.byteLength < this.frameLength) break
        const { frame, pooled } = this.takeFrame(this.frameLength)
        this.frameLength = -1
        for (const item of this.decoder.push(frame)) {
          if (pooled !== undefined) this.owned.set(item, pooled)
          items.push(item)
        }
      }
    } catch (err) {
      this.fail(err instanceof Error ? err : new Error(errorMessage(err)), true)
      return
    }
    for (const item of items) {
      if (item.type === 'ping' && this.init.answerPing !== undefined) {
        try { this.stream.send(encodeReplicationItem(this.init.answerPing(item))) } catch {}
        continue
      }
      if (item.type === 'pong' && this.init.onPong !== undefined) {
        this.init.onPong(item)
        continue
      }
      const bytes = itemBytes(item)
      this.queue.push({ item, bytes })
      this.queuedBytes += bytes
    }
    if (this.queuedBytes > this.high && !this.paused) {
      try { this.stream.pause(); this.paused = true } catch {}
    }
    this.notify()
  }

  /**
   * The next `len` bytes of `incoming` as one buffer: a view when they sit in one chunk, else
   * gathered into a pooled buffer (or a fresh one for an unusually large frame).
   */
  private takeFrame (len: number): { frame: Uint8Array, pooled?: Uint8Array } {
    let first: Uint8Array | undefined
    for (const b of this.incoming) { first = b; break }
    if (first !== undefined && first.byteLength >= len) {
      const frame = first.subarray(0, len)
      this.incoming.consume(len)
      return { frame }
    }
    const pooled = len <= POOLED_FRAME_BYTES ? (this.free.pop() ?? Buffer.allocUnsafeSlow(POOLED_FRAME_BYTES)) : undefined
    const frame = pooled !== undefined ? pooled.subarray(0, len) : new Uint8Array(len)
    let at = 0
    for (const b of this.incoming) {
      const n = Math.min(b.byteLength, len - at)
      frame.set(n === b.byteLength ? b : b.subarray(0, n), at)
      at += n
      if (at >= len) break
    }
    this.incoming.consume(len)
    return pooled !== undefined ? { frame, pooled } : { frame }
  }

  /**
   * The consumer is done with `item` (and everything it referred to): its pooled buffer is
   * reused for a later frame. Items not from the pool, or released twice, are ignored.
   */
  release (item: ReplicationItem): void {
    const buf = this.owned.get(item)
    if (buf === undefined) return
    this.owned.delete(item)
    if (this.free.length < POOL_KEEP) this.free.push(buf)
  }

  /** Frees pooled buffers beyond `keep` (a generation ended: memory goes back while idle). */
  trimPool (keep = 2): void {
    if (this.free.length > keep) this.free.length = keep
  }

  private readonly onEnd = (): void => {
    if (this.ended) return
    this.ended = true
    try {
      if (this.incoming.byteLength > 0) this.decoder.push(this.incoming.subarray())
      this.decoder.end()
    } catch (err) { this.fail(err as Error, false); return }
    this.notify()
  }

  private readonly onClose = (evt: { error?: Error }): void => {
    if (!this.ended) {
      this.ended = true
      if (this.failure === undefined && evt?.error !== undefined) this.failure = new ReplicationStreamClosedError(`stream closed: ${errorMessage(evt.error)}`, { cause: evt.error })
    }
    this.notify()
  }

  private fail (err: Error, abortStream: boolean): void {
    if (this.failure !== undefined) return
    this.failure = err
    this.queue.length = 0
    this.queuedBytes = 0
    if (abortStream) {
      try { this.stream.abort(err) } catch {}
      this.init.onProtocolError?.(err)
    }
    this.notify()
  }

  private notify (): void {
    if (this.closed) this.init.onEnded?.()
    const w = this.wake
    this.wake = undefined
    w?.()
  }

  get closed (): boolean { return this.ended || this.failure !== undefined }
  get error (): Error | undefined { return this.failure }

  /** The next item; null when the peer closed its side cleanly; throws on a bad stream. */
  async next (signal?: AbortSignal): Promise<ReplicationItem | null> {
    // each pass either returns or waits for one event that changes the state
    for (;;) {
      if (this.failure !== undefined) throw this.failure
      const head = this.queue.shift()
      if (head !== undefined) {
        this.queuedBytes -= head.bytes
        if (this.paused && this.queuedBytes < this.low) {
          try { this.stream.resume() } catch {}
          this.paused = false
        }
        return head.item
      }
      if (this.ended) return null
      if (signal?.aborted === true) throw new AbortedError('channel read aborted', { cause: signal.reason })
      await new Promise<void>((resolve) => {
        const onAbort = (): void => { resolve() }
        signal?.addEventListener('abort', onAbort, { once: true })
        this.wake = () => { signal?.removeEventListener('abort', onAbort); resolve() }
      })
    }
  }

  /**
   * Sends one item, paying `limiter` first when given. A blocks frame goes as its parts (headers
   * and the payloads themselves): the transport gathers them, nothing copies them into one
   * frame buffer first.
   */
  async sendItem (item: ReplicationItem, limiter?: Takes & { rate?: number }, signal?: AbortSignal): Promise<number> {
    if (item.type === 'blocks') {
      const parts = encodeBlocksFrameParts(item)
      let n = 0
      for (const p of parts) n += p.byteLength
      await this.write(parts.length === 1 ? parts[0] as Uint8Array : new Uint8ArrayList(...parts), limiter, signal)
      return n
    }
    const bytes = encodeReplicationItem(item)
    await this.write(bytes, limiter, signal)
    return bytes.byteLength
  }

  async write (bytes: Uint8Array | Uint8ArrayList, limiter?: Takes & { rate?: number }, signal?: AbortSignal): Promise<void> {
    if (limiter !== undefined && Number.isFinite(limiter.rate ?? 0)) {
      for await (const piece of throttle([bytes], limiter, signal !== undefined ? { signal } : {})) await this.writeRaw(piece, signal)
      return
    }
    if (limiter !== undefined) await limiter.take(bytes.byteLength, signal !== undefined ? { signal } : {})
    await this.writeRaw(bytes, signal)
  }

  private async writeRaw (bytes: Uint8Array | Uint8ArrayList, signal?: AbortSignal): Promise<void> {
    if (this.failure !== undefined) throw this.failure
    let ok: boolean
    try {
      ok = this.stream.send(bytes)
    } catch (err) {
      throw new ReplicationStreamClosedError(`send failed: ${errorMessage(err)}`, { cause: err })
    }
    this.bytesOut += bytes.byteLength
    if (ok) return
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error): void => {
        this.stream.removeEventListener('drain', onDrain)
        this.stream.removeEventListener('close', onClose)
        signal?.removeEventListener('abort', onAbort)
        if (err !== undefined) reject(err); else resolve()
      }
      const onDrain = (): void => { done() }
      const onClose = (): void => { done(new ReplicationStreamClosedError('stream closed while waiting to send')) }
      const onAbort = (): void => { done(new AbortedError('send aborted', { cause: signal?.reason })) }
      this.stream.addEventListener('drain', onDrain)
      this.stream.addEventListener('close', onClose)
      signal?.addEventListener('abort', onAbort, { once: true })
      if (signal?.aborted === true) onAbort()
    })
  }

  /** Closes our side gracefully (ignores errors). */
  async close (): Promise<void> {
    this.detach()
    await this.stream.close().catch(() => {})
  }

  abort (err: Error): void {
    this.detach()
    try { this.stream.abort(err) } catch {}
  }

  private detach (): void {
    this.ended = true
    this.notify()
  }
}
