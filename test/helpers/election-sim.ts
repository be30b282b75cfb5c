/**
 * Seeded simulation of the ownership machine on a SimNet (test/helpers/simnet.ts): each node is
 * a daemon (the real OwnershipMachine and the real SWIM/Lifeguard Detector, both through their
 * real codecs, with the shipped timings of config/profiles.ts),
 * each host has a hypervisor, a driver and a watchdog that live outside the daemon — a paused
 * daemon's watchdog still fires, a crashed host loses its VMs at once, a restarted daemon finds
 * its VMs still running.
 *
 * One schedule: build a random cluster, let it settle, inject a sampled mix of faults (host
 * crashes and restarts, daemon restarts, SIGSTOP-like pauses, one- and two-way partitions,
 * loss bursts, planned and operator failovers), heal, let it run stable, then check liveness.
 * Safety invariants are checked as things happen:
 *   - never two instances of a VM running at the same simulated instant;
 *   - never two nodes holding a lease on a VM at the same simulated instant (the protocol's own
 *     guarantee, checked without the watchdog's margin: a lease formed by a majority lasts in
 *     real time until it ends, whatever its holder learns later; only a planned release ends it
 *     early, because the holder gave the VM up);
 *   - per VM, start epochs never decrease, and a start on another host needs a higher epoch;
 *   - a voter never grants the same (vm, epoch) to two candidates (persisted grants and sent
 *     votes both count, across restarts).
 * A schedule replays exactly from its seed; with `trace: true` it records what happened.
 */
import { SeededRandom, shuffle } from '../../common/random.ts'
import type { Random } from '../../common/random.ts'
import { PROFILES, type DetectorProfile, type ProfileName } from '../../config/profiles.ts'
import { Detector, type Output as DetectorOutput } from '../../daemon/membership/detector.ts'
import { OwnershipMachine } from '../../daemon/ownership/machine.ts'
import { recordKey } from '../../daemon/ownership/types.ts'
import type {
  GenerationRef, HostCapacity, MemberState, OwnershipEvent, OwnershipInput, OwnershipOutput, OwnershipTiming, PersistRecord, VmSpec, VoterSpec
} from '../../daemon/ownership/types.ts'
import { decodeElectionMessage, encodeElectionMessage } from '../../protocol/election/codec.ts'
import { decodeSwimMessage, encodeSwimMessage } from '../../protocol/membership/codec.ts'
import { SimNet } from './simnet.ts'
import type { SimNodeContext, SimNodeHandler } from './simnet.ts'

type SimMsg = { k: 'swim', bytes: Uint8Array } | { k: 'el', bytes: Uint8Array }

/** The lag a daemon's lag probe reports to its detector (daemon/membership/service.ts lagThresholdMs). */
const LAG_THRESHOLD_MS = 250

export type ScheduleKind = 'chaos' | 'rto' | 'capacity'

export interface ScheduleOptions {
  seed: number
  kind?: ScheduleKind
  trace?: boolean
  /** The timing profile every node runs (config/profiles.ts). @default 'lan' */
  profile?: ProfileName
}

export interface ScheduleResult {
  seed: number
  kind: ScheduleKind
  /** Cluster and faults, for the report. */
  summary: string
  /** Fault kinds injected (chaos schedules). */
  faults: string[]
  violations: string[]
  liveness: 'ok' | 'failed'
  livenessDetail: string
  /** rto schedules: simulated ms from the owner host's crash to the VM running elsewhere. */
  rtoMs?: number
  trace: string[]
  counts: { starts: number, elections: number, forced: number, watchdogKills: number, planned: number, messages: number }
  /** Capacity schedules: placements judged, no-room events, startAfter timeouts. */
  dr?: { placements: number, noRoom: number, startAfterWaits: number, startAfterTimeouts: number }
  /**
   * What the nodes ran: the profile's ownership timings (chaos schedules set driftRatio to the
   * simulated clocks' drift, the bound under test) and its detector timings.
   */
  timing: OwnershipTiming
  detector: DetectorProfile
}

interface Instance { epoch: number, startT: number, base: number }

interface Host {
  id: string
  role: 'host' | 'witness'
  /** Durable records, as the driver wrote them (latest per key). */
  persisted: Map<string, PersistRecord>
  /** Incremented on a host crash: pending driver commands of an older life are void. */
  life: number
  instances: Map<string, Instance>
  seenEpoch: Map<string, number>
  /** Armed watchdog deadlines, in simulated time. */
  watchdog: Map<string, number>
  cmdTail: Map<string, number>
  /** The host's replica of each VM (disk state: survives crashes). */
  applied: Map<string, GenerationRef | null>
  finalized: Map<string, GenerationRef | null>
  lastSource: Map<string, GenerationRef>
  daemon: SimDaemon | undefined
  crashed: boolean
  /** The daemon's placement count at the last check (capacity schedules). */
  placements: number
}

const EPS = 1e-6
/** daemon/replication/ownership-host.ts finalShipTimeoutMs default. */
const FINAL_SHIP_TIMEOUT_MS = 120_000

class World {
  readonly net: SimNet<SimMsg>
  readonly rng: Random
  readonly hosts = new Map<string, Host>()
  readonly voters: VoterSpec[]
  readonly vms: VmSpec[]
  readonly timing: OwnershipTiming
  readonly detector: DetectorProfile
  readonly violations: string[] = []
  readonly trace: string[] = []
  readonly tracing: boolean
  readonly counts = { starts: 0, elections: 0, forced: 0, watchdogKills: 0, planned: 0, messages: 0 }
  /** (voter|vm|epoch) → candidate */
  private readonly grants = new Map<string, string>()
  /** vm → last start */
  private readonly lastStart = new Map<string, { host: string, epoch: number }>()
  private readonly epochOwner = new Map<string, string>()
  /** vm → node → simulated time its lease ends */
  private readonly leases = new Map<string, Map<string, number>>()
  readonly startLog: Array<{ t: number, host: string, vm: string, epoch: number }> = []
  /** Capacity schedules: each host's capacity (absent: not counted). */
  readonly capacity = new Map<string, HostCapacity>()
  /** vm → when it last stopped running anywhere (order invariant: a dependency's news may be that stale). */
  private readonly lastOff = new Map<string, number>()
  /** host|vm: the machine said it starts without its startAfter VMs (timeout). */
  private readonly startAnyway = new Set<string>()
  /** host → VMs placed there, as of its last output (priority invariant). */
  private readonly placed = new Map<string, Set<string>>()
  readonly dr = { placements: 0, noRoom: 0, startAfterWaits: 0, startAfterTimeouts: 0 }

