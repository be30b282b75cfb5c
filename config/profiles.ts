/**
 * The one table of timing profiles: every failure-detector and every ownership timing for `lan`
 * and `wan`. The daemon gets them through the config (`mesh.profile`, per-key overrides under
 * `mesh.detector` / `ownership`), the simulations (test/sim, test/helpers/election-sim.ts) and
 * the benchmarks read this table, and test/unit/config/profiles.test.ts checks that all of them
 * run exactly these values.
 *
 * LAN is tuned for detection ≤ 3 s at p99 on a switched network (400 ms rounds: the simulator
 * measured p99 2.6–2.9 s for silent failures, 500 ms rounds gave 3.2 s) and an RTO of about
 * 6 s (a survivor may start once the voters' promise, 5 s × (1 + drift) after the last ack, has
 * run out; detection overlaps it). WAN is for links with tens to hundreds of ms of RTT and
 * occasional loss: detection ≤ 25 s, leases four times longer. Why each WAN ownership value is
 * what it is: see WAN_OWNERSHIP below.
 *
 * `timingProblems` states the relations between the values that safety and liveness rest on;
 * the config schema refuses an override that breaks one (ConfigInvalidError) and the
 * ownership machine refuses such timings too (OwnershipTimingError).
 */
export interface DetectorProfile {
  /** Time between probe rounds. */
  probeIntervalMs: number
  /** Direct ack wait before indirect probes. */
  probeTimeoutMs: number
  /** Members asked to probe indirectly (SWIM k). */
  indirectProbes: number
  /** Suspicion timeout once enough independent confirmations arrived (Lifeguard). */
  suspicionMinMs: number
  /** Suspicion timeout with no confirmation. */
  suspicionMaxMs: number
  /** Lifeguard local-health multiplier cap. */
  awarenessMax: number
  /** Gossip retransmit multiplier. */
  retransmitMult: number
  /** Piggybacked updates per message. */
  gossipPerMessage: number
  /**
   * Independent suspicion confirmations wanted to drive the timeout to its minimum; the
   * detector uses K = min(this, n - 2).
   */
  suspicionConfirmations: number
  /**
   * Members an urgent update (new suspicion, death, refutation) is pushed to at once, on top
   * of riding on later pings and acks.
   */
  pushFanout: number
}

export interface OwnershipProfile {
  /** Lease renewal period. */
  renewMs: number
  /** Lease length promised by voters. */
  leaseMs: number
  /** Watchdog deadline after a successful renewal's send time; well inside the lease. */
  fenceMs: number
  /** Bound on any clock's rate error: local elapsed / real elapsed ∈ [1 − d, 1 + d]. */
  driftRatio: number
  /** Wait per rank between election candidates. */
  electionStaggerMs: number
  /** How long a candidate waits for the votes of one round. */
  electionTimeoutMs: number
  /** Base wait before a failed round is retried (plus rank × stagger and jitter). */
  electionRetryMs: number
  /** Random extra wait on retries, uniform in [0, jitter). */
  electionJitterMs: number
  /** Wait before starting a VM again after a failed or unexpected stop. */
  startRetryMs: number
  /**
   * VMs that become ready to start within this window are started together in start order
   * (leases and elections of different VMs complete a few messages apart).
   */
  startCoalesceMs: number
  /** Period of replica generation reports even without change. */
  reportIntervalMs: number
  /** After a planned release, how long others leave the election to the named target. */
  plannedGraceMs: number
  /** How long an operator-requested failover keeps trying. */
  operatorTimeoutMs: number
}

export type ProfileName = 'lan' | 'wan'

export interface Profile { detector: Readonly<DetectorProfile>, ownership: Readonly<OwnershipProfile> }

const LAN_DETECTOR: DetectorProfile = {
  probeIntervalMs: 400,
  probeTimeoutMs: 160,
  indirectProbes: 3,
  suspicionMinMs: 1000,
  suspicionMaxMs: 3000,
  awarenessMax: 8,
  retransmitMult: 4,
  gossipPerMessage: 8,
  suspicionConfirmations: 3,
  pushFanout: 3
}

