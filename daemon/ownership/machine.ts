/**
 * The ownership machine of one node: leases, the restart election and VM start/stop decisions
 * for every protected VM, as a pure state machine (`step(now, input)`, `tick(now)`,
 * `nextDeadline()`; no timers, no I/O, time only from `now`).
 *
 * Flow per VM:
 *  - Owner: every renewMs a renewal round goes to all voters; a round acked by a majority
 *    (itself included) gives a lease until send + leaseMs·(1−d) and a watchdog deadline at
 *    send + fenceMs (see lease.ts). The VM may run only before that deadline: the machine
 *    emits watchdog, then start (at most maxConcurrentStarts un-acknowledged, in start order),
 *    and stop when the deadline passes or a higher epoch appears.
 *  - Voter (every node): acks renewals unless it granted a higher epoch; grants votes only under
 *    the rules in voter.ts; persists grants before answering (`persist` comes before `send`).
 *    After construction it grants nothing for leaseMs·(1+d): promises given before a restart
 *    are not remembered.
 *  - Candidate (a host with a replica): when the owner is dead in its view (auto policy), when an
 *    operator asks, or when a planned release names it, it waits rank × stagger, votes for itself
 *    and asks every voter for epoch+1. A majority of grants from one round makes it the owner
 *    with a lease counted from that round's send time: finalize, start, announce.
 *  - Forced owner (--force, no majority): no lease; the machine itself moves its fence deadline
 *    fenceMs ahead every renewMs (the VM is fenced when this daemon dies or hangs) until a
 *    majority acks a round and it becomes an ordinary lease.
 *  - Planned failover on the owner: stop → shipFinal → finalGenerationShipped → persist the
 *    release → tell voters, who then waive their promise and the owner-alive rule for epoch+1.
 *  - Room (`place`, when the host's capacity is known): every reconcile, VMs are taken in
 *    priority order; what runs, starts, stops or stands here keeps its room (never evicted), and
 *    each other VM that wants room here (to run as owner, or to stand for election) gets it only
 *    if its memory and vCPUs fit in what is left. A VM without room does not stand and does not
 *    start (status 'no-room', a noRoom event) until room appears. Holders tell the voters
 *    whether a VM fits (`room` messages) so the rank skips holders that will not stand.
 *  - Start order: a queued VM whose `startAfter` VMs do not run yet (here: run state; elsewhere:
 *    the owner's `runState` messages) waits, up to startAfterTimeoutMs, then starts anyway.
 */
import type { Random } from '../../common/random.ts'
import type { ElectionMessage, GenerationRef, OwnerAnnouncement, Release, Renew, RenewAck, RenewNack, ReplicaReport, RequestVote, Room, RunState, Takeover, Vote } from '../../protocol/election/messages.ts'
import { UNLIMITED } from '../../protocol/election/messages.ts'
import { OwnershipConfigError } from './errors.ts'
import { conservativeWait, fenceDeadline, ownerLeaseEnd, validateTiming, voterPromiseEnd } from './lease.ts'
import { compareGeneration, rankCandidates } from './rank.ts'
import { comparePriority, compareStartOrder, learnedSpec, newVmState, restoredSpec, sourceGeneration, toRecord } from './state.ts'
import type { Candidacy, Round, Trigger, VmState } from './state.ts'
import { decideVote } from './voter.ts'
import type { VoterState } from './voter.ts'
import { DEFAULT_START_AFTER_TIMEOUT_MS, recordKey } from './types.ts'
import { PROFILES } from '../../config/profiles.ts'
import type {
  FailoverRefusal, HostCapacity, MemberState, OwnershipEvent, OwnershipInput, OwnershipOutput, OwnershipTiming, PersistRecord,
  StopReason, VmOwnershipStatus, VmSpec, VoteDecision, VoterSpec
} from './types.ts'

export interface OwnershipMachineInit {
  /** This node's ID (must be one of `voters`). */
  self: string
  /** Every configured node, this one included. */
  voters: VoterSpec[]
  vms: VmSpec[]
  /** @default PROFILES.lan.ownership */
  timing?: Partial<OwnershipTiming>
  /** Starts emitted and not yet acknowledged (started/startFailed), per node. @default 2 */
  maxConcurrentStarts?: number
  random: Random
  /** Local monotonic time of construction: the restart quiet period counts from here. */
  now: number
  /** Persisted records from a previous run (any order; the latest per key wins). */
  records?: PersistRecord[]
  /** What this host can hold (net of its reserve); null or absent: not counted. */
  capacity?: HostCapacity | null
}

/** Round numbers reserved per durable write. */
const SEQ_BLOCK = 1 << 20
/** VMs a node tracks at most (configured + learned from peers' messages). */
export const MAX_VMS = 10_000

/** `min`, or `t` when `t` is a deadline after `now` and earlier than `min`. */
function earlier (min: number, now: number, t: number | null): number {
  return t !== null && t > now && t < min ? t : min
}

export class OwnershipMachine {
  readonly self: string
  readonly timing: OwnershipTiming
  /** Grants (or acks) needed: floor(voters / 2) + 1. */
  readonly majority: number
  private readonly voters = new Map<string, VoterSpec>()
  private readonly maxStarts: number
  private readonly random: Random
  private readonly vms = new Map<string, VmState>()
  /** Replica generations reported for VMs not known yet (their spec is still on its way). */
  private readonly pendingApplied = new Map<string, GenerationRef>()
  private readonly members = new Map<string, MemberState>()
  private seq = 1
  private seqReserved = 1
  private now: number
  /** End of the restart quiet period (applies to VMs learned later, too). */
  private readonly quietUntil: number
  private capacity: HostCapacity | null
  /** VMs in room order (priority), rebuilt when a VM or a spec changes. */
  private byPriority: VmState[] | null = null
  /** Each host's capacity and free room as its room messages last said. */
  private readonly hostRoom = new Map<string, { capacity: HostCapacity, free: HostCapacity }>()
  /** Counts VMs newly given room here (tests watch it to judge each placement once). */
  private placedCount = 0
  private persist = new Map<string, PersistRecord>()
  private send: OwnershipOutput['send'] = []
  private events: OwnershipEvent[] = []

  /** Same as the constructor with `records`: the name says what it is for. */
  static restore (init: Omit<OwnershipMachineInit, 'records'>, records: PersistRecord[]): OwnershipMachine {
    return new OwnershipMachine({ ...init, records })
  }

  constructor (init: OwnershipMachineInit) {
    this.self = init.self
    this.timing = { ...PROFILES.lan.ownership, ...init.timing }
    validateTiming(this.timing)
    for (const v of init.voters) {
      if (this.voters.has(v.id)) throw new OwnershipConfigError(`voter ${v.id} is listed twice`)
      this.voters.set(v.id, v)
    }
    if (!this.voters.has(this.self)) throw new OwnershipConfigError(`this node (${this.self}) is not among the voters`)
    this.majority = Math.floor(this.voters.size / 2) + 1
    this.maxStarts = init.maxConcurrentStarts ?? 2
    if (!Number.isInteger(this.maxStarts) || this.maxStarts < 1) throw new OwnershipConfigError('maxConcurrentStarts must be a positive integer')
    this.random = init.random
    this.now = init.now
    this.capacity = init.capacity ?? null
    if (this.capacity !== null) checkCapacity(this.capacity)

    const latest = new Map<string, PersistRecord>()
    for (const r of init.records ?? []) latest.set(recordKey(r), r)
    const seqRec = latest.get('seq')
    if (seqRec?.kind === 'seq') { this.seq = seqRec.reservedUpTo; this.seqReserved = seqRec.reservedUpTo }

    this.quietUntil = voterPromiseEnd(this.now, this.timing)
    for (const spec of init.vms) {
      if (this.vms.has(spec.name)) throw new OwnershipConfigError(`VM ${spec.name} is listed twice`)
      this.checkSpec(spec)
      const rec = latest.get(`vm:${spec.name}`)
      this.vms.set(spec.name, newVmState(spec, rec?.kind === 'vm' ? rec : undefined, this.now, this.quietUntil))
    }
    // VMs we only voted on (a witness's config lists none): their grants must survive too.
    for (const rec of latest.values()) {
      if (rec.kind === 'vm' && !this.vms.has(rec.vm)) this.vms.set(rec.vm, newVmState(restoredSpec(rec, (h) => this.isHost(h)), rec, this.now, this.quietUntil))
    }
  }

