/**
 * Progress of long work, as the dashboard shows it: rate and ETA from the replication status of
 * every node heard from (own status first, then the peers' summaries, newest wins per item).
 * - seed: a target receiving its initial copy (fraction sent, rate, bytes left → ETA);
 * - transfer: a target behind with bytes pending at a measured rate — what a planned failover's
 *   final ship and a catch-up after an outage wait for.
 * Verify, restore and final ships are this node's own operations (`status.operations`, with
 * their bytes, rate and ETA): the page reads them from the status, not from here.
 */
import type { StatusSummaryMessage } from '../../protocol/status-summary/index.ts'

export interface ProgressItem {
  kind: 'seed' | 'transfer'
  vm: string
  /** Source → target. */
  from: string
  to: string
  /** 0..1 when known. */
  fraction: number | null
  bytesPending: number
  rateBytesPerSec: number | null
  /** null: no rate measured yet. */
  etaMs: number | null
}

export function progressItems (summaries: Array<StatusSummaryMessage | null>): ProgressItem[] {
  const out = new Map<string, ProgressItem>()
  for (const s of summaries) {
    if (s === null) continue
    for (const v of s.vms) {
      for (const t of v.targets) {
        const seeding = t.state === 'seeding'
        if (!seeding && t.bytesPending === 0) continue
        if (!seeding && t.state !== 'behind') continue
        const rate = t.rateBytesPerSec !== null && t.rateBytesPerSec > 0 ? t.rateBytesPerSec : null
        const key = `${v.name}\u0000${s.node}\u0000${t.node}`
        out.set(key, {
          kind: seeding ? 'seed' : 'transfer',
          vm: v.name,
          from: s.node,
          to: t.node,
          fraction: seeding ? t.seedProgress : null,
          bytesPending: t.bytesPending,
          rateBytesPerSec: rate,
          etaMs: rate === null ? null : Math.round(t.bytesPending / rate * 1000)
        })
      }
    }
  }
  return [...out.values()]
}