  constructor (seed: number, voters: VoterSpec[], vms: VmSpec[], timing: OwnershipTiming, detector: DetectorProfile, net: SimNet<SimMsg>, tracing: boolean) {
    this.rng = new SeededRandom(seed ^ 0x5eed5eed)
    this.voters = voters
    this.vms = vms
    this.timing = timing
    this.detector = detector
    this.net = net
    this.tracing = tracing
    for (const v of voters) {
      const applied = new Map<string, GenerationRef | null>()
      for (const vm of vms) if (vm.replicateTo.includes(v.id)) applied.set(vm.name, { epoch: 0, generation: 0 })
      this.hosts.set(v.id, {
        id: v.id, role: v.role, persisted: new Map(), life: 0, instances: new Map(), seenEpoch: new Map(), watchdog: new Map(),
        cmdTail: new Map(), applied, finalized: new Map(), lastSource: new Map(), daemon: undefined, crashed: false, placements: 0
      })
    }
  }

  get now (): number { return this.net.now }

  log (line: string): void { if (this.tracing) this.trace.push(`${this.now.toFixed(2).padStart(9)} ${line}`) }

  violation (what: string): void {
    this.violations.push(`t=${this.now.toFixed(2)} ${what}`)
    this.log(`!!! VIOLATION ${what}`)
  }

  host (id: string): Host {
    const h = this.hosts.get(id)
    if (h === undefined) throw new Error(`no host ${id}`)
    return h
  }

  /** Boots every node on the net. */
  boot (): void {
    for (const v of this.voters) this.net.addNode(v.id, ctx => this.makeDaemon(ctx))
  }

  private makeDaemon (ctx: SimNodeContext<SimMsg>): SimDaemon {
    const h = this.host(ctx.id)
    const initial: OwnershipInput[] = []
    for (const [vm, g] of h.applied) if (g !== null) initial.push({ type: 'replicaApplied', vm, generation: g })
    for (const [vm] of h.instances) {
      const wd = h.watchdog.get(vm)
      const clock = this.net.clock(ctx.id)
      const input: OwnershipInput = { type: 'vmState', vm, running: true }
      if (wd !== undefined) input.fenceDeadline = clock.offset + clock.rate * wd
      initial.push(input)
    }
    const d = new SimDaemon(this, ctx, initial)
    h.daemon = d
    h.placements = 0
    this.placed.delete(ctx.id)
    h.crashed = false
    this.log(`${ctx.id} boot life=${ctx.life} records=${h.persisted.size}`)
    return d
  }

  // ---------------------------------------------------------------- daemon output

  apply (id: string, ctx: SimNodeContext<SimMsg>, out: OwnershipOutput): void {
    const h = this.host(id)
    for (const r of out.persist) {
      h.persisted.set(recordKey(r), r)
      if (r.kind === 'vm' && r.votedFor !== null) this.checkGrant(id, r.vm, r.votedEpoch, r.votedFor)
    }
    for (const s of out.send) {
      if (s.msg.type === 'vote' && s.msg.granted) this.checkGrant(id, s.msg.vm, s.msg.epoch, s.msg.candidate)
      if (this.tracing && (process.env.SIM_TRACE_ALL !== undefined || (s.msg.type !== 'renew' && s.msg.type !== 'renewAck'))) this.log(`${id} → ${s.to} ${JSON.stringify(s.msg)}`)
      this.counts.messages++
      ctx.send(s.to, { k: 'el', bytes: encodeElectionMessage(s.msg) })
    }
    for (const ev of out.events) this.onEvent(id, ev)
    if (h.role === 'host' && h.daemon !== undefined) {
      this.checkLeases(id, h.daemon.machine)
      // judge each new placement once, when it happens (a status walk per output is too slow)
      if (this.capacity.size > 0) {
        const n = h.daemon.machine.placements()
        if (n !== h.placements) { h.placements = n; this.checkPlacement(id, h.daemon.machine) }
      }
    }
  }

  private spec (vm: string): VmSpec | undefined { return this.vms.find(v => v.name === vm) }

  /**
   * Priority: when a VM newly gets room on a host, no higher-priority VM may be waiting there for
   * room it would have had without the newcomer (the machine gives room in priority order).
   * Running VMs are not evicted (documented), so only new placements are judged.
   */
  private checkPlacement (id: string, machine: OwnershipMachine): void {
    const cap = this.capacity.get(id)
    if (cap === undefined) return
    const st = machine.status()
    const now = new Set<string>()
    const waiting: VmSpec[] = []
    const reserved: VmSpec[] = []
    let usedMem = 0
    let usedCpu = 0
    for (const s of st) {
      const spec = this.spec(s.vm)
      if (spec === undefined) continue
      if (s.placement === 'placed') { now.add(s.vm); usedMem += spec.memoryMiB ?? 0; usedCpu += spec.vcpus ?? 0 }
      if (s.placement === 'no-room') waiting.push(spec)
      if (s.placement === 'reserved') reserved.push(spec)
    }
    // room order: higher priority first, then name
    const before_ = (x: VmSpec, y: VmSpec): boolean => (x.priority ?? 0) > (y.priority ?? 0) || ((x.priority ?? 0) === (y.priority ?? 0) && x.name < y.name)
    const before = this.placed.get(id) ?? new Set<string>()
    for (const vm of now) {
      if (before.has(vm)) continue
      this.dr.placements++
      const b = this.spec(vm) as VmSpec
      for (const a of waiting) {
        if ((a.priority ?? 0) <= (b.priority ?? 0)) continue
        // what the machine gave first: placed VMs (all but b), and reservations ahead of a
        let memAhead = 0
        let cpuAhead = 0
        for (const r of reserved) if (before_(r, a)) { memAhead += r.memoryMiB ?? 0; cpuAhead += r.vcpus ?? 0 }
        const memFree = cap.memoryMiB - (usedMem - (b.memoryMiB ?? 0)) - memAhead
        const cpuFree = cap.vcpus - (usedCpu - (b.vcpus ?? 0)) - cpuAhead
        if ((a.memoryMiB ?? 0) <= memFree && (a.vcpus ?? 0) <= cpuFree) this.violation(`${id} placed ${vm} (priority ${b.priority ?? 0}) while ${a.name} (priority ${a.priority ?? 0}) waited for room it would have had`)
      }
    }
    this.placed.set(id, now)
  }