  private checkSpec (spec: VmSpec): void {
    if (!this.isHost(spec.home)) throw new OwnershipConfigError(`VM ${spec.name}: home ${spec.home} is not a configured host`)
  }

  /**
   * A VM named in a peer's message that our config does not list (a witness, a host that is
   * not a replica target): we still vote on it, with a placeholder spec and manual policy.
   */
  private learn (vm: string, owner: string): VmState | undefined {
    const known = this.vms.get(vm)
    if (known !== undefined || this.vms.size >= MAX_VMS) return known
    const v = newVmState(learnedSpec(vm, owner), undefined, this.now, this.quietUntil)
    this.vms.set(vm, v)
    this.byPriority = null
    this.takePendingApplied(v)
    return v
  }

  // ------------------------------------------------------------------ public surface

  step (now: number, input: OwnershipInput): OwnershipOutput {
    this.advanceTo(now)
    this.handle(input)
    this.reconcile()
    return this.flush()
  }

  tick (now: number): OwnershipOutput {
    this.advanceTo(now)
    this.reconcile()
    return this.flush()
  }

  /** Earliest local time at which tick() has something to do; undefined when nothing is pending. */
  nextDeadline (): number | undefined {
    // Runs after every input: no closure per call (the simulations call it millions of times).
    const now = this.now
    const t = this.timing
    let min = Infinity
    let oldestQueued = Infinity
    for (const v of this.vms.values()) {
      if (v.run === 'queued') oldestQueued = Math.min(oldestQueued, v.queuedAt)
      if (v.owner === this.self) min = earlier(min, now, v.nextRenewAt)
      if (this.isActiveOwner(v)) {
        min = earlier(min, now, v.renewRetryAt)
        if (v.run !== 'off' && v.run !== 'stopping') min = earlier(min, now, v.fenceUntil)
        if (v.run === 'off') min = earlier(min, now, v.startRetryAt)
      }
      if (v.candidacy !== null) min = earlier(min, now, v.candidacy.deadline)
      min = earlier(min, now, v.electionAt)
      min = earlier(min, now, v.operatorUntil)
      if (v.forceWanted) min = earlier(min, now, v.forceAt)
      if (v.released !== null && v.releasedSeenAt !== null) {
        min = earlier(min, now, v.releasedSeenAt + t.plannedGraceMs)
        min = earlier(min, now, v.releasedSeenAt + 2 * t.plannedGraceMs)
      }
      if (v.applied !== null) min = earlier(min, now, v.lastReportAt + t.reportIntervalMs)
      if (v.reportDirty) min = earlier(min, now, v.lastReportAt + t.renewMs)
      if (v.run === 'queued' && v.waitingFor.length > 0) min = earlier(min, now, v.queuedAt + startAfterTimeout(v))
      if (v.run === 'running' && v.owner === this.self) min = earlier(min, now, v.lastRunReportAt + t.reportIntervalMs)
      if (this.capacity !== null && v.applied !== null && v.fitsReported !== null && v.fits !== v.fitsReported) min = earlier(min, now, v.lastRoomAt + t.renewMs)
    }
    if (oldestQueued !== Infinity) min = earlier(min, now, oldestQueued + t.startCoalesceMs)
    return min === Infinity ? undefined : min
  }


  /** The policy known for `vm` (configured here, announced by its home node, or a placeholder). */
  spec (vm: string): VmSpec | undefined { return this.vms.get(vm)?.spec }

  status (): VmOwnershipStatus[] {
    return [...this.vms.values()].map(v => ({
      vm: v.spec.name,
      owner: v.owner,
      epoch: v.epoch,
      ownedHere: this.isActiveOwner(v),
      run: v.run,
      leaseUntil: v.leaseUntil,
      fenceUntil: v.fenceUntil,
      forced: v.forced,
      released: this.isReleased(v),
      votedEpoch: v.votedEpoch,
      votedFor: v.votedFor,
      applied: v.applied,
      candidateEpoch: v.candidacy?.epoch ?? null,
      placement: v.placed ? 'placed' : v.noRoom ? 'no-room' : this.capacity !== null && v.roomOk && this.trigger(v, true) !== null ? 'reserved' : null,
      waitingFor: v.run === 'queued' ? [...v.waitingFor] : []
    }))
  }

  /** Where `vm` runs as far as this node knows (its own run state, or the owner's runState news), else null. */
  runsOn (vm: string): string | null {
    const v = this.vms.get(vm)
    if (v === undefined) return null
    if (this.isActiveOwner(v) && v.run === 'running') return this.self
    const r = v.remoteRun
    const fresh = r !== null && this.now - r.at <= 2 * this.timing.reportIntervalMs + this.timing.renewMs
    return fresh && r !== null && r.owner === v.owner && r.epoch === v.epoch && r.running && this.memberState(v.owner) !== 'dead' ? v.owner : null
  }

  /**
   * Hosts holding a replica of `vm` that are not dead, best candidate first (freshest, then
   * `replicateTo` order), with whether they said they have room; this node included.
   */
  holders (vm: string): Array<{ id: string, generation: GenerationRef, fits: boolean }> {
    const v = this.vms.get(vm)
    if (v === undefined) return []
    const entries: Array<{ id: string, generation: GenerationRef }> = []
    if (v.applied !== null && this.isHost(this.self) && v.owner !== this.self) entries.push({ id: this.self, generation: v.applied })
    for (const [id, g] of v.reports) if (id !== this.self && id !== v.owner && this.isHost(id) && this.memberState(id) !== 'dead') entries.push({ id, generation: g })
    return rankCandidates(v.spec, entries).map(e => ({ ...e, fits: e.id === this.self ? (this.capacity === null || v.fits || v.placed) : !v.noRoomHolders.has(e.id) }))
  }

  /** This host's capacity (null: not counted) and the room its placed VMs use. */
  room (): { capacity: HostCapacity | null, used: HostCapacity, hosts: Map<string, { capacity: HostCapacity, free: HostCapacity }> } {
    return { capacity: this.capacity, used: this.used(), hosts: new Map(this.hostRoom) }
  }

  // ------------------------------------------------------------------ inputs

