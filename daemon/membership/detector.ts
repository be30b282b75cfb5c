/**
 * SWIM failure detector with the Lifeguard extensions, as a pure state machine (no timers, no
 * I/O): every input takes `now` and returns the messages to send and the events to report.
 *
 * One probe (one member per interval, round-robin over a list reshuffled every round, dead
 * members included so a returning peer is noticed within one round):
 *   ping(seq, claim) ─▶ ack before the interval ends ─▶ success (awareness −1)
 *     └─ no ack after probeTimeout: pingReq to k random alive members, which ping the target
 *        and relay its ack, or nack at 80 % of our window
 *        └─ still no ack at the end of the interval ─▶ suspect(target, from = self);
 *           awareness +1 if no intermediary even nacked (we are the likely problem)
 * Probe interval and timeout are stretched by (awareness + 1) (Lifeguard local health).
 *
 * A suspicion runs a Lifeguard timer that shrinks from max toward min as distinct members
 * confirm it; on expiry the member is dead. Beyond memberlist, for speed on small clusters:
 * a suspicion heard from others makes us probe the member at once (our ping carries the
 * suspicion — the buddy system — so a live member refutes in its ack, a dead one gets our
 * confirmation early); we re-ping our suspects every interval; new suspicions, confirmations,
 * deaths and refutations are pushed to a few members at once (a `gossip` message) instead of
 * only riding on later pings; a refuting member answers its accuser directly.
 *
 * Incarnations: every message carries the sender's incarnation, and pings (and acks, when
 * they disagree) carry the sender's view of the recipient. A member hearing a suspect/dead
 * claim about itself at ≥ its incarnation — or any claim above it, which is what a restarted
 * member that forgot its incarnation hears — jumps above it and gossips alive. That is how a
 * peer we remember as dead@5 but which restarted at 1 is alive again after one probe. A member
 * seen back from the dead (or told it was dead) makes us re-probe every dead member at once:
 * after a partition heals, views converge in a round trip rather than a round.
 *
 * If we are called far later than the deadline we asked for (process paused, event loop
 * starved), the missed time is not held against peers: all pending timers move by the gap
 * and the gap counts as local lag (awareness).
 */
import type { Random } from '../../common/random.ts'
import { shuffle } from '../../common/random.ts'
import { UPDATE_KIND_WIRE } from '../../protocol/membership/messages.ts'
import type { Ack, Claim, MemberState, SwimMessage, Update } from '../../protocol/membership/messages.ts'
import { Awareness } from './awareness.ts'
import { ProbeRtt, type ProbeRttView } from './probe-rtt.ts'
import { GossipQueue } from './gossip.ts'
import { Suspicion } from './suspicion.ts'
import { expectedConfirmations, retransmitLimit } from './timings.ts'
import type { DetectorTimings } from './timings.ts'

export type { DetectorTimings } from './timings.ts'
export type { MemberState } from '../../protocol/membership/messages.ts'

export interface MemberView {
  id: string
  state: MemberState
  incarnation: number
  /** Monotonic time of the last state change (construction time initially). */
  sinceMs: number
  /** True once the member has been alive in our view at least once. */
  everSeen: boolean
  /** Round trips of our direct probes to it (absent before the first ack). */
  probeRtt?: ProbeRttView
}

export type DetectorEvent =
  | { type: 'member', id: string, state: MemberState, incarnation: number, previous: MemberState }
  | { type: 'refuted', incarnation: number }
  | { type: 'awareness', score: number }
  /** The member's ack to our direct probe came after the probe had failed (we suspected it). */
  | { type: 'late-ack', id: string, rttMs: number }

export interface Output {
  send: Array<{ to: string, msg: SwimMessage }>
  events: DetectorEvent[]
}

export interface DetectorInit {
  self: string
  /** Every configured peer (self, if listed, is ignored). */
  peers: string[]
  timings: DetectorTimings
  random: Random
  now: number
  /** Our starting incarnation. @default 1 */
  incarnation?: number
}