  private checkLeases (id: string, machine: OwnershipMachine): void {
    const local = this.net.localNow(id)
    for (const st of machine.status()) {
      let held = this.leases.get(st.vm)
      if (held === undefined) { held = new Map(); this.leases.set(st.vm, held) }
      const mine = held.get(id)
      if (st.released && mine !== undefined && mine > this.now) { held.set(id, this.now); continue }
      if (!st.ownedHere || st.leaseUntil <= local) continue
      const end = this.net.simTimeOf(id, st.leaseUntil)
      if (mine !== undefined && end <= mine) continue
      held.set(id, end)
      for (const [other, otherEnd] of held) {
        if (other !== id && otherEnd > this.now + EPS) this.violation(`${st.vm}: ${id} holds a lease until ${end.toFixed(1)} while ${other}'s runs until ${otherEnd.toFixed(1)}`)
      }
    }
  }

  private checkGrant (voter: string, vm: string, epoch: number, candidate: string): void {
    const key = `${voter}|${vm}|${epoch}`
    const prev = this.grants.get(key)
    if (prev === undefined) this.grants.set(key, candidate)
    else if (prev !== candidate) this.violation(`voter ${voter} granted ${vm}@${epoch} to ${prev} and to ${candidate}`)
  }

  private onEvent (id: string, ev: OwnershipEvent): void {
    const h = this.host(id)
    if (this.tracing && ev.type !== 'watchdog') this.log(`${id} event ${JSON.stringify(ev)}`)
    switch (ev.type) {
      case 'start': {
        // The deadline armed for this start (the watchdog event comes just before it).
        const armed = h.watchdog.get(ev.vm)
        this.command(h, ev.vm, 10 + this.rng.next() * 190, () => this.execStart(h, ev.vm, ev.epoch, armed))
        return
      }
      case 'stop': this.command(h, ev.vm, this.rng.next() * 300, () => this.execStop(h, ev.vm)); return
      case 'watchdog': this.arm(h, ev.vm, ev.deadline); return
      case 'finalize': h.finalized.set(ev.vm, ev.generation); return
      case 'startAfterTimeout': this.startAnyway.add(`${id}|${ev.vm}`); this.dr.startAfterTimeouts++; return
      case 'noRoom': this.dr.noRoom++; return
      case 'demoted': return
      case 'shipFinal': {
        const token = ++this.shipSeq
        this.ships.set(`${id}|${ev.vm}`, token)
        this.ship(h, ev.vm, ev.to, h.life, token, this.now)
        return
      }
      // loop.ts aborts the ship in flight when the machine gives a planned failover up
      case 'failoverAbandoned': this.ships.delete(`${id}|${ev.vm}`); return
      case 'elected':
        // The replica is the source now; it is a replica again only once resynced from a later owner.
        h.applied.set(ev.vm, null)
        this.counts.elections++
        if (ev.forced) this.counts.forced++
        return
      case 'owner': {
        // The driver learns the epoch of a VM it keeps running (an owner winning back its own VM).
        const inst = h.instances.get(ev.vm)
        if (ev.owner === id && inst !== undefined && ev.epoch > inst.epoch) {
          inst.epoch = ev.epoch
          h.seenEpoch.set(ev.vm, Math.max(h.seenEpoch.get(ev.vm) ?? -1, ev.epoch))
        }
      }
    }
  }

  // ---------------------------------------------------------------- host: driver, hypervisor, watchdog

  /** Driver commands for one VM run in issue order, each after its own latency. */
  private command (h: Host, vm: string, latency: number, fn: () => void): void {
    const life = h.life
    const at = Math.max(this.now + latency, (h.cmdTail.get(vm) ?? -Infinity) + 0.001)
    h.cmdTail.set(vm, at)
    this.net.at(at, () => { if (h.life === life) fn() })
  }

  private execStart (h: Host, vm: string, epoch: number, armed: number | undefined): void {
    const wd = h.watchdog.get(vm) ?? armed
    const inst = h.instances.get(vm)
    if (epoch < (h.seenEpoch.get(vm) ?? -1) || (wd !== undefined && wd <= this.now)) {
      this.log(`${h.id} driver refuses start ${vm}@${epoch} (seen ${h.seenEpoch.get(vm) ?? '-'}, watchdog ${wd?.toFixed(1) ?? '-'})`)
      this.report(h, { type: 'startFailed', vm })
      return
    }
    if (inst === undefined || inst.epoch !== epoch) {
      this.checkStart(h, vm, epoch)
      if (inst === undefined) {
        const fin = h.finalized.get(vm)
        const base = (fin !== undefined ? (fin?.generation ?? 0) : (h.lastSource.get(vm)?.generation ?? 0)) + 1
        h.finalized.delete(vm)
        h.instances.set(vm, { epoch, startT: this.now, base })
      } else {
        inst.epoch = epoch
      }
      h.seenEpoch.set(vm, epoch)
      this.counts.starts++
      this.log(`${h.id} RUN ${vm}@${epoch}`)
    }
    this.report(h, { type: 'started', vm })
  }

  private checkStart (h: Host, vm: string, epoch: number): void {
    for (const other of this.hosts.values()) {
      if (other !== h && other.instances.has(vm)) this.violation(`${vm} starts on ${h.id}@${epoch} while running on ${other.id}@${other.instances.get(vm)?.epoch ?? '?'}`)
    }
    const last = this.lastStart.get(vm)
    if (last !== undefined) {
      if (epoch < last.epoch) this.violation(`${vm} start epoch went down: ${last.host}@${last.epoch} then ${h.id}@${epoch}`)
      else if (last.host !== h.id && epoch <= last.epoch) this.violation(`${vm} started on ${h.id}@${epoch} after ${last.host}@${last.epoch} without a higher epoch`)
    }
    const owner = this.epochOwner.get(`${vm}|${epoch}`)
    if (owner !== undefined && owner !== h.id) this.violation(`${vm}@${epoch} started by ${owner} and ${h.id}`)
    this.epochOwner.set(`${vm}|${epoch}`, h.id)
    this.lastStart.set(vm, { host: h.id, epoch })
    if (this.capacity.size > 0) this.checkRoomAndOrder(h, vm)
    this.startLog.push({ t: this.now, host: h.id, vm, epoch })
  }