  private handle (input: OwnershipInput): void {
    switch (input.type) {
      case 'message':
        if (input.from !== this.self && this.voters.has(input.from)) this.onMessage(input.from, input.msg)
        return
      case 'member':
        if (input.id !== this.self) {
          // a host that was lost may come back without the VMs it said were running
          if (input.state === 'dead') for (const v of this.vms.values()) if (v.remoteRun?.owner === input.id) v.remoteRun = null
          this.members.set(input.id, input.state)
        }
        return
      case 'vm': {
        this.checkSpec(input.spec)
        const v = this.vms.get(input.spec.name)
        if (v === undefined) {
          if (this.vms.size >= MAX_VMS) return
          const nv = newVmState(input.spec, undefined, this.now, this.quietUntil)
          this.vms.set(input.spec.name, nv)
          this.byPriority = null
          this.takePendingApplied(nv)
          this.persistVm(nv)
        } else {
          const changed = JSON.stringify(v.spec) !== JSON.stringify(input.spec)
          v.spec = input.spec
          if (changed) this.byPriority = null
          if (v.owner === '' && v.epoch === 0) v.owner = input.spec.home
          if (changed) this.persistVm(v)
        }
        return
      }
      case 'replicaApplied': {
        const v = this.vms.get(input.vm)
        if (v !== undefined) { v.applied = input.generation; v.reportDirty = true; return }
        // the replica can be reported before the VM's spec arrives: keep it for then
        if (input.generation === null) this.pendingApplied.delete(input.vm)
        else if (this.pendingApplied.size < MAX_VMS) this.pendingApplied.set(input.vm, input.generation)
        return
      }
      case 'started': {
        const v = this.vms.get(input.vm)
        if (v !== undefined && v.run !== 'stopping') { v.run = 'running'; v.runDirty = true }
        return
      }
      case 'capacity':
        if (input.capacity !== null) checkCapacity(input.capacity)
        this.capacity = input.capacity
        return
      case 'startFailed': {
        const v = this.vms.get(input.vm)
        if (v === undefined || v.run !== 'starting') return
        v.run = 'off'
        v.startRetryAt = this.now + this.timing.startRetryMs
        this.events.push({ type: 'watchdog', vm: v.spec.name, deadline: null })
        return
      }
      case 'stopped': {
        const v = this.vms.get(input.vm)
        if (v === undefined) return
        // A stop we did not ask for (crash, watchdog): do not restart in a tight loop.
        if (v.run === 'starting' || v.run === 'running') v.startRetryAt = this.now + this.timing.startRetryMs
        if (v.run === 'running') v.runDirty = true
        v.run = 'off'
        this.events.push({ type: 'watchdog', vm: v.spec.name, deadline: null })
        if (v.handoff?.phase === 'stopping') {
          v.handoff.phase = 'shipping'
          this.events.push({ type: 'shipFinal', vm: v.spec.name, to: v.handoff.to })
        }
        return
      }
      case 'vmState': {
        const v = this.vms.get(input.vm)
        if (v === undefined) return
        if (!input.running) { v.run = 'off'; return }
        v.run = 'running'
        if (v.owner === this.self && input.fenceDeadline !== undefined) {
          // The watchdog armed by our previous process still bounds this VM; keep to it.
          v.fenceUntil = Math.max(v.fenceUntil, input.fenceDeadline)
          v.leaseUntil = Math.max(v.leaseUntil, input.fenceDeadline)
        }
        return
      }
      case 'operatorFailover':
        this.onOperatorFailover(input.vm, input.to, input.force === true)
        return
      case 'plannedFailover':
        this.onPlannedFailover(input.vm, input.to)
        return
      case 'finalShipFailed': {
        const v = this.vms.get(input.vm)
        if (v !== undefined && v.handoff?.phase === 'shipping' && this.isActiveOwner(v)) this.abandonHandoff(v, 'ship-failed')
        return
      }
      case 'finalGenerationShipped': {
        const v = this.vms.get(input.vm)
        if (v === undefined || v.handoff?.phase !== 'shipping' || !this.isActiveOwner(v)) return
        v.released = { epoch: v.epoch, to: v.handoff.to, generation: input.generation }
        v.releasedSeenAt = this.now
        v.handoff = null
        v.promises.delete(this.self)
        this.persistVm(v)
        v.nextRenewAt = this.now + this.timing.renewMs
        this.broadcast({ type: 'release', vm: v.spec.name, epoch: v.epoch, to: v.released.to, generation: input.generation })
      }
    }
  }

  private onMessage (from: string, msg: ElectionMessage): void {
    switch (msg.type) {
      case 'renew': this.onRenew(from, msg); return
      case 'renewAck': this.onRenewAck(from, msg); return
      case 'renewNack': this.onRenewNack(msg); return
      case 'requestVote': this.onRequestVote(from, msg); return
      case 'vote': this.onVote(from, msg); return
      case 'owner': this.onOwner(msg); return
      case 'release': this.onRelease(from, msg); return
      case 'replicaReport': this.onReplicaReport(from, msg); return
      case 'takeover': this.onTakeover(msg); return
      case 'room': this.onRoom(from, msg); return
      case 'runState': this.onRunState(from, msg)
    }
  }

  // ------------------------------------------------------------------ voter side

  private onRenew (from: string, m: Renew): void {
    const v = this.isHost(from) ? this.learn(m.vm, from) : this.vms.get(m.vm)
    if (v === undefined) { this.renewNack(from, m, v, 'unknownVm'); return }
    if (!this.isHost(from)) return
    if (m.epoch < v.epoch) { this.renewNack(from, m, v, 'staleEpoch'); return }
    if (m.epoch === v.epoch && v.owner === '') { v.owner = from; this.persistVm(v) }
    if (m.epoch === v.epoch && v.owner !== from) { this.renewNack(from, m, v, 'notOwner'); return }
    if (v.votedEpoch > m.epoch) { this.renewNack(from, m, v, 'votedHigher'); return }
    if (m.epoch > v.epoch) this.adopt(v, m.epoch, from)
    this.promise(v, from)
    this.sendTo(from, { type: 'renewAck', vm: m.vm, epoch: m.epoch, seq: m.seq })
  }

  private renewNack (from: string, m: Renew, v: VmState | undefined, reason: RenewNack['reason']): void {
    // votedHigher names the granted epoch and no owner: the candidate may not have won it.
    const higher = reason === 'votedHigher' && v !== undefined
    this.sendTo(from, { type: 'renewNack', vm: m.vm, epoch: m.epoch, seq: m.seq, reason, currentEpoch: higher ? v.votedEpoch : v?.epoch ?? 0, owner: higher ? '' : v?.owner ?? '' })
  }

  private onRequestVote (from: string, m: RequestVote): void {
    if (m.candidate !== from) return
    const v = this.learn(m.vm, '')
    let d: VoteDecision
    if (v === undefined) {
      d = { granted: false, reason: 'unknownVm', retryAfterMs: 0 }
    } else {
      // A candidate's generation is news about its replica (not so an owner's claim on its own source).
      if (from !== v.owner) v.reports.set(from, m.generation)
      d = this.decide(v, m.epoch, from, m.generation)
      if (d.granted) this.grant(v, from, m.epoch)
    }
    this.sendTo(from, {
      type: 'vote',
      vm: m.vm,
      epoch: m.epoch,
      seq: m.seq,
      candidate: from,
      granted: d.granted,
      reason: d.granted ? 'granted' : d.reason,
      currentEpoch: v?.epoch ?? 0,
      owner: v?.owner ?? '',
      retryAfterMs: d.granted ? 0 : d.retryAfterMs
    })
  }

  private onOwner (m: OwnerAnnouncement): void {
    const v = this.isHost(m.owner) ? this.learn(m.vm, '') : undefined
    if (v !== undefined && this.isHost(m.owner)) this.adopt(v, m.epoch, m.owner)
  }