/** Fraction of the requester's window after which an intermediary gives up and nacks (Lifeguard). */
const NACK_FRACTION = 0.8

interface Member {
  id: string
  state: MemberState
  incarnation: number
  sinceMs: number
  everSeen: boolean
  suspicion?: Suspicion
  /** While suspect: when we probe it again ourselves (so we hear its refutation even if gossip misses us). */
  recheckAt: number
  rtt: ProbeRtt
}

interface Probe {
  target: string
  seq: number
  timeoutAt: number
  deadline: number
  helpers: string[]
  nacks: Set<string>
  indirectSent: boolean
  /** Finished (acked or failed); kept until forgetAt so late acks still count as evidence. */
  done: boolean
  forgetAt: number
  targetState: MemberState
  /** When the ping went out (round trips for status; not moved by lag absorption). */
  sentAt: number
  /** Ended without an ack (an ack after this is late). */
  failed?: boolean
}

interface Relay {
  requester: string
  requesterSeq: number
  target: string
  nackAt: number
  expireAt: number
  nacked: boolean
}

export class Detector {
  private readonly id: string
  private readonly timings: DetectorTimings
  private readonly random: Random
  private incarnation: number
  private readonly peers = new Map<string, Member>()
  private readonly awareness: Awareness
  private readonly gossip: GossipQueue
  private confirmationsWanted: number
  private maxRelays: number
  private readonly probes = new Map<number, Probe>()
  private readonly probing = new Map<string, number>()
  private readonly relays = new Map<number, Relay>()
  private order: string[] = []
  private orderIndex = 0
  private nextProbeAt: number
  private seq: number
  private lastNow: number
  private lagCoveredUntil: number
  /** An urgent update (suspicion, death, refutation) is waiting to be pushed at the end of this input. */
  private pushPending = false
  private started = false
  private reprobeDead = false
  private lastReprobeAt = -Infinity
  /** Accusers already sent our refutation, with the incarnation they were sent. */
  private readonly answered = new Map<string, number>()
  private out: Output = { send: [], events: [] }

  constructor (init: DetectorInit) {
    this.id = init.self
    this.timings = init.timings
    this.random = init.random
    this.incarnation = init.incarnation ?? 1
    for (const p of init.peers) {
      if (p === init.self || this.peers.has(p)) continue
      this.peers.set(p, { id: p, state: 'dead', incarnation: 0, sinceMs: init.now, everSeen: false, recheckAt: Infinity, rtt: new ProbeRtt() })
    }
    const clusterSize = this.peers.size + 1
    this.awareness = new Awareness(init.timings.awarenessMax)
    this.gossip = new GossipQueue(retransmitLimit(init.timings, clusterSize))
    this.confirmationsWanted = expectedConfirmations(init.timings, clusterSize)
    this.maxRelays = Math.max(64, 4 * clusterSize)
    this.seq = this.random.int(0x7fff_ffff)
    this.lastNow = init.now
    this.lagCoveredUntil = init.now
    this.nextProbeAt = init.now
    this.gossip.enqueue({ kind: 'alive', id: this.id, incarnation: this.incarnation })
  }

  // ------------------------------------------------------------------ public inputs

  /** Runs due probes and timeouts; calling it early does nothing harmful. */
  tick (now: number): Output {
    this.catchUp(now)
    return this.flush()
  }

  /** A message from peer `from` (authenticated by the transport). */
  step (now: number, from: string, msg: SwimMessage): Output {
    const t = this.catchUp(now)
    if (!this.peers.has(from)) return this.flush()
    switch (msg.type) {
      case 'ping': this.observeAlive(t, from, msg.incarnation); break
      case 'ack': this.onAck(t, from, msg.seq, msg.incarnation); break
      case 'pingReq': this.onPingReq(t, from, msg.seq, msg.incarnation, msg.target, msg.claim, msg.timeoutMs); break
      case 'nack': this.onNack(t, from, msg.seq, msg.incarnation); break
      case 'gossip': this.observeAlive(t, from, msg.incarnation); break
    }
    for (const u of msg.piggyback) this.applyUpdate(t, from, u)
    if ((msg.type === 'ping' || msg.type === 'ack') && msg.target !== undefined) {
      const before = this.incarnation
      this.onClaimAboutSelf(msg.target)
      // A pinger learns our new incarnation from the ack; an acker needs to be told.
      if (msg.type === 'ack' && this.incarnation !== before) this.answerAccuser(from)
    }
    if (msg.type === 'ping') this.replyToPing(from, msg.seq, msg.incarnation)
    return this.flush()
  }