  /**
   * Capacity: what runs on the host (this start included) fits in it. Order: each startAfter VM
   * runs now, or ran recently enough that the news of its end may not have reached the starter
   * (a crash is known only once detected), unless the machine said it starts anyway (timeout).
   */
  private checkRoomAndOrder (h: Host, vm: string): void {
    const cap = this.capacity.get(h.id)
    if (cap !== undefined) {
      let mem = 0
      let cpu = 0
      for (const name of [...h.instances.keys(), vm]) { const sp = this.spec(name); mem += sp?.memoryMiB ?? 0; cpu += sp?.vcpus ?? 0 }
      if (mem > cap.memoryMiB || cpu > cap.vcpus) this.violation(`${h.id} over capacity starting ${vm}: ${mem} MiB / ${cpu} vCPUs of ${cap.memoryMiB} / ${cap.vcpus}`)
    }
    const key = `${h.id}|${vm}`
    if (this.startAnyway.delete(key)) return
    const staleMs = this.timing.leaseMs * 2
    for (const dep of this.spec(vm)?.startAfter ?? []) {
      const runs = this.owners(dep).length > 0
      const off = this.lastOff.get(dep)
      const everRan = this.startLog.some(x => x.vm === dep)
      if (!runs && (!everRan || (off !== undefined && this.now - off > staleMs))) this.violation(`${vm} started on ${h.id} while ${dep} (its startAfter) was not running${off !== undefined ? ` (off since ${off.toFixed(1)})` : ''}`)
    }
  }

  private end (h: Host, vm: string, why: string): boolean {
    const inst = h.instances.get(vm)
    if (inst === undefined) return false
    h.instances.delete(vm)
    this.lastOff.set(vm, this.now)
    h.lastSource.set(vm, this.sourceGen(inst))
    this.log(`${h.id} OFF ${vm}@${inst.epoch} (${why})`)
    return true
  }

  private execStop (h: Host, vm: string): void {
    this.end(h, vm, 'stop')
    this.report(h, { type: 'stopped', vm })
  }

  private arm (h: Host, vm: string, deadline: number | null): void {
    if (deadline === null) { h.watchdog.delete(vm); return }
    const at = this.net.simTimeOf(h.id, deadline)
    h.watchdog.set(vm, at)
    const life = h.life
    this.net.at(at, () => {
      // The expired deadline stays armed: the driver refuses any later start until a new one.
      if (h.life !== life || h.watchdog.get(vm) !== at) return
      // The watchdog turns the VM off by itself, within a bounded kill latency.
      this.net.at(this.now + this.rng.next() * 100, () => {
        if (h.life !== life || !this.end(h, vm, 'watchdog')) return
        this.counts.watchdogKills++
        this.report(h, { type: 'stopped', vm })
      })
    })
  }

  /**
   * The replication layer's final ship: it gets through once the target is reachable, ends when
   * aborted, and fails after the ownership host's timeout (daemon/replication/ownership-host.ts).
   */
  private ship (h: Host, vm: string, to: string, life: number, token: number, since: number): void {
    this.net.at(this.now + 250, () => {
      if (h.life !== life || this.endT <= this.now || this.ships.get(`${h.id}|${vm}`) !== token) return
      const target = this.host(to)
      if (!this.net.isUp(to) || this.net.isUp(h.id) === false || this.net.isBlocked(h.id, to) || this.net.isBlocked(to, h.id)) {
        if (this.now - since < FINAL_SHIP_TIMEOUT_MS) this.ship(h, vm, to, life, token, since)
        else { this.ships.delete(`${h.id}|${vm}`); this.report(h, { type: 'finalShipFailed', vm }) }
        return
      }
      this.ships.delete(`${h.id}|${vm}`)
      const final = h.lastSource.get(vm) ?? { epoch: 0, generation: 0 }
      target.applied.set(vm, final)
      this.report(target, { type: 'replicaApplied', vm, generation: final })
      this.report(h, { type: 'finalGenerationShipped', vm, generation: final })
    })
  }

  endT = Infinity
  /** host|vm → the ship in flight (a token: an aborted one stops at its next attempt). */
  private readonly ships = new Map<string, number>()
  private shipSeq = 0

  /** Driver feedback to the daemon: held while it is paused, lost if it is down. */
  report (h: Host, input: OwnershipInput): void {
    const d = h.daemon
    if (d === undefined || !this.net.isUp(h.id)) return
    if (this.net.isPaused(h.id)) { d.hold(input); return }
    this.net.withNode(h.id, (_handler, now) => { d.input(now, input) })
  }

  sourceGen (inst: Instance): GenerationRef {
    return { epoch: inst.epoch, generation: inst.base + Math.floor((this.now - inst.startT) / 1000) }
  }

  /** Replication: every second, replicas connected to the running owner catch up (sometimes). */
  replicate (): void {
    for (const vm of this.vms) {
      const owners = [...this.hosts.values()].filter(h => h.instances.has(vm.name))
      if (owners.length !== 1) continue
      const o = owners[0] as Host
      if (!this.net.isUp(o.id) || this.net.isPaused(o.id)) continue
      const inst = o.instances.get(vm.name) as Instance
      const gen = this.sourceGen(inst)
      for (const id of [vm.home, ...vm.replicateTo]) {
        if (id === o.id) continue
        const h = this.host(id)
        if (!this.net.isUp(id) || this.net.isPaused(id) || this.net.isBlocked(o.id, id) || this.net.isBlocked(id, o.id)) continue
        if (this.rng.next() < 0.4) continue
        const cur = h.applied.get(vm.name)
        if (cur !== undefined && cur !== null && cur.epoch === gen.epoch && cur.generation === gen.generation) continue
        h.applied.set(vm.name, gen)
        this.report(h, { type: 'replicaApplied', vm: vm.name, generation: gen })
      }
    }
  }