  private onRelease (from: string, m: Release): void {
    const v = this.isHost(from) ? this.learn(m.vm, '') : undefined
    if (v === undefined || !this.isHost(from) || !this.isHost(m.to)) return
    if (m.epoch > v.epoch) this.adopt(v, m.epoch, from)
    if (m.epoch !== v.epoch || v.owner !== from) return
    if (v.released === null || v.released.epoch !== m.epoch) {
      v.released = { epoch: m.epoch, to: m.to, generation: m.generation }
      v.releasedSeenAt = this.now
      this.persistVm(v)
    }
    // The owner turned the VM off for good at this epoch: its lease no longer binds us — unless
    // we have since granted it a later epoch (it reclaimed the VM): that promise is kept. A
    // repeated release can arrive after our grant (the owner repeats it until someone takes over).
    if (v.votedEpoch <= m.epoch) v.promises.delete(from)
    v.reports.set(m.to, m.generation)
  }

  private onRoom (from: string, m: Room): void {
    if (!this.isHost(from)) return
    this.hostRoom.set(from, { capacity: m.capacity, free: m.free })
    const v = this.vms.get(m.vm)
    if (v === undefined) return
    if (m.fits) v.noRoomHolders.delete(from)
    else v.noRoomHolders.add(from)
  }

  private onRunState (from: string, m: RunState): void {
    const v = this.isHost(from) ? this.learn(m.vm, from) : undefined
    if (v === undefined) return
    // Only the owner of an epoch reports run state at it (reportStep): a runState above the epoch
    // we know is the owner's news we missed (its announcement lost), as a release is. Without
    // this a holder that missed an owner change kept the old, living owner in its view and never
    // stood when the new owner died (election simulation, seed 6547: vm2 ran nowhere).
    if (m.epoch > v.epoch) this.adopt(v, m.epoch, from)
    if (v.remoteRun === null || v.remoteRun.owner !== from || m.epoch >= v.remoteRun.epoch) v.remoteRun = { owner: from, epoch: m.epoch, running: m.running, at: this.now }
  }

  private onReplicaReport (from: string, m: ReplicaReport): void {
    const v = this.isHost(from) ? this.learn(m.vm, '') : undefined
    if (v === undefined) return
    if (m.generation === null) v.reports.delete(from)
    else v.reports.set(from, m.generation)
  }

  private decide (v: VmState, epoch: number, candidate: string, generation: GenerationRef): VoteDecision {
    const state: VoterState = v
    return decideVote(state, { epoch, candidate, generation }, {
      now: this.now,
      ownerState: this.memberState(v.owner),
      candidateIsHost: this.isHost(candidate),
      freshest: this.freshest(v, candidate)
    })
  }

  /** Records a grant (durably, if new) and the lease promise it carries. */
  private grant (v: VmState, candidate: string, epoch: number): void {
    if (v.votedEpoch !== epoch || v.votedFor !== candidate) {
      v.votedEpoch = epoch
      v.votedFor = candidate
      this.persistVm(v)
    }
    this.promise(v, candidate)
  }

  private promise (v: VmState, holder: string): void {
    const end = voterPromiseEnd(this.now, this.timing)
    if ((v.promises.get(holder) ?? -Infinity) < end) v.promises.set(holder, end)
  }

  /** Freshest replica generation known on a node that is not dead, other than the candidate's. */
  private freshest (v: VmState, candidate: string): GenerationRef | null {
    // our own copy counts only if we would stand with it (a VM we have no room for, we will not)
    let best: GenerationRef | null = candidate !== this.self && (this.capacity === null || v.fits) ? v.applied : null
    for (const [id, g] of v.reports) {
      if (id === candidate || id === v.owner || id === this.self || this.memberState(id) === 'dead') continue
      // A holder without room will not stand: its fresher copy must not keep the VM off.
      if (v.noRoomHolders.has(id)) continue
      if (compareGeneration(g, best) > 0) best = g
    }
    return best
  }

  // ------------------------------------------------------------------ owner side

  private onRenewAck (from: string, m: RenewAck): void {
    const v = this.vms.get(m.vm)
    if (v === undefined || !this.isActiveOwner(v) || m.epoch !== v.epoch) return
    const round = v.rounds.get(m.seq)
    if (round === undefined) return
    round.acks.add(from)
    this.checkRound(v, round)
  }

  private onRenewNack (m: RenewNack): void {
    const v = this.vms.get(m.vm)
    if (v === undefined) return
    if (m.currentEpoch > v.epoch && m.owner !== '' && this.isHost(m.owner)) { this.adopt(v, m.currentEpoch, m.owner); return }
    // A voter granted a higher epoch to a candidate that did not (yet) win: it will refuse our
    // renewals forever, so we win that epoch back ourselves (see trigger: 'reclaim').
    if (m.reason === 'votedHigher' && this.isActiveOwner(v) && m.epoch === v.epoch && m.currentEpoch > v.higherVote) v.higherVote = m.currentEpoch
    // Two claims on one epoch can only come from --force: the forced claim yields.
    if (m.reason === 'notOwner' && v.forced && this.isActiveOwner(v) && m.currentEpoch === v.epoch && m.owner !== this.self && this.isHost(m.owner)) {
      this.adopt(v, m.currentEpoch, m.owner, true)
    }
  }

  private renewRound (v: VmState, retry = false): void {
    const seq = this.nextSeq()
    const acks = new Set<string>()
    if (v.votedEpoch <= v.epoch) { acks.add(this.self); this.promise(v, this.self) }
    const round: Round = { sendTime: this.now, acks, done: false }
    v.rounds.set(seq, round)
    if (!retry) {
      v.nextRenewAt = this.now + this.timing.renewMs
      v.renewRetryAt = this.now + this.timing.renewMs / 4
      if (v.forced) this.renewForcedFence(v)
    }
    this.broadcast({ type: 'renew', vm: v.spec.name, epoch: v.epoch, seq })
    this.checkRound(v, round)
  }

  private checkRound (v: VmState, round: Round): void {
    if (round.done || round.acks.size < this.majority) return
    round.done = true
    const fence = fenceDeadline(round.sendTime, this.timing)
    if (v.forced) { v.forced = false; this.persistVm(v) } else if (fence <= v.fenceUntil) return
    v.fenceUntil = Math.max(v.fenceUntil, fence)
    v.leaseUntil = Math.max(v.leaseUntil, ownerLeaseEnd(round.sendTime, this.timing))
    if (v.run === 'starting' || v.run === 'running') this.events.push({ type: 'watchdog', vm: v.spec.name, deadline: v.fenceUntil })
  }

  /**
   * A forced owner has no lease: the operator vouched that the other side is off. Its VM is
   * still fenced — on this daemon being alive and responsive: every renewal period the machine
   * moves the watchdog deadline fenceMs ahead by itself, so a daemon that dies or hangs has its
   * VM turned off by the watchdog within fenceMs, like a lease holder cut off from its voters.
   * The first majority-acked round turns this into an ordinary lease (checkRound).
   */
  private renewForcedFence (v: VmState): void {
    // A deadline that lapsed while the VM ran (this daemon hung): the watchdog is turning it
    // off. Do not revive it behind the watchdog's back — runStep stops it, and it starts
    // again under a fresh deadline.
    if ((v.run === 'starting' || v.run === 'running') && this.now >= v.fenceUntil) return
    const fence = fenceDeadline(this.now, this.timing)
    if (fence <= v.fenceUntil) return
    v.fenceUntil = fence
    if (v.run === 'starting' || v.run === 'running') this.events.push({ type: 'watchdog', vm: v.spec.name, deadline: v.fenceUntil })
  }