  /**
   * Replaces the configured peer set (`vmesh reload`). Members that stay keep their state;
   * new ones start dead-and-unseen and are probed at once; removed ones are forgotten.
   */
  setPeers (now: number, peers: string[]): Output {
    const t = this.catchUp(now)
    const want = new Set(peers.filter(p => p !== this.id))
    for (const id of [...this.peers.keys()]) {
      if (want.has(id)) continue
      this.peers.delete(id)
      this.probing.delete(id)
    }
    this.order = this.order.filter(id => want.has(id))
    this.orderIndex = Math.min(this.orderIndex, this.order.length)
    const clusterSize = want.size + 1
    this.confirmationsWanted = expectedConfirmations(this.timings, clusterSize)
    this.maxRelays = Math.max(64, 4 * clusterSize)
    for (const id of want) {
      if (this.peers.has(id)) continue
      this.peers.set(id, { id, state: 'dead', incarnation: 0, sinceMs: t, everSeen: false, recheckAt: Infinity, rtt: new ProbeRtt() })
      this.startProbe(t, id)
    }
    return this.flush()
  }

  /** The connection to `peer` closed: probe it now, out of turn. Does not by itself suspect it. */
  transportLost (now: number, peer: string): Output {
    const t = this.catchUp(now)
    if (this.peers.has(peer) && !this.probing.has(peer)) this.startProbe(t, peer)
    return this.flush()
  }

  /** Our event loop lagged by `lagMs` (Lifeguard local health: stretch our own timeouts). */
  observeLag (now: number, lagMs: number): Output {
    const t = this.catchUp(now)
    if (Number.isFinite(lagMs) && lagMs > 0) this.noteLag(t, lagMs)
    return this.flush()
  }

  /** When tick() must next be called (always finite). */
  nextDeadline (): number {
    let next = this.nextProbeAt
    for (const p of this.probes.values()) {
      if (p.done) continue
      next = Math.min(next, p.indirectSent ? p.deadline : p.timeoutAt)
    }
    for (const r of this.relays.values()) if (!r.nacked) next = Math.min(next, r.nackAt)
    for (const m of this.peers.values()) if (m.suspicion !== undefined) next = Math.min(next, m.suspicion.expiresAt, m.recheckAt)
    return next
  }

  members (): MemberView[] {
    return [...this.peers.values()].map(m => {
      const rtt = m.rtt.view()
      return { id: m.id, state: m.state, incarnation: m.incarnation, sinceMs: m.sinceMs, everSeen: m.everSeen, ...(rtt !== undefined ? { probeRtt: rtt } : {}) }
    })
  }

  self (): { id: string, incarnation: number, awareness: number } {
    return { id: this.id, incarnation: this.incarnation, awareness: this.awareness.score }
  }

  // ------------------------------------------------------------------ time

  /** Clamps `now` to be monotonic, absorbs a time jump, runs everything that is due. */
  private catchUp (now: number): number {
    const t = Math.max(now, this.lastNow)
    const late = t - this.nextDeadline()
    if (late > this.timings.probeTimeoutMs / 2) {
      this.shiftTimers(late)
      this.noteLag(t, late)
    }
    this.lastNow = t
    this.runTimers(t)
    return t
  }

  private shiftTimers (ms: number): void {
    this.nextProbeAt += ms
    for (const p of this.probes.values()) { p.timeoutAt += ms; p.deadline += ms; p.forgetAt += ms }
    for (const r of this.relays.values()) { r.nackAt += ms; r.expireAt += ms }
    for (const m of this.peers.values()) { m.suspicion?.shift(ms); m.recheckAt += ms }
  }

