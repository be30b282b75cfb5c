/**
 * Piggyback queue (memberlist's TransmitLimitedQueue, simplified for a fixed membership): at
 * most one pending update per member (a newer one replaces it), each sent at most `limit`
 * times, the least-transmitted (then newest) first.
 */
import type { Update } from '../../protocol/membership/messages.ts'

interface Entry { update: Update, transmits: number, order: number }

export class GossipQueue {
  private readonly entries = new Map<string, Entry>()
  private order = 0

  constructor (private readonly limit: number) {}

  get size (): number { return this.entries.size }

  enqueue (update: Update): void {
    this.entries.set(update.id, { update, transmits: 0, order: this.order++ })
  }

  /** Updates to piggyback on the next message; counts them as transmitted. */
  take (max: number): Update[] {
    if (max <= 0 || this.entries.size === 0) return []
    const picked = [...this.entries.values()]
      .sort((a, b) => a.transmits - b.transmits || b.order - a.order)
      .slice(0, max)
    for (const e of picked) {
      e.transmits++
      if (e.transmits >= this.limit) this.entries.delete(e.update.id)
    }
    return picked.map(e => e.update)
  }
}
