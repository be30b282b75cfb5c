/** Failure-detector timings and the two profiles. Only `LAN_TIMINGS`/`WAN_TIMINGS` are meant to be tuned. */
export interface DetectorTimings {
  /** Period between probes (one member per period, round-robin), before awareness scaling. */
  probeIntervalMs: number
  /** Wait for a direct ack before asking intermediaries (indirect probes), before awareness scaling. */
  probeTimeoutMs: number
  /** Number of intermediaries asked to probe on our behalf (SWIM's k). */
  indirectProbes: number
  /** Suspicion timeout after enough independent confirmations (Lifeguard). */
  suspicionMinMs: number
  /** Suspicion timeout with no independent confirmation (Lifeguard). */
  suspicionMaxMs: number
  /** Local-health multiplier cap: the awareness score stays in [0, awarenessMax - 1]. */
  awarenessMax: number
  /** Piggyback retransmit limit = retransmitMult × ceil(log10(n + 1)). */
  retransmitMult: number
  /** Most updates piggybacked on one message. */
  gossipPerMessage: number
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
