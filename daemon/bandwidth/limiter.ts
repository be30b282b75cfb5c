/**
 * What a sender holds: its own buckets (the peer's limit, and the VM's when the VM has one) and
 * the whole-node bucket. The own buckets are waited on first, so a send held back by its own
 * limit is not queued in the shared node bucket and delays nobody else; then the node bucket,
 * with the peer's name as its fair-queuing flow, so peers share the node rate evenly by bytes and
 * a busy peer cannot starve a quiet one. A take aborted halfway gives back what it had taken.
 */
import { AbortedError } from '../../common/errors.ts'
import type { TokenBucket } from './bucket.ts'

export interface LimiterTakeOptions {
  signal?: AbortSignal
}

export class BandwidthLimiter {
  private sent = 0
  private readonly own: TokenBucket[]

  constructor (
    /** The peer this limiter sends to; the node bucket's fairness flow. */
    readonly peer: string,
    private readonly node: TokenBucket,
    /** Buckets private to this sender (peer, VM), waited on before the node bucket. */
    own: TokenBucket[],
    /** The VM this limiter sends for, when it has its own limit. */
    readonly vm?: string
  ) {
    this.own = own
  }

  /** Resolves when `bytes` may be sent to the peer; AbortedError when `signal` fires first. */
  take (bytes: number, options: LimiterTakeOptions = {}): Promise<void> {
    const { signal } = options
    if (signal?.aborted === true) return Promise.reject(new AbortedError('bandwidth wait aborted', { cause: signal.reason }))
    if (this.own.every(b => b.unlimited)) {
      const p = this.node.take(bytes, { signal, flow: this.peer })
      if (this.node.unlimited) this.sent += bytes
      else void p.then(() => { this.sent += bytes }, () => {})
      return p
    }
    return this.takeAll(bytes, signal)
  }

  private async takeAll (bytes: number, signal: AbortSignal | undefined): Promise<void> {
    let taken = 0
    try {
      for (const b of this.own) {
        await b.take(bytes, { signal })
        taken++
      }
      await this.node.take(bytes, { signal, flow: this.peer })
    } catch (err) {
      for (let i = 0; i < taken; i++) this.own[i]?.refund(bytes)
      throw err
    }
    this.sent += bytes
  }

  /** The most this sender can get right now: the tightest of its buckets. */
  get rate (): number { return Math.min(this.node.rate, ...this.own.map(b => b.rate)) }
  /** Bytes granted to this limiter so far. */
  get sentBytes (): number { return this.sent }
}