  /** A host crash: the daemon and every VM on the host die at once; disks survive. */
  crash (id: string): void {
    const h = this.host(id)
    this.log(`${id} CRASH`)
    this.net.kill(id)
    h.life++
    h.crashed = true
    h.daemon = undefined
    for (const vm of [...h.instances.keys()]) this.end(h, vm, 'host crash')
    h.watchdog.clear()
    h.cmdTail.clear()
  }

  /** Only the daemon restarts (an upgrade, a crash of the process): VMs and the watchdog keep going. */
  restartDaemon (id: string): void {
    this.log(`${id} DAEMON RESTART`)
    this.net.restart(id)
  }

  owners (vm: string): string[] { return [...this.hosts.values()].filter(h => h.instances.has(vm)).map(h => h.id) }
}

/**
 * One simulated daemon: the membership Detector and the ownership machine, each speaking
 * through its codec, wired as daemon.ts wires them (detector member events → machine inputs;
 * a lost connection → transportLost; a late wake-up → observeLag, like the driver's lag probe).
 */
class SimDaemon implements SimNodeHandler<SimMsg> {
  readonly machine: OwnershipMachine
  readonly detector: Detector
  private readonly pending: OwnershipInput[]
  private expectedWake = Infinity

  constructor (private readonly world: World, private readonly ctx: SimNodeContext<SimMsg>, initial: OwnershipInput[]) {
    const now = ctx.now()
    this.machine = new OwnershipMachine({
      self: ctx.id,
      voters: world.voters,
      // As in real configs: a node lists the VMs it hosts or replicates; witnesses list none and
      // learn the rest from peers' messages.
      vms: world.vms.filter(vm => vm.home === ctx.id || vm.replicateTo.includes(ctx.id)),
      timing: world.timing,
      random: ctx.random,
      now,
      records: [...world.host(ctx.id).persisted.values()],
      capacity: world.capacity.get(ctx.id) ?? null
    })
    this.detector = new Detector({ self: ctx.id, peers: world.voters.map(v => v.id), timings: world.detector, random: ctx.random, now })
    // daemon.ts: after the ownership service starts, it is told every member's current state
    // (at boot every peer is 'dead' until heard from), then each change.
    this.pending = [...initial, ...this.detector.members().map((m): OwnershipInput => ({ type: 'member', id: m.id, state: m.state }))]
  }

  hold (input: OwnershipInput): void { this.pending.push(input) }

  input (now: number, input: OwnershipInput): void {
    this.world.apply(this.ctx.id, this.ctx, this.machine.step(now, input))
  }

  receive (now: number, from: string, msg: SimMsg): void {
    this.lag(now)
    if (msg.k === 'swim') this.membership(now, this.detector.step(now, from, decodeSwimMessage(msg.bytes)))
    else this.input(now, { type: 'message', from, msg: decodeElectionMessage(msg.bytes) })
  }

  tick (now: number): void {
    this.lag(now)
    while (this.pending.length > 0) this.input(now, this.pending.shift() as OwnershipInput)
    this.membership(now, this.detector.tick(now))
    this.world.apply(this.ctx.id, this.ctx, this.machine.tick(now))
  }

  peerLost (now: number, peer: string): void {
    this.membership(now, this.detector.transportLost(now, peer))
  }

  nextWake (): number {
    if (this.pending.length > 0) { this.expectedWake = this.ctx.now(); return this.expectedWake }
    this.expectedWake = Math.min(this.detector.nextDeadline(), this.machine.nextDeadline() ?? Infinity)
    return this.expectedWake
  }

  /** A wake-up later than asked for (paused, starved) is event-loop lag to the daemon's lag probe. */
  private lag (now: number): void {
    const late = now - this.expectedWake
    this.expectedWake = Infinity
    if (late > LAG_THRESHOLD_MS) this.membership(now, this.detector.observeLag(now, late))
  }

  private membership (now: number, out: DetectorOutput): void {
    for (const { to, msg } of out.send) this.ctx.send(to, { k: 'swim', bytes: encodeSwimMessage(msg) })
    for (const e of out.events) {
      if (e.type !== 'member') continue
      this.world.log(`${this.ctx.id} sees ${e.id} ${e.state}`)
      this.input(now, { type: 'member', id: e.id, state: e.state })
    }
  }
}

// -------------------------------------------------------------------- schedules

function pick<T> (rng: Random, items: readonly T[]): T { return items[rng.int(items.length)] as T }

interface Cluster { voters: VoterSpec[], vms: VmSpec[] }

function makeCluster (rng: Random, hostCount: number, witnessCount: number, vmCount: number, manualShare: number): Cluster {
  const voters: VoterSpec[] = []
  for (let i = 1; i <= hostCount; i++) voters.push({ id: `h${i}`, role: 'host' })
  for (let i = 1; i <= witnessCount; i++) voters.push({ id: `w${i}`, role: 'witness' })
  const hosts = voters.filter(v => v.role === 'host').map(v => v.id)
  const vms: VmSpec[] = []
  for (let i = 1; i <= vmCount; i++) {
    const home = pick(rng, hosts)
    const others = shuffle(hosts.filter(h => h !== home), rng)
    const replicateTo = others.slice(0, 1 + rng.int(others.length))
    vms.push({ name: `vm${i}`, home, replicateTo, failover: rng.next() < manualShare ? 'manual' : 'auto', startOrder: rng.int(3) })
  }
  return { voters, vms }
}

const SETTLE_MS = 6000
const CHAOS_MS = 20_000
const STABLE_MS = 40_000

export function runSchedule (opts: ScheduleOptions): ScheduleResult {
  const kind = opts.kind ?? 'chaos'
  // the chaos phases and fault windows are sized for LAN leases
  if (kind === 'chaos' && (opts.profile ?? 'lan') !== 'lan') throw new Error('chaos schedules run the lan profile only')
  return kind === 'rto' ? runRto(opts) : kind === 'capacity' ? runCapacity(opts) : runChaos(opts)
}

/** Runs the net, turning a simulator failure (a node spinning, the event budget) into a violation. */
function run (world: World, t: number): boolean {
  try {
    world.net.runUntil(t)
    return true
  } catch (err) {
    world.violation(`simulator: ${err instanceof Error ? err.message : String(err)}`)
    return false
  }
}