  /** Counts lag once even when the driver's lag probe and our own jump detection both see it. */
  private noteLag (now: number, lagMs: number): void {
    const uncovered = now - Math.max(now - lagMs, this.lagCoveredUntil)
    this.lagCoveredUntil = Math.max(this.lagCoveredUntil, now)
    const timeout = this.timings.probeTimeoutMs
    if (uncovered < timeout / 4) return
    this.adjustAwareness(Math.min(Math.ceil(uncovered / timeout), Math.ceil(this.timings.awarenessMax / 2)))
  }

  private runTimers (now: number): void {
    for (const [seq, r] of this.relays) {
      if (!r.nacked && now >= r.nackAt) {
        r.nacked = true
        this.send(r.requester, { type: 'nack', seq: r.requesterSeq, incarnation: this.incarnation, piggyback: this.piggyback() })
      }
      if (now >= r.expireAt) this.relays.delete(seq)
    }
    for (const [seq, p] of this.probes) {
      if (p.done) {
        if (now >= p.forgetAt) this.probes.delete(seq)
        continue
      }
      if (!p.indirectSent && now >= p.timeoutAt) this.sendIndirect(now, p)
      if (now >= p.deadline) this.failProbe(now, p)
    }
    for (const m of this.peers.values()) {
      if (m.suspicion === undefined) continue
      if (now >= m.suspicion.expiresAt) this.declareDead(now, m, m.incarnation, this.id)
      else if (now >= m.recheckAt) {
        // Not stretched by awareness: a recheck can only clear the suspicion (our own
        // confirmation counts once), and an unhealthy node is the one most likely to be stale.
        m.recheckAt = now + this.timings.probeIntervalMs
        const inFlight = this.probing.get(m.id)
        if (inFlight === undefined) this.startProbe(now, m.id)
        else this.send(m.id, { type: 'ping', seq: inFlight, incarnation: this.incarnation, target: claimOf(m), piggyback: this.piggyback() })
      }
    }
    if (!this.started) {
      // First contact with everyone at once: pings carry our incarnation and acks theirs, so a
      // (re)starting node and its peers learn each other within one round trip, not one round.
      this.started = true
      for (const id of shuffle([...this.peers.keys()], this.random)) if (!this.probing.has(id)) this.startProbe(now, id)
    }
    if (now >= this.nextProbeAt) {
      const target = this.nextTarget()
      if (target !== undefined) this.startProbe(now, target)
      this.nextProbeAt = now + this.awareness.scale(this.timings.probeIntervalMs)
    }
  }

  // ------------------------------------------------------------------ probing

  private nextTarget (): string | undefined {
    for (let i = 0; i <= this.peers.size; i++) {
      if (this.orderIndex >= this.order.length) {
        this.order = shuffle([...this.peers.keys()], this.random)
        this.orderIndex = 0
      }
      const id = this.order[this.orderIndex++]
      if (id !== undefined && !this.probing.has(id)) return id
    }
    return undefined
  }

  private startProbe (now: number, target: string): void {
    const m = this.peers.get(target)
    if (m === undefined) return
    const seq = this.nextSeq()
    this.probes.set(seq, {
      target,
      seq,
      timeoutAt: now + this.awareness.scale(this.timings.probeTimeoutMs),
      deadline: now + this.awareness.scale(this.timings.probeIntervalMs),
      helpers: [],
      nacks: new Set(),
      indirectSent: false,
      done: false,
      forgetAt: Infinity,
      targetState: m.state,
      sentAt: now
    })
    this.probing.set(target, seq)
    this.send(target, { type: 'ping', seq, incarnation: this.incarnation, target: claimOf(m), piggyback: this.piggyback() })
  }

