/**
 * Agreeing on time with the watchdog process. The daemon's deadlines are on its Clock; the
 * watchdog compares against its own monotonic clock. A ping sent at local t0, answered with the
 * watchdog's reading W, received at local t1, proves W was read somewhere in [t0, t1], so
 *
 *     W − t1  ≤  offset (= watchdog clock − local clock)  ≤  W − t0
 *
 * for clocks that run at the same rate (on one host both are CLOCK_MONOTONIC). Translating a
 * deadline with the LOWER bound makes the watchdog fence at or before the local deadline,
 * never after it: the error is at most one round trip, and always on the early side. The
 * tightest lower bound over all samples is kept; a daemon stalled while the pong waited only
 * lowers that sample, it never pushes a deadline later.
 */
export class ClockSync {
  private low = -Infinity
  private high = Infinity
  private samples = 0

  /** Adds one exchange. Returns false when it contradicts the earlier ones (clocks disagree in rate). */
  add (t0: number, w: number, t1: number): boolean {
    if (!(t1 >= t0) || !Number.isFinite(w)) return false
    const lo = w - t1
    const hi = w - t0
    this.samples++
    if (lo > this.high || hi < this.low) {
      // the two clocks are not one clock: trust only the newest exchange
      this.low = lo; this.high = hi
      return false
    }
    this.low = Math.max(this.low, lo)
    this.high = Math.min(this.high, hi)
    return true
  }

  get synced (): boolean { return this.samples > 0 }

  /** Conservative offset (lower bound); watchdogTime = localTime + offset. */
  get offset (): number { return this.low }

  /** Width of the uncertainty: how much earlier than asked the watchdog may fence. */
  get uncertainty (): number { return this.high - this.low }

  toWatchdog (localMs: number): number { return localMs + this.low }
  toLocal (watchdogMs: number): number { return watchdogMs - this.low }

  reset (): void { this.low = -Infinity; this.high = Infinity; this.samples = 0 }
}
