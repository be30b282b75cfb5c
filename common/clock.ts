/**
 * Time as a dependency. daemon/, protocol/ and storage/ never call Date.now, setTimeout or
 * performance.now directly: they take a Clock, so tests run on virtual time (ManualClock) and
 * the same state machines run in the simulator and in the daemon.
 *
 * `now()` is monotonic milliseconds (lease arithmetic uses only this); `wallNow()` is epoch
 * milliseconds for display and for recovery-point timestamps.
 */
export interface TimerHandle { readonly id: number }

export interface Clock {
  /** Monotonic milliseconds since an arbitrary origin. */
  now: () => number
  /** Wall-clock epoch milliseconds (display, timestamps; never for safety arithmetic). */
  wallNow: () => number
  setTimeout: (fn: () => void, ms: number) => TimerHandle
  clearTimeout: (handle: TimerHandle | undefined) => void
  /** Resolves after `ms`; rejects with the signal's reason when aborted. */
  sleep: (ms: number, signal?: AbortSignal) => Promise<void>
}

let nextId = 1

/** The real clock: performance.now() for monotonic time, unref'd timers. */
export class SystemClock implements Clock {
  private readonly timers = new Map<number, NodeJS.Timeout>()

  now (): number { return performance.now() }
  wallNow (): number { return Date.now() }

  setTimeout (fn: () => void, ms: number): TimerHandle {
    const id = nextId++
    const t = setTimeout(() => { this.timers.delete(id); fn() }, Math.max(0, ms))
    this.timers.set(id, t)
    return { id }
  }

  clearTimeout (handle: TimerHandle | undefined): void {
    if (handle == null) return
    const t = this.timers.get(handle.id)
    if (t != null) { clearTimeout(t); this.timers.delete(handle.id) }
  }

  sleep (ms: number, signal?: AbortSignal): Promise<void> {
    return sleepOn(this, ms, signal)
  }
}

export const systemClock: Clock = new SystemClock()

function sleepOn (clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) { reject(signal.reason); return }
    const onAbort = (): void => { clock.clearTimeout(h); reject(signal?.reason) }
    const h = clock.setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve() }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/**
 * Virtual time for tests and simulation: nothing happens until `advance()`; timers fire in
 * deadline order (ties in creation order), each seeing `now()` equal to its deadline.
 */
export class ManualClock implements Clock {
  private t: number
  private wallOffset: number
  private readonly pending = new Map<number, { at: number, fn: () => void }>()

  constructor (start = 0, wallStart = 1_700_000_000_000) {
    this.t = start
    this.wallOffset = wallStart - start
  }

  now (): number { return this.t }
  wallNow (): number { return this.t + this.wallOffset }

  setTimeout (fn: () => void, ms: number): TimerHandle {
    const id = nextId++
    this.pending.set(id, { at: this.t + Math.max(0, ms), fn })
    return { id }
  }

  clearTimeout (handle: TimerHandle | undefined): void {
    if (handle != null) this.pending.delete(handle.id)
  }

  sleep (ms: number, signal?: AbortSignal): Promise<void> { return sleepOn(this, ms, signal) }

  /** Number of timers not yet fired. */
  get pendingTimers (): number { return this.pending.size }

  /** Deadline of the earliest pending timer, or undefined. */
  nextDeadline (): number | undefined {
    let min: number | undefined
    for (const p of this.pending.values()) if (min === undefined || p.at < min) min = p.at
    return min
  }

  /** Moves time forward by `ms`, firing every timer that falls due, in order. */
  advance (ms: number): void {
    const end = this.t + ms
    for (;;) {
      let bestId = -1
      let best: { at: number, fn: () => void } | undefined
      for (const [id, p] of this.pending) {
        if (p.at <= end && (best === undefined || p.at < best.at || (p.at === best.at && id < bestId))) { best = p; bestId = id }
      }
      if (best === undefined) break
      this.pending.delete(bestId)
      this.t = Math.max(this.t, best.at)
      best.fn()
    }
    this.t = end
  }

  /** Like advance(), but yields to the microtask/IO queue between timers so awaiting code runs. */
  async advanceAsync (ms: number): Promise<void> {
    const end = this.t + ms
    for (;;) {
      await new Promise<void>(resolve => setImmediate(resolve))
      const next = this.nextDeadline()
      if (next === undefined || next > end) break
      this.advance(next - this.t)
    }
    this.t = end
    await new Promise<void>(resolve => setImmediate(resolve))
  }
}
