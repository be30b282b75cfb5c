/**
 * The ownership driver: runs the pure OwnershipMachine (leases, election, start/stop) on real
 * time, real streams, a durable record store, the hypervisor driver and the watchdog process.
 *
 *   timers ─tick─▶ OwnershipMachine ─persist─▶ LevelDB (sync)      (1) durable first
 *   election frames ─step─▶   │      ─send───▶ Messenger          (2) then send
 *   member / replica / driver inputs ─▶        ─events─▶ queue    (3) then act, in order:
 *        watchdog.arm → finalize → driver.start(epoch) → started/startFailed, stop → turnOff → stopped
 *
 * Events are executed one at a time on a queue because their order is the safety argument
 * (the watchdog is armed before the start it protects, the replica finalized before it is
 * started). Inputs that event handling produces go back through the same path. Machine IDs
 * are node names; the messenger maps them to peer IDs.
 */
import type { Libp2p } from '@libp2p/interface'
import type { AbstractLevel } from 'abstract-level'
import type { Clock, TimerHandle } from '../../common/clock.ts'
import type { Random } from '../../common/random.ts'
import { errorMessage } from '../../common/errors.ts'
import type { Logger } from '../log.ts'
import { Messenger } from '../mesh/messenger.ts'
import { OwnershipMachine } from './machine.ts'
import { recordKey, type OwnershipEvent, type OwnershipInput, type OwnershipOutput, type OwnershipTiming, type PersistRecord, type VmOwnershipStatus, type VmSpec, type VoterSpec, type GenerationRef } from './types.ts'
import { decodeElectionMessage, encodeElectionMessage } from '../../protocol/election/codec.ts'
import { ELECTION_PROTOCOL } from '../../protocol/election/ids.ts'
import type { HypervisorDriver, VmStartFiles } from '../hypervisor/driver.ts'
import { VMSPEC_MAX_MESSAGE_BYTES, VMSPEC_PROTOCOL, decodeVmSpecs, encodeVmSpecs } from '../../protocol/vmspec/index.ts'
import { FailoverRefusedError } from './errors.ts'

/** What ownership needs from replication (and, on the home node, the configured files). */
export interface OwnershipHost {
  /** Files to start `vm` from here: the originals on its home node, the finalized replica elsewhere. */
  filesForStart: (vm: string) => Promise<VmStartFiles>
  /**
   * Roll the local replica to `generation` (the latest consistent one when null) before a
   * start; `point` (an operator's --point) overrides both.
   */
  finalize: (vm: string, generation: GenerationRef | null, point?: string) => Promise<void>
  /** Planned failover: ship the final generation to `to`; resolves with it. */
  shipFinal: (vm: string, to: string) => Promise<GenerationRef>
  /** This node is no longer the VM's owner: its copy becomes a replica of `owner`. */
  demoted: (vm: string, owner: string, epoch: number) => void
  /** Ownership moved (for replication direction and status). */
  ownerChanged?: (vm: string, owner: string, epoch: number) => void
}

/** The slice of a watchdog the driver uses (daemon/watchdog/client.ts implements it). */
export interface FencingWatchdog {
  arm: (vm: string, deadline: number) => Promise<void>
  disarm: (vm: string) => Promise<void> | void
  onFence: (fn: (r: { vm: string, at: number, ok: boolean }) => void) => () => void
  inherited: () => Array<{ vm: string, deadline: number }>
}

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
}