const LAN_OWNERSHIP: OwnershipProfile = {
  renewMs: 1000,
  leaseMs: 5000,
  fenceMs: 3500,
  driftRatio: 0.02,
  electionStaggerMs: 500,
  electionTimeoutMs: 1000,
  electionRetryMs: 500,
  electionJitterMs: 250,
  startRetryMs: 5000,
  startCoalesceMs: 200,
  reportIntervalMs: 5000,
  plannedGraceMs: 5000,
  operatorTimeoutMs: 30_000
}

const WAN_DETECTOR: DetectorProfile = {
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
}

/**
 * WAN ownership. The lease triple (renew 3 s, lease 20 s, fence 14 s) and the 2 s stagger are
 * what `profile: wan` has always shipped: four times LAN's lease for links where one renewal
 * round may take a few hundred ms and a loss burst may eat several rounds (the fence leaves
 * 14 s / 3 s ≈ 4 renewal rounds, and 5.6 s between fence and the holder's lease end to turn the
 * VM off). The rest follows from that and from WAN round trips (≤ ~300 ms, plus a voter's fsync
 * before it answers):
 * - electionTimeoutMs 2000: a round is two one-way trips plus the voter's durable write; 2 s
 *   covers several 300 ms RTTs (LAN's 1 s would leave one retry's worth of slack).
 * - electionRetryMs 2000 and electionJitterMs 1000: a failed round backs off by one stagger, and
 *   the jitter must exceed the spread of WAN delays to separate two duelling candidates (LAN's
 *   250 ms does not on a 30–300 ms link).
 * - plannedGraceMs 20 000 = leaseMs, as on LAN: if the release is lost, voters refuse the target
 *   until their promise to the old owner (lease × (1 + drift)) ends; the grace must not run out
 *   before that, or the old owner reclaims a VM it has just handed over.
 * - operatorTimeoutMs 120 000: an operator failover after the owner died waits out the voters'
 *   promise (≈ 21 s counted conservatively) and then elections; LAN's 30 s left less than two
 *   WAN election retries of slack. Same ratio to the lease as LAN (6×).
 * - startRetryMs 5000, startCoalesceMs 500, reportIntervalMs 5000: startRetry is about the
 *   hypervisor, not the network — same as LAN; coalescing spans "a few messages apart", which
 *   is a few WAN RTTs; reports are small and a lost one must be repaired well inside the ≥ 20 s
 *   failover window, so they stay at LAN's 5 s.
 */
const WAN_OWNERSHIP: OwnershipProfile = {
  renewMs: 3000,
  leaseMs: 20_000,
  fenceMs: 14_000,
  driftRatio: 0.02,
  electionStaggerMs: 2000,
  electionTimeoutMs: 2000,
  electionRetryMs: 2000,
  electionJitterMs: 1000,
  startRetryMs: 5000,
  startCoalesceMs: 500,
  reportIntervalMs: 5000,
  plannedGraceMs: 20_000,
  operatorTimeoutMs: 120_000
}

export const PROFILES: Readonly<Record<ProfileName, Readonly<Profile>>> = Object.freeze({
  lan: Object.freeze({ detector: Object.freeze(LAN_DETECTOR), ownership: Object.freeze(LAN_OWNERSHIP) }),
  wan: Object.freeze({ detector: Object.freeze(WAN_DETECTOR), ownership: Object.freeze(WAN_OWNERSHIP) })
})

/** Exactly the ownership timings out of a larger object (the config's `ownership` also holds maxConcurrentStarts). */
export function ownershipTiming (o: OwnershipProfile): OwnershipProfile {
  return Object.fromEntries(Object.keys(LAN_OWNERSHIP).map(k => [k, o[k as keyof OwnershipProfile]])) as unknown as OwnershipProfile
}

/**
 * The ownership timings a config runs: the profile's, with the overrides set. Two of them are
 * bound to the lease by the rules below, so when the lease is overridden and they are not they
 * follow it at the profile's ratio (both profiles: plannedGraceMs = leaseMs, operatorTimeoutMs =
 * 6 × leaseMs) instead of keeping a value a longer lease would make invalid — a config that only
 * sets `leaseMs` (all that 0.2 offered) stays valid.
 */