  private sendIndirect (now: number, p: Probe): void {
    p.indirectSent = true
    const target = this.peers.get(p.target)
    if (target === undefined) return
    const candidates = [...this.peers.values()].filter(m => m.state === 'alive' && m.id !== p.target).map(m => m.id)
    p.helpers = shuffle(candidates, this.random).slice(0, this.timings.indirectProbes)
    const timeoutMs = Math.max(0, Math.min(0xffff_ffff, Math.round(p.deadline - now)))
    for (const h of p.helpers) {
      this.send(h, { type: 'pingReq', seq: p.seq, incarnation: this.incarnation, target: p.target, claim: claimOf(target), timeoutMs, piggyback: this.piggyback() })
    }
  }

  private finishProbe (now: number, p: Probe): void {
    p.done = true
    p.forgetAt = Math.max(now, p.deadline) + this.awareness.scale(this.timings.probeIntervalMs)
    if (this.probing.get(p.target) === p.seq) this.probing.delete(p.target)
  }

  private failProbe (now: number, p: Probe): void {
    this.finishProbe(now, p)
    p.failed = true
    // Lifeguard: a nack proves the intermediary heard us, so only missing nacks point at us.
    // Unlike memberlist (+1 per missing nack) we add 1 only when *no* nack came back: one nack
    // already shows our own messaging works, and silent intermediaries are then more likely cut
    // off by a partition (memberlist's rule inflated awareness and slowed detection in a split).
    if (p.helpers.length > 0) this.adjustAwareness(p.nacks.size === 0 ? 1 : 0)
    else if (p.targetState !== 'dead') this.adjustAwareness(1)
    const m = this.peers.get(p.target)
    if (m === undefined || m.state === 'dead') return
    // A probe begun while the member was dead (its ping most likely dropped for want of a
    // connection) says nothing about the member that has come alive since: without this, a
    // peer that starts up within a probe interval of our probe was suspected half a second
    // after its first contact (the WAN test's suspicion under a saturating seed). The next
    // probe, one interval later, tests the path for real.
    if (p.targetState === 'dead') return
    this.suspect(now, m, m.incarnation, this.id)
  }

  // ------------------------------------------------------------------ message handlers

  private replyToPing (from: string, seq: number, incarnation: number): void {
    const m = this.peers.get(from)
    if (m === undefined) return
    const ack: Ack = { type: 'ack', seq, incarnation: this.incarnation, piggyback: this.piggyback() }
    // Tell the pinger what we believe when it disagrees, so a stale or restarted member refutes.
    if (m.state !== 'alive' || m.incarnation !== incarnation) ack.target = claimOf(m)
    this.send(from, ack)
  }

  private onAck (now: number, from: string, seq: number, incarnation: number): void {
    const p = this.probes.get(seq)
    if (p !== undefined && (from === p.target || p.helpers.includes(from))) {
      if (from === p.target) {
        const rtt = this.peers.get(p.target)?.rtt
        if (!p.done) rtt?.onAck(now - p.sentAt)
        else if (p.failed === true) {
          // the evidence that the member was slow, not gone
          rtt?.onLateAck(now - p.sentAt)
          this.out.events.push({ type: 'late-ack', id: p.target, rttMs: now - p.sentAt })
        }
      }
      this.observeAlive(now, p.target, incarnation)
      if (!p.done) {
        this.finishProbe(now, p)
        this.adjustAwareness(-1)
      }
      return
    }
    const r = this.relays.get(seq)
    if (r !== undefined && from === r.target) {
      this.relays.delete(seq)
      this.observeAlive(now, r.target, incarnation)
      this.send(r.requester, { type: 'ack', seq: r.requesterSeq, incarnation, piggyback: this.piggyback() })
    }
  }

  private onPingReq (now: number, from: string, seq: number, incarnation: number, target: string, claim: Claim | undefined, timeoutMs: number): void {
    this.observeAlive(now, from, incarnation)
    const m = this.peers.get(target)
    if (m === undefined || target === from || this.relays.size >= this.maxRelays) return
    const window = Math.min(Math.max(0, timeoutMs), this.timings.probeIntervalMs * this.timings.awarenessMax)
    const relaySeq = this.nextSeq()
    this.relays.set(relaySeq, { requester: from, requesterSeq: seq, target, nackAt: now + window * NACK_FRACTION, expireAt: now + window, nacked: false })
    const own = claimOf(m)
    const forwarded = claim !== undefined && newerClaim(claim, own) ? claim : own
    this.send(target, { type: 'ping', seq: relaySeq, incarnation: this.incarnation, target: forwarded, piggyback: this.piggyback() })
  }