/**
 * Every node runs `profile` from the one table, as a daemon with `mesh.profile` and no overrides
 * does, except that the lease arithmetic's drift bound is set to the clocks' simulated drift:
 * the bound under test (for the rto schedules, the shipped one).
 */
function setup (seed: number, cluster: Cluster, profile: ProfileName, drift: number, link: { drop: number, delayMs: number, jitterMs: number, duplicate: number }, tracing: boolean): World {
  const timing: OwnershipTiming = { ...PROFILES[profile].ownership, driftRatio: Math.max(drift, 0.001) }
  const net = new SimNet<SimMsg>({ seed, link, drift, maxEvents: 2_000_000 })
  const world = new World(seed, cluster.voters, cluster.vms, timing, { ...PROFILES[profile].detector }, net, tracing)
  world.boot()
  const every = (): void => { world.replicate(); net.after(1000, every) }
  net.after(1000, every)
  return world
}

function runChaos (opts: ScheduleOptions): ScheduleResult {
  const rng = new SeededRandom(opts.seed)
  const hostCount = 2 + rng.int(3)
  const witnessCount = hostCount === 2 ? (rng.next() < 0.7 ? 1 : 0) : (rng.next() < 0.4 ? 1 : 0)
  const cluster = makeCluster(rng, hostCount, witnessCount, 1 + rng.int(3), 0.15)
  const drift = pick(rng, [0, 0.01, 0.02, 0.05])
  const baseLink = {
    drop: pick(rng, [0, 0, 0.01, 0.05, 0.15]),
    delayMs: 0.2 + rng.next() * 2,
    jitterMs: pick(rng, [1, 5, 20, 100]),
    duplicate: pick(rng, [0, 0, 0.02, 0.1])
  }
  const world = setup(opts.seed, cluster, 'lan', drift, baseLink, opts.trace === true)
  const net = world.net
  const ids = cluster.voters.map(v => v.id)
  const hostIds = cluster.voters.filter(v => v.role === 'host').map(v => v.id)
  const majority = Math.floor(ids.length / 2) + 1
  const faults: string[] = []
  const heal = SETTLE_MS + CHAOS_MS
  const dur = (): number => 1000 + rng.next() * 14_000
  const at = (t: number, what: string, fn: () => void): void => {
    net.at(t, () => { world.log(`FAULT ${what}`); fn() })
  }
  const nFaults = 1 + rng.int(4)
  for (let i = 0; i < nFaults; i++) {
    const t = SETTLE_MS + rng.next() * (CHAOS_MS - 2000)
    const node = pick(rng, ids)
    const end = Math.min(heal, t + dur())
    const f = rng.int(100)
    if (f < 18) {
      faults.push('crash')
      at(t, `crash ${node}`, () => { if (net.isUp(node)) world.crash(node) })
      if (rng.next() < 0.7) at(end, `reboot ${node}`, () => { if (!net.isUp(node)) net.restart(node) })
    } else if (f < 28) {
      faults.push('daemon-restart')
      at(t, `daemon restart ${node}`, () => { if (net.isUp(node) && !net.isPaused(node)) world.restartDaemon(node) })
    } else if (f < 46) {
      faults.push('pause')
      at(t, `pause ${node}`, () => net.pause(node))
      at(end, `resume ${node}`, () => net.resume(node))
    } else if (f < 58) {
      faults.push('partition')
      const side = shuffle([...ids], rng)
      const cut = 1 + rng.int(ids.length - 1)
      const a = side.slice(0, cut)
      const b = side.slice(cut)
      at(t, `partition ${a.join(',')} | ${b.join(',')}`, () => net.partition(a, b))
      at(end, 'heal partitions', () => net.heal())
    } else if (f < 68) {
      faults.push('one-way')
      const other = pick(rng, ids.filter(x => x !== node))
      const all = rng.next() < 0.5
      at(t, `one-way ${node} -> ${all ? '*' : other} blocked`, () => net.partition([node], all ? ids.filter(x => x !== node) : [other], { oneWay: true }))
      at(end, 'heal partitions', () => net.heal())
    } else if (f < 74) {
      faults.push('isolate')
      at(t, `isolate ${node}`, () => net.isolate(node))
      at(end, 'heal partitions', () => net.heal())
    } else if (f < 82) {
      faults.push('loss-burst')
      at(t, 'loss burst', () => { for (const x of ids) net.setNodeLinks(x, { drop: 0.5, jitterMs: 300 }) })
      at(end, 'loss burst over', () => net.resetLinks())
    } else if (f < 92) {
      faults.push('planned')
      const vm = pick(rng, cluster.vms)
      at(t, `planned failover ${vm.name}`, () => {
        const owner = world.owners(vm.name)[0]
        if (owner === undefined) return
        const targets = [vm.home, ...vm.replicateTo].filter(h => h !== owner)
        const to = pick(world.rng, targets)
        world.counts.planned++
        world.host(owner).daemon?.hold({ type: 'plannedFailover', vm: vm.name, to })
        net.withNode(owner, (h) => h.tick(net.localNow(owner)))
      })
    } else {
      const vm = pick(rng, cluster.vms)
      const target = pick(rng, hostIds)
      // --force is only exercised where it is safe by construction: two hosts, no witness.
      const force = hostIds.length === 2 && witnessCount === 0 && rng.next() < 0.6
      faults.push(force ? 'force' : 'operator')
      at(t, `operator failover ${vm.name} on ${target}${force ? ' --force' : ''}`, () => {
        world.host(target).daemon?.hold({ type: 'operatorFailover', vm: vm.name, force })
        net.withNode(target, (h) => h.tick(net.localNow(target)))
      })
    }
  }

  if (!run(world, heal)) return failed(opts.seed, 'chaos', world)
  // Heal: the network is clean again, paused nodes resume, crashed hosts come back — except,
  // sometimes, one that a majority holding a replica of every VM can do without.
  net.heal()
  net.resetLinks()
  for (const x of ids) net.setNodeLinks(x, { drop: Math.min(baseLink.drop, 0.01), duplicate: baseLink.duplicate, jitterMs: Math.min(baseLink.jitterMs, 20) })
  for (const x of ids) if (net.isPaused(x)) net.resume(x)
  let keepDead: string | undefined
  if (rng.next() < 0.3 && ids.length - 1 >= majority) {
    const cand = pick(rng, ids)
    const ok = cluster.vms.every(vm => [...world.hosts.values()].some(h => h.id !== cand && h.role === 'host' &&
      ((h.applied.get(vm.name) ?? null) !== null || h.instances.has(vm.name))))
    if (ok) keepDead = cand
  }
  world.log(`HEAL${keepDead !== undefined ? ` (${keepDead} stays down)` : ''}`)
  if (keepDead !== undefined && net.isUp(keepDead)) world.crash(keepDead)
  for (const x of ids) if (x !== keepDead && !net.isUp(x)) net.restart(x)
  // The operator steps in for manual VMs left without a running owner.
  net.at(heal + 12_000, () => {
    for (const vm of cluster.vms) {
      if (vm.failover !== 'manual' || world.owners(vm.name).length > 0) continue
      let best: Host | undefined
      for (const h of world.hosts.values()) {
        if (h.role !== 'host' || !net.isUp(h.id)) continue
        const g = h.applied.get(vm.name) ?? null
        if (g === null) continue
        const bg = best?.applied.get(vm.name) ?? null
        if (best === undefined || bg === null || g.epoch > bg.epoch || (g.epoch === bg.epoch && g.generation > bg.generation)) best = h
      }
      if (best === undefined) continue
      world.log(`OPERATOR failover ${vm.name} on ${best.id}`)
      const id = best.id
      best.daemon?.hold({ type: 'operatorFailover', vm: vm.name })
      net.withNode(id, (h) => h.tick(net.localNow(id)))
    }
  })
  world.endT = heal + STABLE_MS
  if (!run(world, heal + STABLE_MS)) return failed(opts.seed, 'chaos', world)

  // Liveness: every VM runs on exactly one live host that believes it owns it.
  const problems: string[] = []
  for (const vm of cluster.vms) {
    const runners = world.owners(vm.name)
    if (runners.length !== 1) { problems.push(`${vm.name} runs on [${runners.join(',')}]`); continue }
    const r = runners[0] as string
    const st = world.host(r).daemon?.machine.status().find(s => s.vm === vm.name)
    if (!net.isUp(r) || st?.ownedHere !== true) problems.push(`${vm.name} runs on ${r} which does not own it`)
  }
  // A liveness failure is diagnosed from each live node's view of the VM at the end.
  if (problems.length > 0) {
    for (const { id } of cluster.voters) {
      if (!net.isUp(id)) continue
      for (const st of world.host(id).daemon?.machine.status() ?? []) world.log(`${id} END ${JSON.stringify(st)}`)
    }
  }
  const summary = `${hostCount}h+${witnessCount}w ${cluster.vms.length}vm drift=${drift} drop=${baseLink.drop} dup=${baseLink.duplicate} jitter=${baseLink.jitterMs} faults=[${faults.join(',')}]${keepDead !== undefined ? ` keepDead=${keepDead}` : ''}`
  return {
    seed: opts.seed,
    kind: 'chaos',
    summary,
    faults,
    violations: world.violations,
    liveness: problems.length === 0 ? 'ok' : 'failed',
    livenessDetail: problems.join('; '),
    trace: world.trace,
    counts: world.counts,
    timing: world.timing,
    detector: world.detector
  }
}