  /** Learns that `owner` holds the VM at `epoch`; lower or equal epochs change nothing (unless a forced claim yields). */
  private adopt (v: VmState, epoch: number, owner: string, yieldEqual = false): void {
    if (epoch < v.epoch || (epoch === v.epoch && (!yieldEqual || owner === v.owner))) return
    const wasOwner = v.owner === this.self
    v.epoch = epoch
    v.owner = owner
    v.released = null
    v.releasedSeenAt = null
    v.forced = false
    this.persistVm(v)
    this.events.push({ type: 'owner', vm: v.spec.name, owner, epoch })
    v.rounds.clear()
    v.leaseUntil = -Infinity
    v.fenceUntil = -Infinity
    v.handoff = null
    v.higherVote = 0
    v.nextRenewAt = this.now
    if (owner === this.self) return
    if (wasOwner) {
      v.promises.delete(this.self)
      // Our disk holds the old epoch's source; the replication layer resyncs it and reports.
      this.events.push({ type: 'demoted', vm: v.spec.name, owner, epoch })
    }
    // News of an owner our round in progress already outbids (a stale view: we missed its
    // announcement) does not end that round: the voters granting it know that owner.
    const outbid = !wasOwner && v.candidacy !== null && v.candidacy.epoch > epoch
    if (!outbid) {
      this.dropCandidacy(v)
      v.electionAt = null
      v.nextEpoch = null
    }
    // An operator's request is superseded by an owner that may be running the VM, not by one
    // our detector holds dead (it may have won before the request; we only now hear of it):
    // then the request stands, and the next round asks for an epoch above the one learned.
    const standing = outbid || (v.operatorUntil !== null && !v.forceWanted && this.memberState(owner) === 'dead')
    if ((v.operatorUntil !== null || v.forceWanted) && !standing) {
      v.operatorUntil = null
      v.forceWanted = false
      v.forceAt = null
      this.events.push({ type: 'failoverAbandoned', vm: v.spec.name, reason: 'superseded' })
    }
  }

  private onPlannedFailover (vm: string, to: string): void {
    const v = this.vms.get(vm)
    const refuse = (reason: FailoverRefusal): void => { this.events.push({ type: 'failoverRefused', vm, reason }) }
    if (v === undefined) return refuse('unknown-vm')
    if (!this.isActiveOwner(v)) return refuse('not-owner')
    if (to === this.self) return refuse('already-owner')
    if (!this.voters.has(to)) return refuse('unknown-node')
    if (!this.isHost(to)) return refuse('witness')
    if (v.handoff !== null) return refuse('busy')
    // the reconcile would abandon the handoff at once (the VM stopped for nothing): say so now
    if (this.memberState(to) === 'dead') return refuse('target-dead')
    if (v.run === 'queued') v.run = 'off'
    if (v.run === 'off') {
      v.handoff = { to, phase: 'shipping' }
      this.events.push({ type: 'shipFinal', vm, to })
    } else {
      v.handoff = { to, phase: 'stopping' }
    }
  }

  // ------------------------------------------------------------------ candidate side

  private onOperatorFailover (vm: string, to: string | undefined, force: boolean): void {
    const v = this.vms.get(vm)
    const refuse = (reason: FailoverRefusal): void => { this.events.push({ type: 'failoverRefused', vm, reason }) }
    if (v === undefined) return refuse('unknown-vm')
    if (to !== undefined && to !== this.self) {
      if (!this.voters.has(to)) return refuse('unknown-node')
      if (!this.isHost(to)) return refuse('witness')
      this.sendTo(to, { type: 'takeover', vm, force })
      return
    }
    if (!this.isHost(this.self)) return refuse('witness')
    if (this.isActiveOwner(v)) return refuse('already-owner')
    if (v.applied === null) return refuse('no-replica')
    if (force) {
      v.forceWanted = true
      v.forceAt = null
      v.operatorUntil = this.now + this.timing.operatorTimeoutMs
    } else {
      v.operatorUntil = this.now + this.timing.operatorTimeoutMs
      if (v.candidacy === null) v.electionAt = null
    }
  }

  private onTakeover (m: Takeover): void {
    this.onOperatorFailover(m.vm, undefined, m.force)
  }

  private onVote (from: string, m: Vote): void {
    const v = this.vms.get(m.vm)
    if (v === undefined) return
    if (m.currentEpoch > v.epoch && m.owner !== '' && this.isHost(m.owner)) this.adopt(v, m.currentEpoch, m.owner)
    const c = v.candidacy
    if (c === null || m.epoch !== c.epoch || m.seq !== c.seq || m.candidate !== this.self) return
    if (m.granted) {
      c.grants.add(from)
      c.refused.delete(from)
      if (c.grants.size >= this.majority) { this.win(v, c); return }
    } else {
      const waits = m.reason === 'promised' || m.reason === 'recovering'
      c.refused.set(from, { reason: m.reason, readyAt: waits ? this.now + conservativeWait(m.retryAfterMs, this.timing.driftRatio) + 1 : null })
    }
    // Everyone who can answer has: no need to sit out the round's timeout.
    let silentDead = 0
    for (const id of this.voters.keys()) if (!c.grants.has(id) && !c.refused.has(id) && this.memberState(id) === 'dead') silentDead++
    if (c.grants.size + c.refused.size + silentDead >= this.voters.size) this.failRound(v)
  }

  /** Why (if at all) this node should be running an election for `v` now. */
  private trigger (v: VmState, pure = false): Trigger | null {
    if (this.isActiveOwner(v)) return v.higherVote > v.epoch ? 'reclaim' : null
    const superseded = v.owner === this.self && this.releaseSuperseded(v)
    if (v.owner === this.self && this.isHost(this.self) && !superseded) {
      // Released, and the target has not taken over: take our VM back (our disk holds the final
      // generation; another replica may not).
      return v.releasedSeenAt !== null && this.now >= v.releasedSeenAt + this.timing.plannedGraceMs ? 'reclaim' : null
    }
    // A released owner whose release a later epoch superseded (we missed that owner's news) is a
    // replica holder like any other: its disk is no longer the source, so reclaiming would only be
    // refused as stale for ever. It may stand when the operator asks, or (auto VMs) to learn the
    // owner it missed: a voter refuses with that owner's name and epoch, which we adopt; if that
    // owner is gone, our fresh copy wins.
    if (!this.isHost(this.self) || (v.owner === this.self && !superseded) || v.applied === null) return null
    const rel = this.isReleased(v) && !superseded ? v.released : null
    if (rel !== null && rel.to === this.self) return compareGeneration(v.applied, rel.generation) >= 0 ? 'planned' : null
    if (v.operatorUntil !== null) {
      if (this.now < v.operatorUntil) return 'operator'
      if (!pure) {
        v.operatorUntil = null
        this.events.push({ type: 'failoverAbandoned', vm: v.spec.name, reason: 'timeout' })
      }
    }
    if ((v.spec.failover ?? 'auto') !== 'auto') return null
    if (superseded || this.memberState(v.owner) === 'dead') return 'auto'
    if (rel !== null && v.releasedSeenAt !== null && this.now >= v.releasedSeenAt + 2 * this.timing.plannedGraceMs) return 'auto'
    return null
  }

