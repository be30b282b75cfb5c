import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import type { TimerHandle } from '../../../common/clock.ts'

/** A ManualClock that counts the timers armed, to prove nothing polls. */
export class CountingClock extends ManualClock {
  armed = 0
  override setTimeout (fn: () => void, ms: number): TimerHandle {
    this.armed++
    return super.setTimeout(fn, ms)
  }
}

export interface Sender {
  /** bytes granted so far */
  readonly sent: number
  /** virtual time of each grant, with its size */
  readonly grants: Array<{ at: number, bytes: number }>
  /** stops the loop (its pending take is aborted) and waits for it to end */
  stop: () => Promise<void>
}

/**
 * A sender that takes `chunk` bytes in a loop until stopped, as a replication sender would.
 * Bounded by `maxTakes` so a bug cannot spin forever.
 */
export function startSender (
  clock: ManualClock,
  limiter: { take: (bytes: number, options?: { signal?: AbortSignal }) => Promise<void> },
  chunk: number,
  maxTakes = 1_000_000
): Sender {
  const ac = new AbortController()
  const state = { sent: 0, grants: [] as Array<{ at: number, bytes: number }> }
  const done = (async () => {
    for (let i = 0; i < maxTakes && !ac.signal.aborted; i++) {
      try {
        await limiter.take(chunk, { signal: ac.signal })
      } catch (err) {
        if ((err as { code?: string }).code === 'ERR_ABORTED') return
        throw err
      }
      state.sent += chunk
      state.grants.push({ at: clock.now(), bytes: chunk })
    }
  })()
  return {
    get sent () { return state.sent },
    get grants () { return state.grants },
    stop: async () => { ac.abort(); await done }
  }
}

/** Bytes granted to `s` in the virtual time window [from, to). */
export function sentBetween (s: Sender, from: number, to: number): number {
  let n = 0
  for (const g of s.grants) if (g.at >= from && g.at < to) n += g.bytes
  return n
}

/** Asserts |actual - expected| <= tolerance × expected, with a readable message. */
export function within (actual: number, expected: number, tolerance: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= tolerance * Math.abs(expected), `${what}: ${actual} is not within ${tolerance * 100}% of ${expected}`)
}