function failed (seed: number, kind: ScheduleKind, world: World): ScheduleResult {
  return { seed, kind, summary: 'simulator failure', faults: [], violations: world.violations, liveness: 'failed', livenessDetail: 'simulator failure', trace: world.trace, counts: world.counts, timing: world.timing, detector: world.detector }
}

/** WAN links for rto schedules of the wan profile: 30–60 ms one way, a little loss. */
const WAN_LINK = { drop: 0.005, delayMs: 30, jitterMs: 30, duplicate: 0 }

/**
 * A clean network (LAN, or WAN links for the wan profile) with the shipped drift bound: the
 * owner host of vm1 crashes for good; how long until vm1 runs elsewhere?
 */
function runRto (opts: ScheduleOptions): ScheduleResult {
  const rng = new SeededRandom(opts.seed)
  const hostCount = 2 + rng.int(3)
  const witnessCount = hostCount === 2 ? 1 : rng.int(2)
  const cluster = makeCluster(rng, hostCount, witnessCount, 1 + rng.int(3), 0)
  const profile = opts.profile ?? 'lan'
  const link = profile === 'lan' ? { drop: 0.001, delayMs: 0.2, jitterMs: 1, duplicate: 0 } : WAN_LINK
  const world = setup(opts.seed, cluster, profile, PROFILES[profile].ownership.driftRatio, link, opts.trace === true)
  const killAt = 10_000 + rng.next() * 2000
  if (!run(world, killAt)) return failed(opts.seed, 'rto', world)
  const victim = world.owners('vm1')[0]
  let rtoMs: number | undefined
  const problems: string[] = []
  if (victim === undefined) {
    problems.push('vm1 not running before the crash')
  } else {
    world.crash(victim)
    if (!run(world, killAt + 6 * world.timing.leaseMs)) return failed(opts.seed, 'rto', world)
    const s = world.startLog.find(x => x.vm === 'vm1' && x.t >= killAt && x.host !== victim)
    if (s === undefined) problems.push('vm1 never restarted elsewhere')
    else rtoMs = s.t - killAt
  }
  return {
    seed: opts.seed,
    kind: 'rto',
    summary: `${hostCount}h+${witnessCount}w ${cluster.vms.length}vm`,
    faults: ['crash'],
    violations: world.violations,
    liveness: problems.length === 0 ? 'ok' : 'failed',
    livenessDetail: problems.join('; '),
    ...(rtoMs !== undefined ? { rtoMs } : {}),
    trace: world.trace,
    counts: world.counts,
    timing: world.timing,
    detector: world.detector
  }
}

// -------------------------------------------------------------------- capacity schedules

const CAP_SETTLE_MS = 4000
const CAP_END_MS = 28_000