  private candidateStep (v: VmState): void {
    if (v.forceWanted) { this.forceStep(v); return }
    const why = this.trigger(v)
    if (why === null) {
      this.dropCandidacy(v)
      v.electionAt = null
      v.nextEpoch = null
      return
    }
    if (v.candidacy !== null) {
      if (this.now < v.candidacy.deadline) return
      this.failRound(v)
    }
    // No room here: do not stand (the rank's stagger starts afresh when room appears).
    if (!v.roomOk) { v.electionAt = null; return }
    if (v.electionAt === null) v.electionAt = this.now + (why === 'auto' ? this.rankOf(v) * this.timing.electionStaggerMs : 0)
    if (this.now >= v.electionAt) this.beginRound(v, why)
  }

  private beginRound (v: VmState, why: Trigger): void {
    const generation = why === 'reclaim' ? sourceGeneration(v.epoch) : v.applied
    if (generation === null) return
    const retrySame = v.nextEpoch !== null && v.nextEpoch > v.epoch &&
      (v.votedEpoch < v.nextEpoch || (v.votedEpoch === v.nextEpoch && v.votedFor === this.self))
    const epoch = retrySame && v.nextEpoch !== null ? v.nextEpoch : Math.max(v.epoch, v.votedEpoch, v.higherVote) + 1
    // A repeated self-grant skips the voter rules, so check freshness here: a fresher live
    // replica should win, and standing against it would only split the votes.
    const stale = compareGeneration(generation, this.freshest(v, this.self)) < 0
    const own: VoteDecision = stale ? { granted: false, reason: 'staleGeneration', retryAfterMs: 0 } : this.decide(v, epoch, this.self, generation)
    if (!own.granted) {
      if (own.reason === 'promised' || own.reason === 'recovering') {
        // Our own promise is measured on our own clock: retry the moment it ends — after our
        // rank's stagger, since every candidate's promise ends at about the same time.
        v.nextEpoch = epoch
        v.electionAt = this.now + own.retryAfterMs + 1 + (why === 'auto' ? this.rankOf(v) * this.timing.electionStaggerMs : 0)
      } else {
        if (own.reason === 'alreadyVoted' || own.reason === 'staleEpoch') v.nextEpoch = null
        v.electionAt = this.now + this.retryDelay(v)
      }
      return
    }
    this.grant(v, this.self, epoch)
    if (!v.placed) { v.placed = true; this.placedCount++ }
    const c: Candidacy = {
      epoch,
      seq: this.nextSeq(),
      sendTime: this.now,
      deadline: this.now + this.timing.electionTimeoutMs,
      grants: new Set([this.self]),
      refused: new Map()
    }
    v.candidacy = c
    v.electionAt = null
    v.nextEpoch = epoch
    this.broadcast({ type: 'requestVote', vm: v.spec.name, epoch, seq: c.seq, candidate: this.self, generation })
    if (c.grants.size >= this.majority) this.win(v, c)
  }

  /**
   * Abandons the round in progress. Our own grant's promise only protected a lease that round
   * could have given us; no lease will come from it now, and keeping it would block the very
   * candidates that could succeed where we failed.
   */
  private dropCandidacy (v: VmState): void {
    if (v.candidacy === null) return
    v.candidacy = null
    if (v.owner !== this.self) v.promises.delete(this.self)
  }

  private failRound (v: VmState): void {
    const c = v.candidacy
    if (c === null) return
    this.dropCandidacy(v)
    let bump = false
    const ready: number[] = []
    for (const r of c.refused.values()) {
      if (r.reason === 'alreadyVoted' || r.reason === 'staleEpoch') bump = true
      if (r.readyAt !== null) ready.push(r.readyAt)
    }
    if (bump) v.nextEpoch = null
    // Those who granted will grant again: when enough of the others said exactly when their
    // promises end, retry right then (plus our rank's stagger), not after a generic backoff.
    const needed = this.majority - c.grants.size
    if (!bump && needed > 0 && ready.length >= needed) {
      ready.sort((a, b) => a - b)
      const t = this.timing
      v.electionAt = Math.max(this.now, ready[needed - 1] as number) + this.rankOf(v) * t.electionStaggerMs + this.random.next() * Math.min(t.electionJitterMs, 50)
    } else {
      v.electionAt = this.now + this.retryDelay(v)
    }
  }

  private retryDelay (v: VmState): number {
    const t = this.timing
    return t.electionRetryMs + this.rankOf(v) * t.electionStaggerMs + this.random.next() * t.electionJitterMs
  }

  private win (v: VmState, c: Candidacy): void {
    v.candidacy = null
    v.electionAt = null
    v.nextEpoch = null
    v.operatorUntil = null
    // A superseded release is won like any replica holder's election: the replica is the data.
    if (v.owner === this.self && !this.releaseSuperseded(v)) this.reclaimed(v, c.epoch)
    else this.takeOwnership(v, c.epoch, false)
    // The grants are the first lease, counted from the round's send time.
    v.leaseUntil = Math.max(v.leaseUntil, ownerLeaseEnd(c.sendTime, this.timing))
    v.fenceUntil = Math.max(v.fenceUntil, fenceDeadline(c.sendTime, this.timing))
    v.nextRenewAt = c.sendTime + this.timing.renewMs
    if (v.run === 'starting' || v.run === 'running') this.events.push({ type: 'watchdog', vm: v.spec.name, deadline: v.fenceUntil })
  }

  /**
   * --force: own the VM without a majority. We still wait out our own promises: when this node
   * is part of every majority (two hosts, no witness) that alone guarantees the old owner's
   * lease has ended. With more voters the old owner may still hold a lease from others — the
   * operator's risk, documented in the README.
   */
  private forceStep (v: VmState): void {
    if (this.isActiveOwner(v) || v.applied === null) { v.forceWanted = false; v.forceAt = null; v.operatorUntil = null; return }
    if (v.operatorUntil !== null && this.now >= v.operatorUntil) {
      v.forceWanted = false
      v.forceAt = null
      v.operatorUntil = null
      this.events.push({ type: 'failoverAbandoned', vm: v.spec.name, reason: 'timeout' })
      return
    }
    let until = -Infinity
    for (const [holder, end] of v.promises) if (holder !== this.self && end > until) until = end
    if (until > this.now) { v.forceAt = until; return }
    const epoch = Math.max(v.epoch, v.votedEpoch) + 1
    v.votedEpoch = epoch
    v.votedFor = this.self
    v.forceWanted = false
    v.forceAt = null
    v.candidacy = null
    v.electionAt = null
    v.nextEpoch = null
    v.operatorUntil = null
    this.takeOwnership(v, epoch, true)
    // tell the voters at once, and set the first self-renewed fence deadline so the VM can start
    this.renewRound(v)
  }

  /** Our own VM, won again under a higher epoch: nothing is finalized (our disk is the source). */
  private reclaimed (v: VmState, epoch: number): void {
    v.epoch = epoch
    v.higherVote = 0
    v.forced = false
    v.released = null
    v.releasedSeenAt = null
    v.startRetryAt = -Infinity
    this.persistVm(v)
    v.rounds.clear()
    this.events.push({ type: 'owner', vm: v.spec.name, owner: this.self, epoch })
    this.events.push({ type: 'elected', vm: v.spec.name, epoch, forced: false })
    this.broadcast({ type: 'owner', vm: v.spec.name, epoch, owner: this.self })
  }

