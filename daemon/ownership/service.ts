/**
 * The ownership service: the daemon's side of leases and failover. It carries election frames
 * (and VM policies) over libp2p, keeps the machine's records in LevelDB, and hands everything
 * else to the event loop (loop.ts), which runs the pure OwnershipMachine on real time and acts
 * on its events — the watchdog on the loop's queue, hypervisor calls on a lane per VM, so a
 * slow start never holds back a lease renewal.
 *
 *   election frames ─▶ OwnershipLoop ─persist─▶ LevelDB (sync)   (1) durable first
 *   member / replica / operator inputs ─▶  ─send───▶ Messenger    (2) then send
 *                                          ─events─▶ watchdog, driver lanes (3) then act
 *
 * Machine IDs are node names; the messenger maps them to peer IDs.
 */
import type { Libp2p } from '@libp2p/interface'
import type { AbstractLevel } from 'abstract-level'
import type { Clock, TimerHandle } from '../../common/clock.ts'
import type { Random } from '../../common/random.ts'
import { errorMessage } from '../../common/errors.ts'
import type { Logger } from '../log.ts'
import { Messenger } from '../mesh/messenger.ts'
import { OwnershipMachine } from './machine.ts'
import { recordKey, type OwnershipInput, type OwnershipTiming, type PersistRecord, type VmOwnershipStatus, type VmSpec, type HostCapacity, type VoterSpec, type GenerationRef } from './types.ts'
import { OwnershipLoop, type LoopStats, type TimelineEntry } from './loop.ts'
import { decodeElectionMessage, encodeElectionMessage } from '../../protocol/election/codec.ts'
import { ELECTION_PROTOCOL } from '../../protocol/election/ids.ts'
import type { HypervisorDriver, VmStartFiles } from '../hypervisor/driver.ts'
import { VMSPEC_MAX_MESSAGE_BYTES, VMSPEC_PROTOCOL, decodeVmSpecs, encodeVmSpecs } from '../../protocol/vmspec/index.ts'
import { FailoverRefusedError } from './errors.ts'
import { wireVmSpec } from './spec.ts'
import { resolveCapacity, type CapacityConfig } from './capacity.ts'

export type { OwnershipHost, FencingWatchdog } from './ports.ts'
import type { OwnershipHost, FencingWatchdog } from './ports.ts'

export interface OwnershipComponents {
  clock: Clock
  random: Random
  log: Logger
  libp2p: Libp2p
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  db: AbstractLevel<any, string, string>
  driver?: HypervisorDriver
  watchdog?: FencingWatchdog
  host: OwnershipHost
  requestDial?: (peerId: string) => void
}

export interface OwnershipInit {
  /** This node's name. */
  self: string
  /** Every configured node (names), this one included. */
  voters: VoterSpec[]
  /** name ↔ peer ID for every other node. */
  peerIds: Record<string, string>
  /** VMs configured on this node (home = self); grows on reload. */
  vms: VmSpec[]
  timing: Partial<OwnershipTiming>
  maxConcurrentStarts: number
  /** How often running VMs are checked with the driver (a crashed VM is reported stopped). @default 2000 */
  monitorMs?: number
  /** How often this node's VM specs are re-announced to connected peers. @default 3000 */
  specAnnounceMs?: number
  /** `node.capacity` (a dimension left out is asked of the driver); absent and untold: not counted. */
  capacity?: CapacityConfig
}

export class OwnershipService {
  private machine?: OwnershipMachine
  private loop?: OwnershipLoop
  private readonly messenger: Messenger
  private readonly specMessenger: Messenger
  private readonly knownSpecs = new Map<string, string>()
  private readonly onConnect = (evt: CustomEvent): void => { this.announceSpecs(evt.detail.toString(), true) }
  private specTimer?: TimerHandle
  private started = false
  private readonly idToName = new Map<string, string>()
  readonly stats: LoopStats = { decodeErrors: 0, starts: 0, stops: 0, startFailures: 0 }
  /** Timeline of ownership events (bounded), for status and the demo. */
  readonly timeline: TimelineEntry[] = []

  constructor (private readonly components: OwnershipComponents, private readonly init: OwnershipInit) {
    for (const [name, id] of Object.entries(init.peerIds)) this.idToName.set(id, name)
    this.messenger = new Messenger({
      libp2p: components.libp2p,
      ...(components.requestDial !== undefined ? { requestDial: components.requestDial } : {}),
      onMessage: (from, body) => { this.receive(from, body) },
      onProtocolError: (from, error) => { this.stats.decodeErrors++; components.log.warn({ peer: from, error }, 'election stream violated framing; reset') }
    }, { protocol: ELECTION_PROTOCOL, maxFrameBytes: 4096 })
    this.specMessenger = new Messenger({
      libp2p: components.libp2p,
      onMessage: (from, body) => { this.receiveSpecs(from, body) },
      onProtocolError: (from, error) => { this.stats.decodeErrors++; components.log.warn({ peer: from, error }, 'vm spec stream violated framing; reset') }
    }, { protocol: VMSPEC_PROTOCOL, maxFrameBytes: VMSPEC_MAX_MESSAGE_BYTES })
  }