export function resolveOwnership (profile: OwnershipProfile, overrides: Partial<OwnershipProfile>): OwnershipProfile {
  const t = { ...profile, ...overrides }
  if (overrides.leaseMs !== undefined) {
    if (overrides.plannedGraceMs === undefined) t.plannedGraceMs = Math.max(profile.plannedGraceMs, Math.round(t.leaseMs * profile.plannedGraceMs / profile.leaseMs))
    if (overrides.operatorTimeoutMs === undefined) t.operatorTimeoutMs = Math.max(profile.operatorTimeoutMs, Math.round(t.leaseMs * profile.operatorTimeoutMs / profile.leaseMs))
  }
  return t
}

/** One broken relation: the key to change and why. */
export interface TimingProblem { key: string, message: string }

/**
 * The relations the ownership timings must keep (lease.ts explains the arithmetic):
 * - fenceMs < leaseMs × (1 − driftRatio): the watchdog turns the VM off before the holder's own
 *   (shortened) lease ends, so it is off before any voter may grant the VM to someone else;
 * - renewMs < fenceMs: otherwise the watchdog fires between two healthy renewals;
 * - operatorTimeoutMs > the voters' promise, counted conservatively, plus one election round:
 *   otherwise `vmesh failover` after an owner crash gives up before it can ever win;
 * - plannedGraceMs ≥ electionTimeoutMs: the target of a planned failover gets at least one
 *   full election round before the old owner takes its VM back.
 */
export function ownershipTimingProblems (t: OwnershipProfile): TimingProblem[] {
  const out: TimingProblem[] = []
  for (const k of ['renewMs', 'leaseMs', 'fenceMs', 'electionTimeoutMs'] as const) {
    if (!Number.isFinite(t[k]) || t[k] <= 0) out.push({ key: k, message: 'must be a positive number' })
  }
  for (const k of ['electionStaggerMs', 'electionRetryMs', 'electionJitterMs', 'startRetryMs', 'startCoalesceMs', 'reportIntervalMs', 'plannedGraceMs', 'operatorTimeoutMs'] as const) {
    if (!Number.isFinite(t[k]) || t[k] < 0) out.push({ key: k, message: 'must be a non-negative number' })
  }
  if (!(t.driftRatio >= 0 && t.driftRatio < 0.5)) out.push({ key: 'driftRatio', message: 'must be in [0, 0.5)' })
  if (out.length > 0) return out
  if (t.fenceMs >= t.leaseMs * (1 - t.driftRatio)) out.push({ key: 'fenceMs', message: `must be well inside the lease: below leaseMs × (1 − driftRatio) = ${round(t.leaseMs * (1 - t.driftRatio))}` })
  if (t.renewMs >= t.fenceMs) out.push({ key: 'renewMs', message: `must be below fenceMs (${t.fenceMs})` })
  const promise = t.leaseMs * (1 + t.driftRatio) * (1 + t.driftRatio) / (1 - t.driftRatio)
  if (t.operatorTimeoutMs <= promise + t.electionTimeoutMs) out.push({ key: 'operatorTimeoutMs', message: `must exceed the voters' promise after an owner's last renewal, counted conservatively, plus one election round: > ${round(promise + t.electionTimeoutMs)}` })
  if (t.plannedGraceMs < t.electionTimeoutMs) out.push({ key: 'plannedGraceMs', message: `must be at least electionTimeoutMs (${t.electionTimeoutMs})` })
  return out
}

/** The detector's own relations: a probe's ack wait ends inside its round; min ≤ max suspicion. */
export function detectorTimingProblems (t: DetectorProfile): TimingProblem[] {
  const out: TimingProblem[] = []
  if (t.probeTimeoutMs >= t.probeIntervalMs) out.push({ key: 'probeTimeoutMs', message: `must be shorter than probeIntervalMs (${t.probeIntervalMs})` })
  if (t.suspicionMinMs > t.suspicionMaxMs) out.push({ key: 'suspicionMinMs', message: `must not exceed suspicionMaxMs (${t.suspicionMaxMs})` })
  return out
}

function round (x: number): number { return Math.round(x * 1000) / 1000 }