  private takeOwnership (v: VmState, epoch: number, forced: boolean): void {
    const vm = v.spec.name
    v.epoch = epoch
    v.owner = this.self
    v.released = null
    v.releasedSeenAt = null
    v.forced = forced
    this.persistVm(v)
    v.rounds.clear()
    v.leaseUntil = -Infinity
    v.fenceUntil = -Infinity
    v.higherVote = 0
    v.nextRenewAt = this.now
    v.startRetryAt = -Infinity
    v.handoff = null
    this.events.push({ type: 'owner', vm, owner: this.self, epoch })
    this.events.push({ type: 'elected', vm, epoch, forced })
    this.events.push({ type: 'finalize', vm, generation: v.applied })
    v.applied = null
    v.reportDirty = true
    this.broadcast({ type: 'owner', vm, epoch, owner: this.self })
  }

  // ------------------------------------------------------------------ reconcile

  private reconcile (): void {
    const order = this.roomOrder()
    for (const v of order) {
      if (this.isActiveOwner(v)) {
        // A target that died before the final generation reached it cannot take over: without
        // this the VM would stay off, waiting for a ship that cannot finish.
        if (v.handoff !== null && this.memberState(v.handoff.to) === 'dead') this.abandonHandoff(v, 'target-dead')
        for (const [seq, r] of v.rounds) if (r.sendTime + this.timing.fenceMs <= this.now) v.rounds.delete(seq)
        if (this.now >= v.nextRenewAt) {
          this.renewRound(v)
        } else if (v.renewRetryAt !== null && this.now >= v.renewRetryAt) {
          v.renewRetryAt = null
          let latest: Round | undefined
          for (const r of v.rounds.values()) if (latest === undefined || r.sendTime >= latest.sendTime) latest = r
          if (latest !== undefined && !latest.done) this.renewRound(v, true)
        }
      } else {
        v.handoff = null
        if (v.owner === this.self && v.released !== null && this.isReleased(v) && !this.releaseSuperseded(v) && this.now >= v.nextRenewAt) {
          // A released owner repeats its release until someone takes over: a lost release
          // would otherwise leave the VM with an owner that will never run it again.
          v.nextRenewAt = this.now + this.timing.renewMs
          this.broadcast({ type: 'release', vm: v.spec.name, epoch: v.epoch, to: v.released.to, generation: v.released.generation })
        }
      }
    }
    this.place(order)
    for (const v of order) {
      this.candidateStep(v)
      this.runStep(v)
      this.reportStep(v)
    }
    this.dispatchStarts()
  }

  private roomOrder (): VmState[] {
    if (this.byPriority === null) this.byPriority = [...this.vms.values()].sort(comparePriority)
    return this.byPriority
  }

  /** The VM occupies (or is claimed for) room here: it runs, starts, stops, is owned or stands here. */
  private holds (v: VmState): boolean {
    return v.run === 'starting' || v.run === 'running' || v.run === 'stopping' || this.isActiveOwner(v) || v.candidacy !== null
  }

  /**
   * Room, in priority order. Pass 1 counts what keeps its room (placed VMs still held; a VM the
   * hypervisor runs is always counted, fitting or not). Pass 2 gives the rest room in priority
   * order, first fit: a VM that wants room here (owned, or it would stand for election) and
   * fits gets it — for good when it is held (owned, standing), softly (this reconcile) while it
   * waits its rank's turn, so a higher-priority VM waiting to stand keeps a lower one from
   * taking its room. Nothing running is ever evicted for a higher priority.
   */
  private place (order: VmState[]): void {
    const cap = this.capacity
    let usedMem = 0
    let usedCpu = 0
    for (const v of order) {
      const held = this.holds(v)
      if (v.run === 'starting' || v.run === 'running' || v.run === 'stopping') { if (!v.placed) this.placedCount++; v.placed = true } else v.placed = v.placed && held
      if (v.placed) { usedMem += v.spec.memoryMiB ?? 0; usedCpu += v.spec.vcpus ?? 0 }
    }
    for (const v of order) {
      if (cap === null) {
        v.roomOk = true
        v.fits = true
        if (this.holds(v)) v.placed = true
        continue
      }
      const mem = v.spec.memoryMiB ?? 0
      const cpu = v.spec.vcpus ?? 0
      if (v.placed) { v.roomOk = true; v.fits = true; this.setNoRoom(v, false, cap, usedMem, usedCpu); continue }
      v.fits = usedMem + mem <= cap.memoryMiB && usedCpu + cpu <= cap.vcpus
      const wants = this.holds(v) || (this.isHost(this.self) && this.trigger(v, true) !== null)
      if (!wants) { v.roomOk = false; this.setNoRoom(v, false, cap, usedMem, usedCpu); continue }
      v.roomOk = v.fits
      this.setNoRoom(v, !v.fits, cap, usedMem, usedCpu)
      if (!v.fits) continue
      usedMem += mem
      usedCpu += cpu
      if (this.holds(v)) { v.placed = true; this.placedCount++ }
    }
  }

  /** How many times a VM was given room here so far. */
  placements (): number { return this.placedCount }

  private setNoRoom (v: VmState, noRoom: boolean, cap: HostCapacity, usedMem: number, usedCpu: number): void {
    if (v.noRoom === noRoom) return
    v.noRoom = noRoom
    if (noRoom) {
      this.events.push({
        type: 'noRoom',
        vm: v.spec.name,
        need: { memoryMiB: v.spec.memoryMiB ?? 0, vcpus: v.spec.vcpus ?? 0 },
        free: { memoryMiB: Math.max(0, cap.memoryMiB - usedMem), vcpus: Math.max(0, cap.vcpus - usedCpu) }
      })
    } else {
      this.events.push({ type: 'roomFound', vm: v.spec.name })
    }
  }

  /** Room used here by what keeps it (for room messages and status). */
  private used (): HostCapacity {
    let memoryMiB = 0
    let vcpus = 0
    for (const v of this.vms.values()) if (v.placed) { memoryMiB += v.spec.memoryMiB ?? 0; vcpus += v.spec.vcpus ?? 0 }
    return { memoryMiB, vcpus }
  }

  /** `startAfter` VMs not running as far as this node knows. */
  private notRunning (v: VmState): string[] {
    const deps = v.spec.startAfter
    if (deps === undefined || deps.length === 0) return []
    const out: string[] = []
    for (const name of deps) {
      const d = this.vms.get(name)
      if (d === undefined || name === v.spec.name) { if (name !== v.spec.name) out.push(name); continue }
      const here = this.isActiveOwner(d) && d.run === 'running'
      const r = d.remoteRun
      // news older than two report intervals (the owner repeats it while the VM runs) is stale
      const fresh = r !== null && this.now - r.at <= 2 * this.timing.reportIntervalMs + this.timing.renewMs
      const there = fresh && r !== null && d.owner !== this.self && r.owner === d.owner && r.epoch === d.epoch && r.running && this.memberState(d.owner) !== 'dead'
      if (!here && !there) out.push(name)
    }
    return out
  }

  /**
   * A planned failover given up before its release (nothing was promised to anyone yet: the
   * voters still hold us to our lease): the VM runs here again. A late finalGenerationShipped
   * finds no handoff and is ignored.
   */
  private abandonHandoff (v: VmState, reason: 'target-dead' | 'ship-failed'): void {
    v.handoff = null
    this.events.push({ type: 'failoverAbandoned', vm: v.spec.name, reason })
  }