export class OwnershipService {
  private machine?: OwnershipMachine
  private readonly messenger: Messenger
  private readonly specMessenger: Messenger
  private readonly knownSpecs = new Map<string, string>()
  private readonly onConnect = (evt: CustomEvent): void => { this.announceSpecs(evt.detail.toString(), true) }
  private timer?: TimerHandle
  private monitorTimer?: TimerHandle
  private specTimer?: TimerHandle
  private started = false
  private queue: Promise<void> = Promise.resolve()
  private readonly idToName = new Map<string, string>()
  private readonly deadlines = new Map<string, number>()
  private readonly runningHere = new Set<string>()
  private readonly requestedPoints = new Map<string, string>()
  private unsubscribeFence?: () => void
  readonly stats = { decodeErrors: 0, starts: 0, stops: 0, startFailures: 0 }
  /** Timeline of ownership events (bounded), for status and the demo. */
  readonly timeline: Array<{ atWallMs: number, vm: string, event: string, epoch?: number, detail?: string }> = []

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
    const body = encodeVmSpecs({ v: 1, ...(want ? { want: true } : {}), specs: this.init.vms.map(v => ({ name: v.name, home: v.home, replicateTo: v.replicateTo, failover: v.failover ?? 'auto', startOrder: v.startOrder ?? 0, priority: v.priority ?? 0 })) })
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
    const now = this.components.clock.now()
    this.machine = OwnershipMachine.restore({
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
    this.unsubscribeFence = this.components.watchdog?.onFence((r) => {
      this.note(r.vm, r.ok ? 'fenced by watchdog' : 'watchdog fence failed')
      if (r.ok) { this.runningHere.delete(r.vm); this.input({ type: 'stopped', vm: r.vm }) }
    })
    await this.messenger.start()
    await this.specMessenger.start()
    this.components.libp2p.addEventListener('peer:connect', this.onConnect)
    this.armSpecAnnounce(0, true)
    // boot report: what the hypervisor runs now, with the watchdog deadline it inherited
    const inherited = new Map((this.components.watchdog?.inherited() ?? []).map(x => [x.vm, x.deadline]))
    for (const vm of this.init.vms) {
      let running = false
      try { running = await this.components.driver?.isRunning(vm.name) ?? false } catch (err) { this.components.log.warn({ vm: vm.name, error: errorMessage(err) }, 'could not ask the hypervisor whether the VM runs') }
      if (running) this.runningHere.add(vm.name)
      const fenceDeadline = inherited.get(vm.name)
      this.input({ type: 'vmState', vm: vm.name, running, ...(fenceDeadline !== undefined ? { fenceDeadline } : {}) })
    }
    this.input(null)
    this.armMonitor()
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    this.components.clock.clearTimeout(this.timer)
    this.components.clock.clearTimeout(this.monitorTimer)
    this.components.clock.clearTimeout(this.specTimer)
    this.unsubscribeFence?.()
    this.components.libp2p.removeEventListener('peer:connect', this.onConnect)
    await this.specMessenger.stop()
    await this.messenger.stop()
    await this.queue.catch(() => {})
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
      this.requestedPoints.set(vm, point)
    }
    await this.request(vm, { type: 'operatorFailover', vm, ...rest })
  }

  /** Planned failover: run on the VM's owner. */
  async plannedFailover (vm: string, to: string): Promise<void> {
    await this.request(vm, { type: 'plannedFailover', vm, to })
  }

  /** The recovery point an operator asked to fail `vm` over to (consumed by the next finalize). */
  takeRequestedPoint (vm: string): string | undefined {
    const p = this.requestedPoints.get(vm)
    this.requestedPoints.delete(vm)
    return p
  }

  private async request (vm: string, input: OwnershipInput): Promise<void> {
    let refusal: string | undefined
    const run = this.queue.then(async () => {
      if (!this.started || this.machine === undefined) { refusal = 'not-running'; return }
      const out = this.machine.step(this.components.clock.now(), input)
      const r = out.events.find(e => e.type === 'failoverRefused' && e.vm === vm)
      if (r?.type === 'failoverRefused') refusal = r.reason
      await this.apply(out)
    })
    this.queue = run.catch((err) => { this.components.log.error({ error: errorMessage(err) }, 'ownership input failed') })
    await run
    if (refusal !== undefined) {
      this.requestedPoints.delete(vm)
      const owner = this.machine?.status().find(s => s.vm === vm)?.owner
      throw new FailoverRefusedError(vm, refusal, refusal === 'not-owner' && owner !== undefined ? `a planned failover runs on the owner, ${owner}` : '')
    }
  }

  status (): VmOwnershipStatus[] { return this.machine?.status() ?? [] }
  specOf (vm: string): VmSpec | undefined { return this.machine?.spec(vm) }
  isRunningHere (vm: string): boolean { return this.runningHere.has(vm) }

