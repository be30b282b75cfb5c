/**
 * Lifeguard dynamic suspicion (memberlist suspicion.go): the timer starts at `max` and shrinks
 * toward `min` as distinct members independently confirm the suspicion:
 *   timeout = max(min, max - (max - min) · log(C + 1) / log(K + 1))
 * With K = 0 (too few members to expect confirmations) the timeout is `min` from the start.
 * Pure: the owner asks for `expiresAt` and compares it with its own `now`.
 */
export class Suspicion {
  private readonly confirmations = new Set<string>()
  private count = 0
  private start: number

  /** `from` is the originator; it never counts as a confirmation (our own gossip may echo back). */
  constructor (from: string, private readonly k: number, private readonly minMs: number, private readonly maxMs: number, now: number) {
    this.confirmations.add(from)
    this.start = now
  }

  get startedAt (): number { return this.start }
  get confirmationCount (): number { return this.count }

  /** Registers an independent confirmation; returns true if it was new (worth re-gossiping). */
  confirm (from: string): boolean {
    if (this.count >= this.k || this.confirmations.has(from)) return false
    this.confirmations.add(from)
    this.count++
    return true
  }

  get timeoutMs (): number { return suspicionTimeout(this.count, this.k, this.minMs, this.maxMs) }
  get expiresAt (): number { return this.start + this.timeoutMs }

  /** Moves the timer later by `ms` (time during which we could not observe anything). */
  shift (ms: number): void { this.start += ms }
}

export function suspicionTimeout (confirmations: number, k: number, minMs: number, maxMs: number): number {
  if (k < 1) return minMs
  const frac = Math.log(confirmations + 1) / Math.log(k + 1)
  return Math.max(minMs, Math.floor(maxMs - frac * (maxMs - minMs)))
}
