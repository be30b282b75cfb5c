/**
 * The consistent point a fleeced disk's senders read from, held between change rounds.
 *
 * A fleeced round (told-source-runner.ts) freezes the disk at one instant (a QEMU fleecing
 * point), tells the instant's changed ranges and keeps the point open. The senders then read
 * every pending range of the disk from that point, not from the live file, so a generation is
 * the disk at one instant — as long as the dirty maps hold exactly the changes up to that
 * instant. Hence the rules:
 *   - a point is leased only after its round's answer was recorded in the dirty maps
 *     (`endRound(true, …)`) and only when that answer was consistent (told from the point, not a
 *     gap scan of the live file);
 *   - a round begins (`beginRound`) only when no sender reads the held point, and from then on
 *     no lease is given until the round has ended: the held point is released and replaced
 *     while nobody reads it, and a sender never pairs one round's ranges with another's point;
 *   - a round that waits for readers closes the gate to new leases, so a stream of senders
 *     cannot starve it.
 * The guest is never held back by any of this: QEMU's bitmap records its writes meanwhile, and a
 * slow reader only delays the next point (the RPO), not the writes.
 */
import type { Clock } from '../../common/clock.ts'
import { AbortedError } from '../../common/errors.ts'

/** A point in time of one file (QemuPointCapture's PointCapture satisfies it). */
export interface HeldPoint {
  readonly fileSize: number
  read: (offset: number, length: number) => Promise<Buffer>
  /** Whether `read` serves every byte of `ranges` (a copied point holds only some blocks). Absent: the whole file. */
  covers?: (ranges: ReadonlyArray<{ offset: number, length: number }>) => boolean
  /** ok: its changes were recorded; not ok: they are reported again by the next point. */
  release: (ok: boolean) => Promise<void>
}

/** A sender's use of the held point, for one generation. */
export interface PointLease {
  readonly fileSize: number
  read: (offset: number, length: number) => Promise<Buffer>
  /** Whether `read` serves every byte of `ranges`; false: read the live file (a fuzzy generation). */
  covers: (ranges: ReadonlyArray<{ offset: number, length: number }>) => boolean
  /** Ends the lease (idempotent): the next round may replace the point. */
  release: () => void
}

export class PointGate {
  private held: { point: HeldPoint, recorded: boolean, consistent: boolean } | null = null
  private readers = 0
  private inRound = false
  private roundsWaiting = 0
  private waiters: Array<() => void> = []

  constructor (private readonly clock: Clock) {}

  /** Leases in use (tests, status). */
  get leases (): number { return this.readers }

  /**
   * Waits until no sender reads the held point, then opens a round: no lease until endRound().
   * Returns the point to release before a new one is taken, with whether its changes were recorded.
   */
  async beginRound (signal?: AbortSignal): Promise<{ point: HeldPoint, ok: boolean } | null> {
    this.roundsWaiting++
    try {
      // bounded by the readers' generations: each lease ends with its generation's reads
      while (this.readers > 0 || this.inRound) await this.wait(undefined, signal)
    } finally {
      this.roundsWaiting--
    }
    this.inRound = true
    const h = this.held
    this.held = null
    return h === null ? null : { point: h.point, ok: h.recorded }
  }

  /** The round's new point (held until the next round). */
  hold (point: HeldPoint): void { this.held = { point, recorded: false, consistent: false } }

  /** The round's answer was recorded in the dirty maps (or not), and was consistent (or not). Idempotent. */
  endRound (recorded: boolean, consistent: boolean): void {
    if (!this.inRound) return
    this.inRound = false
    if (this.held !== null) { this.held.recorded = recorded; this.held.consistent = recorded && consistent }
    this.wake()
  }

  /** The point a round holds open, for the told source's layout reads within the round. */
  heldPoint (): HeldPoint | undefined { return this.held?.point }

  /**
   * A lease on the held point once no round runs or waits (at most `maxWaitMs`); undefined when
   * there is no recorded consistent point (the sender then reads the live file: a fuzzy generation).
   */
  async lease (maxWaitMs: number, signal?: AbortSignal): Promise<PointLease | undefined> {
    const until = this.clock.now() + maxWaitMs
    // bounded by the deadline
    while ((this.inRound || this.roundsWaiting > 0) && this.clock.now() < until) await this.wait(until - this.clock.now(), signal)
    const h = this.held
    if (this.inRound || this.roundsWaiting > 0 || h === null || !h.consistent) return undefined
    this.readers++
    let done = false
    return {
      fileSize: h.point.fileSize,
      read: async (offset, length) => {
        if (done) throw new AbortedError('read after the point lease ended')
        return await h.point.read(offset, length)
      },
      covers: (ranges) => h.point.covers?.(ranges) ?? true,
      release: () => {
        if (done) return
        done = true
        this.readers--
        this.wake()
      }
    }
  }

  /**
   * Takes the held point out for good (stop: the senders and the tracker have stopped, so
   * nobody reads it and no round runs): the caller releases it.
   */
  drop (): { point: HeldPoint, ok: boolean } | null {
    const h = this.held
    this.held = null
    this.inRound = false
    this.wake()
    return h === null ? null : { point: h.point, ok: h.recorded }
  }

  private wake (): void {
    const w = this.waiters
    this.waiters = []
    for (const fn of w) fn()
  }

  private async wait (ms: number | undefined, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted === true) throw new AbortedError('point gate wait aborted', { cause: signal.reason })
    await new Promise<void>((resolve, reject) => {
      const t = ms !== undefined ? this.clock.setTimeout(finish, ms) : undefined
      const onAbort = (): void => { cleanup(); reject(new AbortedError('point gate wait aborted', { cause: signal?.reason })) }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.waiters.push(finish)
      const self = this
      function cleanup (): void {
        self.clock.clearTimeout(t)
        signal?.removeEventListener('abort', onAbort)
      }
      function finish (): void { cleanup(); resolve() }
    })
  }
}
