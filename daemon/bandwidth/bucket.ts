/**
 * An async token bucket on an injected Clock.
 *
 * Flow: tokens refill continuously at `rate` up to `burst`. A take(n) is granted as soon as the
 * bucket holds min(n, burst) tokens, and then removes all n — the balance may go negative (debt),
 * which delays the next grant. So a take larger than the burst still passes, long-run throughput
 * is exactly `rate`, and the burst can stay small (a large burst would let a whole frame out at
 * line speed after an idle spell and overshoot a cap measured over seconds).
 *
 * Waiters queue per *flow* (a peer name in the node bucket) and are served by start-time fair
 * queuing: a take gets the tag max(virtualTime, its flow's last finish tag) and pays its bytes
 * into the flow's finish tag; the smallest start tag goes first. Within a flow this is FIFO;
 * across flows it shares bytes evenly, so one busy peer cannot starve a quiet one, and a flow
 * that was idle gets no credit for the idle time. One timer is armed for the head waiter only.
 */
import type { Clock, TimerHandle } from '../../common/clock.ts'
import { AbortedError } from '../../common/errors.ts'
import { BandwidthInvalidAmountError, BandwidthInvalidRateError } from './errors.ts'

export interface TokenBucketInit {
  /** Bytes per second; Infinity = unlimited (take() resolves at once, no bookkeeping). */
  rateBytesPerSec: number
  /** Fixed burst in bytes; when absent the burst follows the rate (burstMs / minBurstBytes). */
  burstBytes?: number
  /** Burst as time at the current rate. @default 100 */
  burstMs?: number
  /** Floor of the rate-derived burst. @default 65536 */
  minBurstBytes?: number
}

export interface TakeOptions {
  /** Rejects the wait with AbortedError; nothing is taken from the bucket. */
  signal?: AbortSignal
  /** Fair-queuing flow (e.g. the peer name). Takes without a flow share one FIFO flow. */
  flow?: string
}

interface Waiter {
  bytes: number
  start: number
  seq: number
  flow: Flow
  resolve: () => void
  reject: (err: unknown) => void
  signal: AbortSignal | undefined
  onAbort: (() => void) | undefined
}

interface Flow {
  key: string
  queue: Waiter[]
  /** finish tag of the flow's last take */
  finish: number
}

const RESOLVED: Promise<void> = Promise.resolve()
const DEFAULT_FLOW = ''
/** relative slack so floating-point refill arithmetic cannot leave a waiter a hair short forever */
const EPSILON = 1e-9
const MIN_TIMER_MS = 0.001

export function checkRate (rate: number): void {
  if (typeof rate !== 'number' || Number.isNaN(rate) || rate <= 0) {
    throw new BandwidthInvalidRateError(`rate ${String(rate)} is not a positive number of bytes per second`)
  }
}

export class TokenBucket {
  private readonly clock: Clock
  private rateBps: number
  private readonly burstCfg: { fixed?: number, ms: number, min: number }
  private burstBytes: number
  private tokens: number
  private last: number
  private readonly flows = new Map<string, Flow>()
  private waiterCount = 0
  private virtualTime = 0
  private seq = 0
  private timer: TimerHandle | undefined
  private taken = 0

  constructor (components: { clock: Clock }, init: TokenBucketInit) {
    this.clock = components.clock
    checkRate(init.rateBytesPerSec)
    if (init.burstBytes !== undefined && !(init.burstBytes > 0 && Number.isFinite(init.burstBytes))) {
      throw new BandwidthInvalidRateError(`burst ${init.burstBytes} is not a positive number of bytes`)
    }
    this.burstCfg = {
      ...(init.burstBytes !== undefined ? { fixed: init.burstBytes } : {}),
      ms: init.burstMs ?? 100,
      min: init.minBurstBytes ?? 65536
    }
    this.rateBps = init.rateBytesPerSec
    this.burstBytes = this.computeBurst()
    this.tokens = this.burstBytes
    this.last = this.clock.now()
  }

  /** Current rate in bytes per second (Infinity = unlimited). */
  get rate (): number { return this.rateBps }
  get burst (): number { return this.burstBytes }
  get unlimited (): boolean { return this.rateBps === Infinity }
  /** Number of takes waiting. */
  get waiting (): number { return this.waiterCount }
  /** Total bytes granted so far (including unlimited grants). */
  get takenBytes (): number { return this.taken }

  /** Tokens available right now (negative while in debt). */
  available (): number {
    this.refill()
    return this.tokens
  }