  private mayRun (v: VmState): boolean {
    return this.isActiveOwner(v) && v.handoff === null && this.now < v.fenceUntil
  }

  private runStep (v: VmState): void {
    if (this.mayRun(v)) {
      if (v.run === 'off' && this.now >= v.startRetryAt && v.placed) { v.run = 'queued'; v.queuedAt = this.now }
      return
    }
    if (v.run === 'queued') { v.run = 'off'; return }
    if (v.run !== 'starting' && v.run !== 'running') return
    let reason: StopReason = 'lease-lost'
    if (v.owner !== this.self) reason = 'superseded'
    else if (v.handoff !== null || this.isReleased(v)) reason = 'planned'
    v.run = 'stopping'
    this.events.push({ type: 'stop', vm: v.spec.name, reason })
  }

  /**
   * Starts queued VMs in start order, at most maxStarts un-acknowledged. A batch goes out once
   * its oldest member has waited startCoalesceMs, so VMs whose leases or elections finish a few
   * messages apart are still ordered among themselves.
   */
  private dispatchStarts (): void {
    let inflight = 0
    let oldest = Infinity
    const queued: VmState[] = []
    for (const v of this.vms.values()) {
      if (v.run === 'starting') inflight++
      else if (v.run === 'queued') { queued.push(v); oldest = Math.min(oldest, v.queuedAt) }
    }
    if (queued.length === 0 || inflight >= this.maxStarts || this.now < oldest + this.timing.startCoalesceMs) return
    queued.sort(compareStartOrder)
    for (const v of queued) {
      if (inflight >= this.maxStarts) break
      const waiting = this.notRunning(v)
      v.waitingFor = waiting
      if (waiting.length > 0) {
        if (this.now < v.queuedAt + startAfterTimeout(v)) continue
        this.events.push({ type: 'startAfterTimeout', vm: v.spec.name, waitingFor: waiting })
        v.waitingFor = []
      }
      v.run = 'starting'
      inflight++
      this.events.push({ type: 'watchdog', vm: v.spec.name, deadline: v.fenceUntil })
      this.events.push({ type: 'start', vm: v.spec.name, epoch: v.epoch })
    }
  }

  private reportStep (v: VmState): void {
    if (!this.isHost(this.self)) return
    const t = this.timing
    if (this.isActiveOwner(v) && (v.runDirty || (v.run === 'running' && this.now >= v.lastRunReportAt + t.reportIntervalMs))) {
      v.runDirty = false
      v.lastRunReportAt = this.now
      this.broadcast({ type: 'runState', vm: v.spec.name, epoch: v.epoch, running: v.run === 'running' })
    }
    const due = (v.reportDirty && this.now >= v.lastReportAt + t.renewMs) ||
      (v.applied !== null && this.now >= v.lastReportAt + t.reportIntervalMs)
    if (due) {
      v.lastReportAt = this.now
      v.reportDirty = false
      this.broadcast({ type: 'replicaReport', vm: v.spec.name, generation: v.applied })
    }
    if (this.roomDue(v, due)) this.sendRoom(v)
  }

  /** Room news is due with each replica report, and (at most every renewMs) when it changed. */
  private roomDue (v: VmState, reported: boolean): boolean {
    if (this.capacity === null || v.applied === null || this.isActiveOwner(v)) return false
    // voters take a holder to have room until told otherwise: repeat "no room" (a voter may have
    // restarted), and a change a few times (one may be lost); "room" alone goes unsaid
    if (v.fits !== v.fitsReported) return this.now >= v.lastRoomAt + this.timing.renewMs
    return reported && (!v.fits || v.roomRepeats > 0)
  }

  private sendRoom (v: VmState): void {
    const cap = this.capacity
    if (cap === null) return
    const used = this.used()
    const wire = (n: number): number => Math.min(UNLIMITED, Math.max(0, Math.floor(n)))
    const capacity = { memoryMiB: wire(cap.memoryMiB), vcpus: wire(cap.vcpus) }
    const free = { memoryMiB: Math.min(capacity.memoryMiB, wire(cap.memoryMiB - used.memoryMiB)), vcpus: Math.min(capacity.vcpus, wire(cap.vcpus - used.vcpus)) }
    v.roomRepeats = v.fits !== v.fitsReported ? 2 : Math.max(0, v.roomRepeats - 1)
    v.fitsReported = v.fits
    v.lastRoomAt = this.now
    this.broadcast({ type: 'room', vm: v.spec.name, fits: v.fits, capacity, free })
  }

  // ------------------------------------------------------------------ helpers

  private rankOf (v: VmState): number {
    if (v.applied === null) return 0
    const entries = [{ id: this.self, generation: v.applied }]
    for (const [id, g] of v.reports) {
      if (id === this.self || id === v.owner || !this.isHost(id) || this.memberState(id) === 'dead' || v.noRoomHolders.has(id)) continue
      entries.push({ id, generation: g })
    }
    return rankCandidates(v.spec, entries).findIndex(e => e.id === this.self)
  }

  private isReleased (v: VmState): boolean { return v.released !== null && v.released.epoch === v.epoch }
  /** Our release of `v` was overtaken: a replica (ours or a peer's) holds data of a later epoch. */
  private releaseSuperseded (v: VmState): boolean {
    if (!this.isReleased(v)) return false
    if (v.applied !== null && v.applied.epoch > v.epoch) return true
    for (const g of v.reports.values()) if (g.epoch > v.epoch) return true
    return false
  }
  private isActiveOwner (v: VmState): boolean { return v.owner === this.self && !this.isReleased(v) }
  private isHost (id: string): boolean { return this.voters.get(id)?.role === 'host' }

  private memberState (id: string): MemberState | 'unknown' {
    if (id === this.self) return 'alive'
    return this.members.get(id) ?? 'unknown'
  }

  private nextSeq (): number {
    if (this.seq >= this.seqReserved) {
      this.seqReserved = this.seq + SEQ_BLOCK
      this.persist.set('seq', { kind: 'seq', reservedUpTo: this.seqReserved })
    }
    return this.seq++
  }

  private takePendingApplied (v: VmState): void {
    const g = this.pendingApplied.get(v.spec.name)
    if (g === undefined) return
    this.pendingApplied.delete(v.spec.name)
    v.applied = g
    v.reportDirty = true
  }

  private persistVm (v: VmState): void {
    const r = toRecord(v)
    this.persist.set(recordKey(r), r)
  }

  private sendTo (to: string, msg: ElectionMessage): void { this.send.push({ to, msg }) }

  private broadcast (msg: ElectionMessage): void {
    for (const id of this.voters.keys()) if (id !== this.self) this.send.push({ to: id, msg })
  }

  private advanceTo (now: number): void { if (now > this.now) this.now = now }

  private flush (): OwnershipOutput {
    const out: OwnershipOutput = { persist: [...this.persist.values()], send: this.send, events: this.events }
    this.persist = new Map()
    this.send = []
    this.events = []
    return out
  }
}

function checkCapacity (c: HostCapacity): void {
  for (const k of ['memoryMiB', 'vcpus'] as const) {
    if (!(c[k] >= 0)) throw new OwnershipConfigError(`capacity.${k} must be a number >= 0`)
  }
}

function startAfterTimeout (v: VmState): number {
  return v.spec.startAfterTimeoutMs ?? DEFAULT_START_AFTER_TIMEOUT_MS
}