  private onNack (now: number, from: string, seq: number, incarnation: number): void {
    this.observeAlive(now, from, incarnation)
    const p = this.probes.get(seq)
    if (p !== undefined && !p.done && p.helpers.includes(from)) p.nacks.add(from)
  }

  // ------------------------------------------------------------------ membership rules

  /** `id` itself (directly or through a relay) says it is alive at `incarnation`. */
  private observeAlive (now: number, id: string, incarnation: number): void {
    const m = this.peers.get(id)
    if (m !== undefined && incarnation > m.incarnation) this.setAlive(now, m, incarnation)
  }

  private applyUpdate (now: number, sender: string, u: Update): void {
    if (u.id === this.id) {
      this.onClaimAboutSelf({ state: u.kind, incarnation: u.incarnation })
      if (u.kind !== 'alive') this.answerAccuser(u.from ?? sender)
      return
    }
    const m = this.peers.get(u.id)
    if (m === undefined) return
    const from = u.from !== undefined && (u.from === this.id || this.peers.has(u.from)) ? u.from : sender
    switch (u.kind) {
      case 'alive':
        if (u.incarnation > m.incarnation) this.setAlive(now, m, u.incarnation)
        break
      case 'suspect':
        this.suspect(now, m, u.incarnation, from)
        break
      case 'dead':
        if (u.incarnation >= m.incarnation) this.declareDead(now, m, u.incarnation, from)
        break
    }
  }

  private onClaimAboutSelf (claim: Claim): void {
    if (claim.state === 'alive') {
      // Someone remembers us at a higher incarnation than ours: we restarted and forgot it.
      if (claim.incarnation > this.incarnation) this.refute(claim.incarnation, false)
    } else if (claim.incarnation >= this.incarnation) {
      this.refute(claim.incarnation, true)
      // Declared dead: we were cut off, so the deaths we saw meanwhile may be stale too.
      if (claim.state === 'dead') this.reprobeDead = true
    }
  }

  /**
   * The originator of a suspicion about us needs our refutation most (it is the one whose
   * timer runs without confirmations), and gossip alone may miss it: tell it directly, once
   * per incarnation.
   */
  private answerAccuser (accuser: string): void {
    if (!this.peers.has(accuser) || this.answered.get(accuser) === this.incarnation) return
    this.answered.set(accuser, this.incarnation)
    this.send(accuser, { type: 'gossip', seq: 0, incarnation: this.incarnation, piggyback: [{ kind: 'alive', id: this.id, incarnation: this.incarnation }] })
  }

  private refute (incarnation: number, suspected: boolean): void {
    this.incarnation = Math.min(incarnation + 1, Number.MAX_SAFE_INTEGER)
    this.gossip.enqueue({ kind: 'alive', id: this.id, incarnation: this.incarnation })
    this.out.events.push({ type: 'refuted', incarnation: this.incarnation })
    this.pushPending = true
    if (suspected) this.adjustAwareness(1)
  }

  private setAlive (now: number, m: Member, incarnation: number): void {
    const previous = m.state
    m.incarnation = incarnation
    m.suspicion = undefined
    if (previous !== 'alive') {
      // A cleared suspicion or a return from the dead is urgent news; first contact is not.
      if (m.everSeen) this.pushPending = true
      // One member back from the dead hints that a partition healed: check the other dead now.
      if (m.everSeen && previous === 'dead') this.reprobeDead = true
      this.transition(now, m, 'alive', previous)
    }
    m.everSeen = true
    this.gossip.enqueue({ kind: 'alive', id: m.id, incarnation })
  }

