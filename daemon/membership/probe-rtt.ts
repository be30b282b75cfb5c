/**
 * Round trips of our direct probes to one member (ping sent → its ack received), for status and
 * for telling a slow peer from a lost message: an ack that arrives after its probe already
 * failed is counted as late, with its round trip, instead of being forgotten.
 */

/** Round trips kept per member for the percentiles. */
const RING = 256

export interface ProbeRttView {
  /** Acks received in time (every one since start). */
  samples: number
  lastMs: number
  /** Over the last RING acks in time. */
  p50Ms: number
  p99Ms: number
  /** Largest round trip of an ack in time, since start. */
  maxMs: number
  /** Acks that came after their probe had failed (the member was suspected meanwhile). */
  lateAcks: number
  /** Round trip of the newest late ack. */
  lastLateMs?: number
}

export class ProbeRtt {
  private readonly ring = new Float64Array(RING)
  private count = 0
  private last = 0
  private max = 0
  private late = 0
  private lastLate: number | undefined

  onAck (rttMs: number): void {
    this.ring[this.count++ % RING] = rttMs
    this.last = rttMs
    if (rttMs > this.max) this.max = rttMs
  }

  onLateAck (rttMs: number): void {
    this.late++
    this.lastLate = rttMs
  }

  view (): ProbeRttView | undefined {
    if (this.count === 0 && this.late === 0) return undefined
    const n = Math.min(this.count, RING)
    const sorted = this.ring.slice(0, n).sort()
    const pct = (q: number): number => n === 0 ? 0 : round(sorted[Math.min(n - 1, Math.floor(q * n))] as number)
    return {
      samples: this.count,
      lastMs: round(this.last),
      p50Ms: pct(0.5),
      p99Ms: pct(0.99),
      maxMs: round(this.max),
      lateAcks: this.late,
      ...(this.lastLate !== undefined ? { lastLateMs: round(this.lastLate) } : {})
    }
  }
}

function round (ms: number): number { return Math.round(ms * 10) / 10 }