  /**
   * Resolves when `bytes` may be sent. Waits in fair order behind earlier takes; rejects with
   * AbortedError when `signal` fires first (nothing is then taken).
   */
  take (bytes: number, options: TakeOptions = {}): Promise<void> {
    if (typeof bytes !== 'number' || !Number.isFinite(bytes) || bytes < 0) {
      return Promise.reject(new BandwidthInvalidAmountError(`cannot take ${String(bytes)} bytes`))
    }
    const { signal } = options
    if (signal?.aborted === true) return Promise.reject(new AbortedError('bandwidth wait aborted', { cause: signal.reason }))
    this.taken += bytes
    if (this.rateBps === Infinity || bytes === 0) return RESOLVED
    const flow = this.flowFor(options.flow ?? DEFAULT_FLOW)
    const start = Math.max(this.virtualTime, flow.finish)
    flow.finish = start + bytes
    if (this.waiterCount === 0) {
      this.refill()
      if (this.enough(bytes)) {
        this.tokens -= bytes
        this.virtualTime = start
        this.dropIdleFlow(flow)
        return RESOLVED
      }
    }
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = { bytes, start, seq: this.seq++, flow, resolve, reject, signal, onAbort: undefined }
      if (signal != null) {
        w.onAbort = () => { this.cancel(w) }
        signal.addEventListener('abort', w.onAbort, { once: true })
      }
      flow.queue.push(w)
      this.waiterCount++
      this.pump()
    })
  }

  /** Gives back bytes taken but not sent (e.g. a composed take aborted halfway). */
  refund (bytes: number): void {
    if (!(bytes > 0) || !Number.isFinite(bytes)) return
    this.taken = Math.max(0, this.taken - bytes)
    if (this.rateBps === Infinity) return
    this.refill()
    this.tokens = Math.min(this.burstBytes, this.tokens + bytes)
    this.pump()
  }

  /**
   * Changes the rate now: tokens earned so far are kept at the old rate, waiters are re-timed at
   * the new one (Infinity releases them all).
   */
  setRate (rateBytesPerSec: number): void {
    checkRate(rateBytesPerSec)
    if (rateBytesPerSec === this.rateBps) return
    this.refill()
    const wasUnlimited = this.rateBps === Infinity
    this.rateBps = rateBytesPerSec
    this.burstBytes = this.computeBurst()
    if (wasUnlimited) {
      this.tokens = this.burstBytes
      this.last = this.clock.now()
    } else {
      this.tokens = Math.min(this.tokens, this.burstBytes)
    }
    this.pump()
  }

  private computeBurst (): number {
    if (this.burstCfg.fixed !== undefined) return this.burstCfg.fixed
    if (this.rateBps === Infinity) return Infinity
    return Math.max(this.rateBps * this.burstCfg.ms / 1000, this.burstCfg.min)
  }

  private refill (): void {
    const now = this.clock.now()
    if (now > this.last && this.rateBps !== Infinity) {
      this.tokens = Math.min(this.burstBytes, this.tokens + (now - this.last) * this.rateBps / 1000)
    }
    this.last = Math.max(this.last, now)
  }

  private enough (bytes: number): boolean {
    const need = Math.min(bytes, this.burstBytes)
    return this.tokens >= need - need * EPSILON
  }

  private flowFor (key: string): Flow {
    let f = this.flows.get(key)
    if (f === undefined) {
      if (this.flows.size >= 64) for (const g of this.flows.values()) this.dropIdleFlow(g)
      f = { key, queue: [], finish: this.virtualTime }
      this.flows.set(key, f)
    }
    return f
  }

  /** A flow with nothing queued and no tag ahead of virtual time carries no state worth keeping. */
  private dropIdleFlow (flow: Flow): void {
    if (flow.queue.length === 0 && flow.finish <= this.virtualTime) this.flows.delete(flow.key)
  }

  /** The queued take with the smallest start tag (ties: arrival order); prunes idle flows on the way. */
  private head (): Waiter | undefined {
    let best: Waiter | undefined
    for (const f of this.flows.values()) {
      const w = f.queue[0]
      if (w === undefined) { this.dropIdleFlow(f); continue }
      if (best === undefined || w.start < best.start || (w.start === best.start && w.seq < best.seq)) best = w
    }
    return best
  }

  /** Grants every waiter that can go now and arms one timer for the next. Each pass grants one. */
  private pump (): void {
    if (this.timer !== undefined) { this.clock.clearTimeout(this.timer); this.timer = undefined }
    this.refill()
    while (this.waiterCount > 0) {
      const w = this.head()
      if (w === undefined) break
      if (this.rateBps !== Infinity && !this.enough(w.bytes)) {
        const need = Math.min(w.bytes, this.burstBytes)
        // the floor keeps virtual time moving when the deficit is floating-point dust
        const ms = Math.max(MIN_TIMER_MS, (need - this.tokens) * 1000 / this.rateBps)
        this.timer = this.clock.setTimeout(() => { this.timer = undefined; this.pump() }, ms)
        return
      }
      if (this.rateBps !== Infinity) this.tokens -= w.bytes
      this.virtualTime = Math.max(this.virtualTime, w.start)
      this.remove(w)
      w.resolve()
    }
  }

  private remove (w: Waiter): void {
    const q = w.flow.queue
    const i = q.indexOf(w)
    if (i < 0) return
    q.splice(i, 1)
    this.waiterCount--
    if (w.signal != null && w.onAbort != null) w.signal.removeEventListener('abort', w.onAbort)
    this.dropIdleFlow(w.flow)
  }

  private cancel (w: Waiter): void {
    if (!w.flow.queue.includes(w)) return
    this.remove(w)
    this.taken -= w.bytes
    w.reject(new AbortedError('bandwidth wait aborted', { cause: w.signal?.reason }))
    this.pump()
  }
}