  private suspect (now: number, m: Member, incarnation: number, from: string): void {
    if (incarnation < m.incarnation) return
    if (m.state === 'suspect' && m.suspicion !== undefined) {
      m.incarnation = incarnation
      if (m.suspicion.confirm(from)) {
        this.gossip.enqueue({ kind: 'suspect', id: m.id, incarnation, from })
        // Our own independent confirmation shortens everyone's timer: worth pushing.
        if (from === this.id) this.pushPending = true
      }
      return
    }
    if (m.state === 'dead' && incarnation === m.incarnation) return
    const previous = m.state
    m.incarnation = incarnation
    m.suspicion = new Suspicion(from, this.confirmationsWanted, this.timings.suspicionMinMs, this.timings.suspicionMaxMs, now)
    m.recheckAt = now + this.timings.probeIntervalMs
    this.transition(now, m, 'suspect', previous)
    this.gossip.enqueue({ kind: 'suspect', id: m.id, incarnation, from })
    this.pushPending = true
    // Check it ourselves right away: our ping carries the suspicion, so a live member refutes
    // in its ack; a dead one gets our independent confirmation early.
    if (from !== this.id && !this.probing.has(m.id)) this.startProbe(now, m.id)
  }

  private declareDead (now: number, m: Member, incarnation: number, from: string): void {
    if (m.state === 'dead') {
      m.incarnation = Math.max(m.incarnation, incarnation)
      return
    }
    const previous = m.state
    m.incarnation = Math.max(m.incarnation, incarnation)
    m.suspicion = undefined
    this.transition(now, m, 'dead', previous)
    this.gossip.enqueue({ kind: 'dead', id: m.id, incarnation: m.incarnation, from })
    this.pushPending = true
  }

  private transition (now: number, m: Member, state: MemberState, previous: MemberState): void {
    m.state = state
    m.sinceMs = now
    this.out.events.push({ type: 'member', id: m.id, state, incarnation: m.incarnation, previous })
  }

  private adjustAwareness (delta: number): void {
    if (delta !== 0 && this.awareness.apply(delta)) this.out.events.push({ type: 'awareness', score: this.awareness.score })
  }

  // ------------------------------------------------------------------ plumbing

  /** Out-of-turn probes of every dead member, at most once per probe interval. */
  private probeDeadMembers (now: number): void {
    this.reprobeDead = false
    if (now - this.lastReprobeAt < this.timings.probeIntervalMs) return
    this.lastReprobeAt = now
    for (const m of this.peers.values()) if (m.state === 'dead' && m.everSeen && !this.probing.has(m.id)) this.startProbe(now, m.id)
  }

  /** Sends the freshest updates to a few random alive members now (one batch, counted once). */
  private push (): void {
    this.pushPending = false
    const targets = shuffle([...this.peers.values()].filter(m => m.state === 'alive').map(m => m.id), this.random)
      .slice(0, this.timings.pushFanout)
    if (targets.length === 0) return
    const piggyback = this.piggyback()
    if (piggyback.length === 0) return
    for (const to of targets) this.send(to, { type: 'gossip', seq: 0, incarnation: this.incarnation, piggyback })
  }

  private nextSeq (): number {
    this.seq = (this.seq + 1) >>> 0
    return this.seq
  }

  private piggyback (): Update[] { return this.gossip.take(this.timings.gossipPerMessage) }

  private send (to: string, msg: SwimMessage): void { this.out.send.push({ to, msg }) }

  private flush (): Output {
    if (this.reprobeDead) this.probeDeadMembers(this.lastNow)
    if (this.pushPending) this.push()
    const out = this.out
    this.out = { send: [], events: [] }
    return out
  }
}

function claimOf (m: Member): Claim { return { state: m.state, incarnation: m.incarnation } }

/** Precedence of claims: higher incarnation wins; at equal incarnation dead > suspect > alive. */
function newerClaim (a: Claim, b: Claim): boolean {
  return a.incarnation > b.incarnation || (a.incarnation === b.incarnation && UPDATE_KIND_WIRE[a.state] > UPDATE_KIND_WIRE[b.state])
}