  private note (vm: string, event: string, epoch?: number, detail?: string): void {
    this.timeline.push({ atWallMs: this.components.clock.wallNow(), vm, event, ...(epoch !== undefined ? { epoch } : {}), ...(detail !== undefined ? { detail } : {}) })
    if (this.timeline.length > 200) this.timeline.shift()
  }

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
    this.queue = this.queue.then(async () => {
      if (!this.started || this.machine === undefined) return
      const now = this.components.clock.now()
      const out = input === null ? this.machine.tick(now) : this.machine.step(now, input)
      await this.apply(out)
    }).catch((err) => { this.components.log.error({ error: errorMessage(err) }, 'ownership input failed') })
  }

  private async apply (out: OwnershipOutput): Promise<void> {
    if (out.persist.length > 0) {
      await this.components.db.batch(out.persist.map(r => ({ type: 'put' as const, key: recordKey(r), value: JSON.stringify(r) })), { sync: true } as never)
    }
    for (const { to, msg } of out.send) {
      const peerId = this.init.peerIds[to]
      if (peerId !== undefined) this.messenger.send(peerId, encodeElectionMessage(msg))
    }
    for (const e of out.events) await this.act(e)
    this.rearm()
  }

  private async act (e: OwnershipEvent): Promise<void> {
    const { log, driver, watchdog, host, clock } = this.components
    switch (e.type) {
      case 'watchdog':
        if (e.deadline === null) { this.deadlines.delete(e.vm); await watchdog?.disarm(e.vm) } else {
          this.deadlines.set(e.vm, e.deadline)
          try { await watchdog?.arm(e.vm, e.deadline) } catch (err) { log.error({ vm: e.vm, error: errorMessage(err) }, 'watchdog could not be armed') }
        }
        return
      case 'finalize': {
        const point = this.takeRequestedPoint(e.vm)
        await host.finalize(e.vm, e.generation, point)
        this.note(e.vm, 'replica finalized', undefined, point !== undefined ? `recovery point ${point}` : e.generation === null ? 'latest' : `generation ${e.generation.generation}`)
        return
      }
      case 'start': {
        const deadline = this.deadlines.get(e.vm)
        if (watchdog !== undefined && (deadline === undefined || deadline <= clock.now())) {
          log.warn({ vm: e.vm, epoch: e.epoch }, 'start refused: no live watchdog deadline')
          await this.feed({ type: 'startFailed', vm: e.vm })
          return
        }
        if (driver === undefined) { log.warn({ vm: e.vm }, 'no hypervisor driver configured; cannot start'); await this.feed({ type: 'startFailed', vm: e.vm }); return }
        try {
          const files = await host.filesForStart(e.vm)
          await driver.start(e.vm, files, e.epoch)
          this.runningHere.add(e.vm)
          this.stats.starts++
          this.note(e.vm, 'started here', e.epoch)
          log.info({ vm: e.vm, epoch: e.epoch }, 'VM started')
          await this.feed({ type: 'started', vm: e.vm })
        } catch (err) {
          this.stats.startFailures++
          log.error({ vm: e.vm, epoch: e.epoch, error: errorMessage(err) }, 'VM start failed')
          await this.feed({ type: 'startFailed', vm: e.vm })
        }
        return
      }
      case 'stop':
        try {
          await driver?.turnOff(e.vm)
          this.runningHere.delete(e.vm)
          this.stats.stops++
          this.note(e.vm, `stopped here (${e.reason})`)
          log.warn({ vm: e.vm, reason: e.reason }, 'VM turned off')
        } catch (err) { log.error({ vm: e.vm, error: errorMessage(err) }, 'VM turn-off failed; the watchdog still fences it at its deadline') }
        await this.feed({ type: 'stopped', vm: e.vm })
        return
      case 'owner':
        this.note(e.vm, `owner ${e.owner}`, e.epoch)
        log.info({ vm: e.vm, owner: e.owner, epoch: e.epoch }, 'VM owner')
        host.ownerChanged?.(e.vm, e.owner, e.epoch)
        return
      case 'elected':
        this.note(e.vm, e.forced ? 'elected here (forced)' : 'elected here', e.epoch)
        log.warn({ vm: e.vm, epoch: e.epoch, forced: e.forced }, 'won the election for the VM')
        return
      case 'demoted':
        this.note(e.vm, `demoted; new owner ${e.owner}`, e.epoch)
        host.demoted(e.vm, e.owner, e.epoch)
        return
      case 'shipFinal':
        try {
          const generation = await host.shipFinal(e.vm, e.to)
          await this.feed({ type: 'finalGenerationShipped', vm: e.vm, generation })
        } catch (err) { log.error({ vm: e.vm, to: e.to, error: errorMessage(err) }, 'shipping the final generation failed') }
        return
      case 'failoverRefused':
      case 'failoverAbandoned':
        this.note(e.vm, e.type, undefined, e.reason)
        log.warn({ vm: e.vm, reason: e.reason }, e.type)
    }
  }

  /** An input produced while acting on events: processed right away, still in order. */
  private async feed (input: OwnershipInput): Promise<void> {
    if (this.machine === undefined) return
    await this.apply(this.machine.step(this.components.clock.now(), input))
  }

  private rearm (): void {
    const m = this.machine
    if (m === undefined || !this.started) return
    const clock = this.components.clock
    clock.clearTimeout(this.timer)
    const next = m.nextDeadline()
    if (next === undefined) return
    this.timer = clock.setTimeout(() => { this.timer = undefined; this.input(null) }, Math.max(0, next - clock.now()))
  }

  /** A VM that died on its own (guest crash, killed) is reported stopped so the machine can restart it. */
  private armMonitor (): void {
    const clock = this.components.clock
    this.monitorTimer = clock.setTimeout(() => {
      void (async () => {
        for (const vm of [...this.runningHere]) {
          try {
            if (!(await this.components.driver?.isRunning(vm) ?? true)) {
              this.runningHere.delete(vm)
              this.note(vm, 'stopped on its own')
              this.input({ type: 'stopped', vm })
            }
          } catch {}
        }
        if (this.started) this.armMonitor()
      })()
    }, this.init.monitorMs ?? 2000)
  }
}
