import type { DetectorProfile } from '../../config/profiles.ts'

/**
 * Failure-detector timings: the config's `DetectorProfile` (one definition, documented there;
 * the values per profile are in config/profiles.ts, PROFILES.lan/wan.detector).
 */
export type DetectorTimings = DetectorProfile

/** How many times one update is piggybacked before it is dropped from the queue. */
export function retransmitLimit (timings: DetectorTimings, clusterSize: number): number {
  return Math.max(1, timings.retransmitMult * Math.ceil(Math.log10(clusterSize + 1)))
}

/** Confirmations wanted (K) in a cluster of `clusterSize` members including ourselves. */
export function expectedConfirmations (timings: DetectorTimings, clusterSize: number): number {
  return Math.max(0, Math.min(timings.suspicionConfirmations, clusterSize - 2))
}
