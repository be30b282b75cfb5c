/**
 * Lifeguard local health ("awareness"): a score in [0, max - 1] that grows when we have
 * evidence that *we* are slow (missing nacks, having to refute, event-loop lag) and shrinks
 * with every successful probe. Probe interval and timeout are multiplied by (score + 1), so an
 * overloaded node waits longer before accusing others of its own slowness.
 */
export class Awareness {
  private value = 0

  constructor (private readonly max: number) {}

  get score (): number { return this.value }

  /** Applies a delta, clamped; returns true when the score changed. */
  apply (delta: number): boolean {
    const before = this.value
    this.value = Math.min(Math.max(0, this.max - 1), Math.max(0, this.value + Math.trunc(delta)))
    return this.value !== before
  }

  scale (ms: number): number { return ms * (this.value + 1) }
}