  /**
   * `want`: ask the peer for its specs in return. A node sends that when it starts, so a peer
   * that announced before our handler existed (its announcement was refused) answers now
   * instead of at its next re-announce — which could come after it has died.
   */
  private announceSpecs (peerId: string, want = false): void {
    if (!this.idToName.has(peerId) || (this.init.vms.length === 0 && !want)) return
    const body = encodeVmSpecs({ v: 1, ...(want ? { want: true } : {}), specs: this.init.vms.map(wireVmSpec) })
    // the stream opens asynchronously after connect; retry shortly if the first send was dropped
    if (!this.specMessenger.send(peerId, body)) this.components.clock.setTimeout(() => { if (this.started) this.specMessenger.send(peerId, body) }, 500)
  }

  /**
   * Re-announces this node's VM specs to every connected peer now and then: a first
   * announcement can be lost (the peer's handler not registered yet, a stream reset), and a
   * replica holder that never learns the policy could not stand as a candidate.
   */
  private armSpecAnnounce (delayMs: number, want = false): void {
    this.specTimer = this.components.clock.setTimeout(() => {
      if (!this.started) return
      for (const c of this.components.libp2p.getConnections()) this.announceSpecs(c.remotePeer.toString(), want)
      this.armSpecAnnounce(this.init.specAnnounceMs ?? 3000)
    }, delayMs)
  }

