import type { DetectorProfile } from '../../config/profiles.ts'

/**
 * Failure-detector timings and the two profiles. The configurable knobs are the config's `DetectorProfile` (one definition, documented there);
 * the detector adds two tunables the config does not expose.
 */
export interface DetectorTimings extends DetectorProfile {
  /**
   * Independent suspicion confirmations wanted to drive the timeout to its minimum; the
   * detector uses K = min(this, n - 2). @default 3
   */
  suspicionConfirmations?: number
  /**
   * Members an urgent update (new suspicion, death, refutation) is pushed to at once, on top
   * of riding on later pings and acks. @default 3
   */
  pushFanout?: number
}

export const LAN_TIMINGS: Readonly<DetectorTimings> = Object.freeze({
  probeIntervalMs: 500,
  probeTimeoutMs: 200,
  indirectProbes: 3,
  suspicionMinMs: 1000,
  suspicionMaxMs: 3000,
  awarenessMax: 8,
  retransmitMult: 4,
  gossipPerMessage: 8,
  suspicionConfirmations: 3,
  pushFanout: 3
})

export const WAN_TIMINGS: Readonly<DetectorTimings> = Object.freeze({
  probeIntervalMs: 2000,
  probeTimeoutMs: 1000,
  indirectProbes: 3,
  suspicionMinMs: 6000,
  suspicionMaxMs: 18000,
  awarenessMax: 8,
  retransmitMult: 4,
  gossipPerMessage: 8,
  suspicionConfirmations: 3,
  pushFanout: 3
})

/** How many times one update is piggybacked before it is dropped from the queue. */
export function retransmitLimit (timings: DetectorTimings, clusterSize: number): number {
  return Math.max(1, timings.retransmitMult * Math.ceil(Math.log10(clusterSize + 1)))
}

/** Confirmations wanted (K) in a cluster of `clusterSize` members including ourselves. */
export function expectedConfirmations (timings: DetectorTimings, clusterSize: number): number {
  return Math.max(0, Math.min(timings.suspicionConfirmations ?? 3, clusterSize - 2))
}
