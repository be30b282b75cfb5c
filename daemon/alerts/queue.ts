/**
 * One sink's delivery queue: `push` never waits (the daemon must not block on a sink that is
 * down), the pump sends the oldest notice, and on failure waits an exponential backoff with
 * jitter before trying the same notice again, for as long as it takes — alerts arrive
 * when the sink returns, in order. The queue is bounded: when full, the oldest notice is
 * dropped, counted and logged. A notice the sink rejects for good is dropped the same way.
 */
import type { Clock } from '../../common/clock.ts'
import type { Random } from '../../common/random.ts'
import { errorMessage } from '../../common/errors.ts'
import type { Logger } from '../log.ts'
import { SinkRejectedError } from './errors.ts'
import type { AlertSink } from './sink.ts'
import type { AlertNotice } from './types.ts'

export interface SinkQueueComponents {
  clock: Clock
  random: Random
  log: Logger
  sink: AlertSink
}

export interface SinkQueueInit {
  /** Notices held at most; the oldest is dropped beyond. @default 1000 */
  queueMax?: number
  /** First retry delay (before jitter). @default 1000 */
  retryMinMs?: number
  /** Longest retry delay. @default 300000 */
  retryMaxMs?: number
}

export interface SinkQueueStats {
  sink: string
  type: string
  queued: number
  delivered: number
  /** Dropped because the queue was full. */
  dropped: number
  /** Dropped because the sink refused them for good. */
  rejected: number
  failedAttempts: number
  lastError?: string
  lastDeliveredAtMs?: number
}

export class SinkQueue {
  private readonly items: AlertNotice[] = []
  private readonly s: SinkQueueStats
  private readonly o: Required<SinkQueueInit>
  private ac = new AbortController()
  private pumping: Promise<void> | undefined
  private running = false
  private attempt = 0

  constructor (private readonly c: SinkQueueComponents, init: SinkQueueInit = {}) {
    this.o = { queueMax: init.queueMax ?? 1000, retryMinMs: init.retryMinMs ?? 1000, retryMaxMs: init.retryMaxMs ?? 300_000 }
    this.s = { sink: c.sink.name, type: c.sink.type, queued: 0, delivered: 0, dropped: 0, rejected: 0, failedAttempts: 0 }
  }

  get name (): string { return this.c.sink.name }

  /** Queues a notice; never waits. Notices pushed before `start` are held until it. */
  push (n: AlertNotice): void {
    this.items.push(n)
    while (this.items.length > this.o.queueMax) {
      const old = this.items.shift() as AlertNotice
      this.s.dropped++
      this.c.log.warn({ sink: this.name, dropped: this.s.dropped, key: old.key, type: old.type, queueMax: this.o.queueMax }, 'alert queue full: oldest notice dropped')
    }
    this.kick()
  }

  /** What is queued, oldest first (kept across a reload that rebuilds the sink). */
  pending (): AlertNotice[] { return [...this.items] }

  stats (): SinkQueueStats { return { ...this.s, queued: this.items.length } }

  start (): void {
    if (this.running) return
    this.running = true
    this.ac = new AbortController()
    this.kick()
  }

  /** Stops sending (a send in flight is aborted); queued notices stay in `pending()`. */
  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    this.ac.abort()
    await this.pumping
    await this.c.sink.close?.()
  }

  private kick (): void {
    if (!this.running || this.pumping !== undefined) return
    this.pumping = this.pump().finally(() => { this.pumping = undefined; if (this.running && this.items.length > 0) this.kick() })
  }

  private async pump (): Promise<void> {
    const signal = this.ac.signal
    while (this.running && this.items.length > 0) {
      const n = this.items[0] as AlertNotice
      try {
        // a sink that ignores the signal (SMTP) must not hold up the daemon's stop
        await untilAborted(this.c.sink.send(n, signal), signal)
        if (this.items[0] === n) this.items.shift()
        this.s.delivered++
        this.s.lastDeliveredAtMs = this.c.clock.wallNow()
        if (this.attempt > 0) this.c.log.info({ sink: this.name, afterAttempts: this.attempt + 1 }, 'alert sink reachable again')
        this.attempt = 0
      } catch (err) {
        if (signal.aborted) return
        this.s.lastError = errorMessage(err)
        if (err instanceof SinkRejectedError) {
          if (this.items[0] === n) this.items.shift()
          this.s.rejected++
          this.c.log.error({ sink: this.name, key: n.key, error: this.s.lastError }, 'alert sink rejected a notice; dropped')
          this.attempt = 0
          continue
        }
        this.s.failedAttempts++
        const delay = this.backoff(this.attempt++)
        if (this.attempt === 1 || this.attempt % 10 === 0) this.c.log.warn({ sink: this.name, attempt: this.attempt, retryInMs: Math.round(delay), queued: this.items.length, error: this.s.lastError }, 'alert sink unavailable; will retry')
        try { await this.c.clock.sleep(delay, signal) } catch { return }
      }
    }
  }

  /** Exponential backoff with jitter: uniform in [base/2, base], base = min·2^attempt capped at max (sinks recovering from an outage are not hit by every node at once). */
  private backoff (attempt: number): number {
    const base = Math.min(this.o.retryMaxMs, this.o.retryMinMs * 2 ** Math.min(attempt, 30))
    return base / 2 + this.c.random.next() * base / 2
  }
}

/** `p`, or a rejection as soon as `signal` aborts (p's own outcome is then ignored). */
async function untilAborted<T> (p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) throw signal.reason
  let off = (): void => {}
  const aborted = new Promise<never>((_resolve, reject) => {
    const on = (): void => { reject(signal.reason) }
    signal.addEventListener('abort', on, { once: true })
    off = () => { signal.removeEventListener('abort', on) }
  })
  p.catch(() => {}) // settles after an abort: nobody waits for it any more
  try { return await Promise.race([p, aborted]) } finally { off() }
}