  private receiveSpecs (fromPeerId: string, body: Uint8Array): void {
    const from = this.idToName.get(fromPeerId)
    if (from === undefined) return
    let parsed
    try { parsed = decodeVmSpecs(body) } catch (err) {
      this.stats.decodeErrors++
      this.components.log.warn({ peer: from, error: errorMessage(err).slice(0, 200) }, 'bad VM spec message ignored')
      return
    }
    if (parsed.want === true) this.announceSpecs(fromPeerId)
    for (const spec of parsed.specs) {
      if (spec.home !== from) continue // a node speaks only for the VMs it is home to
      const key = JSON.stringify(spec)
      if (this.knownSpecs.get(spec.name) === key) continue
      this.knownSpecs.set(spec.name, key)
      this.components.log.info({ vm: spec.name, home: spec.home, failover: spec.failover, replicateTo: spec.replicateTo }, 'VM policy learned from its home node')
      this.input({ type: 'vm', spec })
    }
  }

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    const records: PersistRecord[] = []
    for await (const [, value] of this.components.db.iterator()) {
      try { records.push(JSON.parse(value) as PersistRecord) } catch (err) { this.components.log.error({ error: errorMessage(err) }, 'unreadable ownership record skipped') }
    }
    // before the machine exists: no election may place anything on an unknown capacity
    const capacity = await resolveCapacity(this.init.capacity, this.components.driver, this.components.log)
    const now = this.components.clock.now()
    this.machine = OwnershipMachine.restore({
      capacity,
      self: this.init.self,
      voters: this.init.voters,
      vms: this.init.vms,
      timing: this.init.timing,
      maxConcurrentStarts: this.init.maxConcurrentStarts,
      random: this.components.random,
      now
    }, records)
    // replication follows ownership from the start, not only from the next change
    for (const st of this.machine.status()) if (st.owner !== '') this.components.host.ownerChanged?.(st.vm, st.owner, st.epoch)
    const { clock, log, db, driver, watchdog, host } = this.components
    this.loop = new OwnershipLoop({
      clock,
      log,
      machine: this.machine,
      persist: async (recs) => { await db.batch(recs.map(r => ({ type: 'put' as const, key: recordKey(r), value: JSON.stringify(r) })), { sync: true } as never) },
      send: (to, msg) => {
        const peerId = this.init.peerIds[to]
        if (peerId !== undefined) this.messenger.send(peerId, encodeElectionMessage(msg))
      },
      ...(driver !== undefined ? { driver } : {}),
      ...(watchdog !== undefined ? { watchdog } : {}),
      host
    }, { timeline: this.timeline, stats: this.stats, ...(this.init.monitorMs !== undefined ? { monitorMs: this.init.monitorMs } : {}) })
    await this.messenger.start()
    await this.specMessenger.start()
    this.components.libp2p.addEventListener('peer:connect', this.onConnect)
    this.armSpecAnnounce(0, true)
    // boot report (what the hypervisor runs now, with the watchdog deadline it inherited), then the machine runs
    await this.loop.start(this.init.vms.map(v => v.name))
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    this.components.clock.clearTimeout(this.specTimer)
    this.components.libp2p.removeEventListener('peer:connect', this.onConnect)
    await this.specMessenger.stop()
    await this.messenger.stop()
    await this.loop?.stop()
  }

  /** Failure-detector input (peer ID from the membership service). */
  memberChanged (peerId: string, state: 'alive' | 'suspect' | 'dead'): void {
    const name = this.idToName.get(peerId)
    if (name === undefined) return
    this.input({ type: 'member', id: name, state })
    // a peer that just became reachable hears our VMs' policy now, not at the next re-announce
    if (state === 'alive' && this.started) this.announceSpecs(peerId, true)
  }

  /** A VM newly configured on this node (reload): owned here from epoch 0, announced to peers. */
  addHomeVm (spec: VmSpec): void {
    if (this.init.vms.some(v => v.name === spec.name)) return
    this.init.vms = [...this.init.vms, spec]
    this.input({ type: 'vm', spec })
    this.input({ type: 'vmState', vm: spec.name, running: false })
    for (const c of this.components.libp2p.getConnections()) this.announceSpecs(c.remotePeer.toString())
  }

  replicaApplied (vm: string, generation: GenerationRef | null): void { this.input({ type: 'replicaApplied', vm, generation }) }
  learnVm (spec: VmSpec): void { this.input({ type: 'vm', spec }) }
  /**
   * An operator's failover (unplanned: this node or `to` takes the VM; `point`: the recovery
   * point to start from instead of the latest). Rejects with FailoverRefusedError when the
   * machine refuses it outright; a move that is accepted completes asynchronously.
   */
  async operatorFailover (vm: string, opts: { to?: string, force?: boolean, point?: string }): Promise<void> {
    const { point, ...rest } = opts
    if (point !== undefined) {
      if ((opts.to ?? this.init.self) !== this.init.self) throw new FailoverRefusedError(vm, 'point-elsewhere', `--point picks a recovery point of this node's replica; run it on ${opts.to ?? '?'}`)
      this.loop?.requestPoint(vm, point)
    }
    await this.request(vm, { type: 'operatorFailover', vm, ...rest })
  }

  /** Planned failover: run on the VM's owner. */
  async plannedFailover (vm: string, to: string): Promise<void> {
    await this.request(vm, { type: 'plannedFailover', vm, to })
  }

  private async request (vm: string, input: OwnershipInput): Promise<void> {
    const refusal = this.loop === undefined || !this.started ? 'not-running' : await this.loop.request(vm, input)
    if (refusal !== undefined) {
      this.loop?.dropRequestedPoint(vm)
      const owner = this.machine?.status().find(s => s.vm === vm)?.owner
      const hint = refusal === 'not-owner' && owner !== undefined
        ? `a planned failover runs on the owner, ${owner}`
        : refusal === 'target-dead' ? 'this node does not see the target alive; check `vmesh status` on both' : ''
      throw new FailoverRefusedError(vm, refusal, hint)
    }
  }

  status (): VmOwnershipStatus[] { return this.machine?.status() ?? [] }
  runsOn (vm: string): string | null { return this.machine?.runsOn(vm) ?? null }
  holders (vm: string): Array<{ id: string, generation: GenerationRef, fits: boolean }> { return this.machine?.holders(vm) ?? [] }
  /** This host's capacity and used room, and what other hosts last said of theirs. */
  room (): { capacity: HostCapacity | null, used: HostCapacity, hosts: Record<string, { capacity: HostCapacity, free: HostCapacity }> } | undefined {
    const r = this.machine?.room()
    return r === undefined ? undefined : { capacity: r.capacity, used: r.used, hosts: Object.fromEntries(r.hosts) }
  }
  specOf (vm: string): VmSpec | undefined { return this.machine?.spec(vm) }
  isRunningHere (vm: string): boolean { return this.loop?.isRunningHere(vm) ?? false }

  private receive (fromPeerId: string, body: Uint8Array): void {
    const from = this.idToName.get(fromPeerId)
    if (from === undefined) return
    let msg
    try { msg = decodeElectionMessage(body) } catch (err) {
      this.stats.decodeErrors++
      this.components.log.warn({ peer: from, error: errorMessage(err) }, 'bad election message ignored')
      return
    }
    this.input({ type: 'message', from, msg })
  }

  /** Feeds one input (or only a tick when null) through the machine, in order with everything else. */
  private input (input: OwnershipInput | null): void {
    if (this.started) this.loop?.input(input)
  }
}