/**
 * Capacity, priority and start order under multiple host failures: 3 hosts with random
 * capacities and 2 witnesses (a lone survivor still has a majority), up to 6 VMs with random
 * memory, vCPUs, priorities and startAfter chains (acyclic, sometimes naming a VM that does not
 * exist, so the timeout path runs too); after settling, two hosts (sometimes one) crash, some
 * come back. Checked on every start and placement: no host over capacity, start order kept
 * (or the timeout announced), no higher-priority VM left waiting for room a lower one just
 * took. At the end: no VM is off while a live holder of its data has room for it.
 */
function runCapacity (opts: ScheduleOptions): ScheduleResult {
  const rng = new SeededRandom(opts.seed)
  // three hosts and two witnesses: two hosts may die and the survivor still has a majority
  const hostCount = 3
  const voters: VoterSpec[] = []
  for (let i = 1; i <= hostCount; i++) voters.push({ id: `h${i}`, role: 'host' })
  voters.push({ id: 'w1', role: 'witness' }, { id: 'w2', role: 'witness' })
  const hosts = voters.filter(v => v.role === 'host').map(v => v.id)
  const caps = new Map<string, HostCapacity>(hosts.map(h => [h, { memoryMiB: pick(rng, [4096, 6144, 8192]), vcpus: pick(rng, [4, 8, 16]) }]))
  const load = new Map<string, { mem: number, cpu: number }>(hosts.map(h => [h, { mem: 0, cpu: 0 }]))
  const vmCount = 4 + rng.int(3)
  const vms: VmSpec[] = []
  for (let i = 1; i <= vmCount; i++) {
    const memoryMiB = pick(rng, [1024, 2048, 3072])
    const vcpus = pick(rng, [1, 2, 4])
    // a home where it fits: production runs within capacity (an owner keeps a VM it has no
    // room for — documented — so a config over capacity at home is not what this checks)
    const fitting = hosts.filter(h => { const l = load.get(h) as { mem: number, cpu: number }; const c = caps.get(h) as HostCapacity; return l.mem + memoryMiB <= c.memoryMiB && l.cpu + vcpus <= c.vcpus })
    if (fitting.length === 0) continue
    const home = pick(rng, fitting)
    const l = load.get(home) as { mem: number, cpu: number }
    l.mem += memoryMiB
    l.cpu += vcpus
    const others = shuffle(hosts.filter(h => h !== home), rng)
    const replicateTo = rng.next() < 0.6 ? others : others.slice(0, 1 + rng.int(others.length))
    const startAfter: string[] = []
    if (vms.length > 0 && rng.next() < 0.4) startAfter.push(pick(rng, vms).name)
    if (rng.next() < 0.05) startAfter.push('ghost')
    vms.push({
      name: `vm${i}`, home, replicateTo, failover: 'auto', priority: rng.int(4), memoryMiB, vcpus,
      ...(startAfter.length > 0 ? { startAfter, startAfterTimeoutMs: 6000 } : {})
    })
  }
  const link = { drop: pick(rng, [0, 0.01, 0.03]), delayMs: 0.2 + rng.next(), jitterMs: pick(rng, [1, 5, 20]), duplicate: pick(rng, [0, 0.02]) }
  const drift = pick(rng, [0, 0.01, 0.02])
  const timing: OwnershipTiming = { ...PROFILES.lan.ownership, driftRatio: Math.max(drift, 0.001) }
  const net = new SimNet<SimMsg>({ seed: opts.seed, link, drift, maxEvents: 2_000_000 })
  const world = new World(opts.seed, voters, vms, timing, { ...PROFILES.lan.detector }, net, opts.trace === true)
  for (const [h, c] of caps) world.capacity.set(h, c)
  world.boot()
  const every = (): void => { world.replicate(); net.after(1000, every) }
  net.after(1000, every)

  const crashes = rng.next() < 0.75 ? 2 : 1
  const victims = shuffle([...hosts], rng).slice(0, crashes)
  const faults: string[] = [`crash×${crashes}`]
  for (const v of victims) {
    const t = CAP_SETTLE_MS + rng.next() * 3000
    net.at(t, () => { world.log(`FAULT crash ${v}`); if (net.isUp(v)) world.crash(v) })
    if (rng.next() < 0.4) {
      faults.push('reboot')
      net.at(t + 5000 + rng.next() * 5000, () => { world.log(`FAULT reboot ${v}`); if (!net.isUp(v)) net.restart(v) })
    }
  }
  world.endT = CAP_END_MS
  if (!run(world, CAP_END_MS)) return failed(opts.seed, 'capacity', world)

  // Liveness under capacity: a VM is off only if no live host holding its data has room for it.
  const problems: string[] = []
  for (const vm of vms) {
    if (world.owners(vm.name).length > 0) continue
    for (const h of world.hosts.values()) {
      if (h.role !== 'host' || !net.isUp(h.id)) continue
      const holds = (h.applied.get(vm.name) ?? null) !== null || h.daemon?.machine.status().find(x => x.vm === vm.name)?.owner === h.id
      if (!holds) continue
      const cap = caps.get(h.id) as HostCapacity
      let mem = 0
      let cpu = 0
      for (const name of h.instances.keys()) { const sp = vms.find(x => x.name === name); mem += sp?.memoryMiB ?? 0; cpu += sp?.vcpus ?? 0 }
      if (mem + (vm.memoryMiB ?? 0) <= cap.memoryMiB && cpu + (vm.vcpus ?? 0) <= cap.vcpus) problems.push(`${vm.name} is off though ${h.id} holds it and has room`)
    }
  }
  return {
    seed: opts.seed,
    kind: 'capacity',
    summary: `${hostCount}h+2w ${vms.length}vm caps=${[...caps].map(([h, c]) => `${h}:${c.memoryMiB}/${c.vcpus}`).join(',')} vms=${vms.map(v => `${v.name}@${v.home}:${v.memoryMiB}/${v.vcpus}p${v.priority}${v.startAfter !== undefined ? `>${v.startAfter.join('+')}` : ''}`).join(',')} faults=[${faults.join(',')}] victims=${victims.join(',')}`,
    faults,
    violations: world.violations,
    liveness: problems.length === 0 ? 'ok' : 'failed',
    livenessDetail: problems.join('; '),
    trace: world.trace,
    counts: world.counts,
    dr: world.dr,
    timing: world.timing,
    detector: world.detector
  }
}
