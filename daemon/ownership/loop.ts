/**
 * The ownership event loop: runs the pure OwnershipMachine on real time and acts on its
 * events. The OwnershipService feeds it (election frames, members, replicas, operator
 * requests) and gives it a way to persist and to send; everything here is testable on a
 * ManualClock with fake drivers (test/unit/ownership/loop.test.ts).
 *
 *   timers ─tick─▶ OwnershipMachine ─persist─▶ records (sync)          (1) durable first
 *   inputs ─step─▶        │          ─send───▶ peers                   (2) then send
 *                         └─events─▶ the queue: owner, watchdog arm/disarm   (3) then act, in order
 *                                      └▶ per-VM driver lane: finalize → start, stop → turnOff, shipFinal
 *
 * Two speeds. The queue carries everything the lease depends on — machine steps, durable
 * writes, watchdog arms — and never waits for the hypervisor: a start can take 30 s
 * (Hyper-V through PowerShell, a large libvirt guest) while renewals must go out every
 * renewMs, or the watchdog fences the VM the start is bringing up. Driver calls (finalize,
 * start, turn-off, shipFinal) run on a lane per VM, in the order the machine emitted them,
 * and report back as inputs (started, startFailed, stopped, finalGenerationShipped) through
 * the queue. The order that is the safety argument still holds: the watchdog is armed (on the
 * queue) before the start event is handed to the lane, the replica is finalized before the
 * start on the same lane, and a start begins only while its watchdog deadline is live.
 *
 * A start that outlasts its lease is abandoned: when the machine asks for a stop (its fence
 * deadline passed with no renewal) or the watchdog fences while the start is still running,
 * the start is aborted (its process group killed), the VM is turned off, and only then is
 * `stopped` reported — the start's own outcome is dropped, so the machine never counts on a
 * VM that a late hypervisor brought up after the fence.
 */
import type { Clock, TimerHandle } from '../../common/clock.ts'
import { errorMessage } from '../../common/errors.ts'
import type { Logger } from '../log.ts'
import type { HypervisorDriver } from '../hypervisor/driver.ts'
import type { ElectionMessage } from '../../protocol/election/messages.ts'
import type { OwnershipMachine } from './machine.ts'
import type { OwnershipEvent, OwnershipInput, OwnershipOutput, PersistRecord } from './types.ts'
import type { FencingWatchdog, OwnershipHost } from './ports.ts'

export interface OwnershipLoopComponents {
  clock: Clock
  log: Logger
  machine: OwnershipMachine
  /** Writes the records durably (fsync) before anything of the same step is sent. */
  persist: (records: PersistRecord[]) => Promise<void>
  /** Best-effort delivery of an election message to a node (by name). */
  send: (to: string, msg: ElectionMessage) => void
  driver?: HypervisorDriver
  watchdog?: FencingWatchdog
  host: OwnershipHost
  /**
   * Operator-facing conditions worth an alert (a VM kept off for want of room, a start that
   * stopped waiting for its startAfter VMs). Optional: logged and on the timeline either way.
   */
  alert?: (a: PlacementAlert) => void
}

export interface PlacementAlert { kind: 'no-room' | 'room-found' | 'start-after-timeout', vm: string, detail: string }

export interface OwnershipLoopInit {
  /** How often running VMs are checked with the driver (a crashed VM is reported stopped). @default 2000 */
  monitorMs?: number
  /** Shared with the service: timeline of ownership events (bounded). */
  timeline?: TimelineEntry[]
  /** Shared with the service: counters for status. */
  stats?: LoopStats
}

/**
 * What a timeline entry records, for code to switch on (the `event` text is for people and may
 * change). Append-only: consumers (events journal, alerts) match on it.
 */
export type TimelineType =
  | 'owner' | 'elected' | 'demoted' | 'failoverRefused' | 'failoverAbandoned'
  | 'noRoom' | 'roomFound' | 'startAfterTimeout' | 'finalized' | 'started' | 'stopped' | 'stoppedOnItsOwn'
  | 'fenced' | 'fenceFailed'

/** `owner`: the new owner (type owner, demoted); `forced`: a forced claim (type elected). */
export interface TimelineEntry { atWallMs: number, vm: string, type: TimelineType, event: string, epoch?: number, detail?: string, owner?: string, forced?: boolean }
export interface LoopStats { decodeErrors: number, starts: number, stops: number, startFailures: number }

/** One VM's driver lane: calls run one after another, in the order they were asked for. */
interface Lane {
  tail: Promise<void>
  /** Calls queued or running on the lane. */
  busy: number
  /** The start queued or running, until it settles; `abandoned` once a stop or fence overtook it. */
  start: { ctl: AbortController, abandoned: boolean } | null
  /** A finalize the machine asked for that has not succeeded yet (retried before the next start). */
  finalize: { generation: Parameters<OwnershipHost['finalize']>[1] } | null
  /** Bumped whenever the VM is started or turned off here: a status answer about an older instance is stale. */
  instance: number
}

export class OwnershipLoop {
  private queue: Promise<void> = Promise.resolve()
  /** Inputs are taken from construction (the boot report races the first frames) until stop(). */
  private closed = false
  private started = false
  private timer?: TimerHandle
  private monitorTimer?: TimerHandle
  private unsubscribeFence?: () => void
  private readonly lanes = new Map<string, Lane>()
  /** Final-generation ships in flight, per VM, to abort when the handoff is given up. */
  private readonly ships = new Map<string, AbortController>()
  /** Watchdog deadlines the watchdog process acknowledged (a start needs a live one). */
  private readonly deadlines = new Map<string, number>()
  private readonly runningHere = new Set<string>()
  private readonly requestedPoints = new Map<string, string>()
  readonly timeline: TimelineEntry[]
  readonly stats: LoopStats

  constructor (private readonly c: OwnershipLoopComponents, private readonly init: OwnershipLoopInit = {}) {
    this.timeline = init.timeline ?? []
    this.stats = init.stats ?? { decodeErrors: 0, starts: 0, stops: 0, startFailures: 0 }
  }

  get machine (): OwnershipMachine { return this.c.machine }

  /**
   * Subscribes to fences, reports what the hypervisor runs now (with the deadline the
   * watchdog inherited from a previous daemon), then runs the machine.
   */
  async start (vms: string[]): Promise<void> {
    if (this.started) return
    this.started = true
    this.unsubscribeFence = this.c.watchdog?.onFence((r) => { this.fenced(r.vm, r.ok) })
    const inherited = new Map((this.c.watchdog?.inherited() ?? []).map(x => [x.vm, x.deadline]))
    for (const vm of vms) {
      let running = false
      try { running = await this.c.driver?.isRunning(vm) ?? false } catch (err) { this.c.log.warn({ vm, error: errorMessage(err) }, 'could not ask the hypervisor whether the VM runs') }
      if (running) this.runningHere.add(vm)
      const fenceDeadline = inherited.get(vm)
      this.input({ type: 'vmState', vm, running, ...(fenceDeadline !== undefined ? { fenceDeadline } : {}) })
    }
    this.input(null)
    this.armMonitor()
  }

  /** Stops timers; aborts starts still running (the watchdog keeps their deadlines); waits for the lanes. */
  async stop (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.c.clock.clearTimeout(this.timer)
    this.c.clock.clearTimeout(this.monitorTimer)
    this.unsubscribeFence?.()
    for (const lane of this.lanes.values()) lane.start?.ctl.abort()
    await this.queue.catch(() => {})
    await Promise.all([...this.lanes.values()].map(async l => { await l.tail.catch(() => {}) }))
  }

  isRunningHere (vm: string): boolean { return this.runningHere.has(vm) }

  /** The recovery point an operator asked to fail `vm` over to (consumed by the next finalize). */
  requestPoint (vm: string, point: string): void { this.requestedPoints.set(vm, point) }
  dropRequestedPoint (vm: string): void { this.requestedPoints.delete(vm) }

  /** Feeds one input (or only a tick when null) through the machine, in order with everything else. */
  input (input: OwnershipInput | null): void {
    this.queue = this.queue.then(async () => {
      if (this.closed) return
      const now = this.c.clock.now()
      await this.apply(input === null ? this.c.machine.tick(now) : this.c.machine.step(now, input))
    }).catch((err) => { this.c.log.error({ error: errorMessage(err) }, 'ownership input failed') })
  }

  /** Runs one operator input through the machine; resolves with the refusal it met at once, if any. */
  async request (vm: string, input: OwnershipInput): Promise<string | undefined> {
    let refusal: string | undefined
    const run = this.queue.then(async () => {
      if (this.closed) { refusal = 'not-running'; return }
      const out = this.c.machine.step(this.c.clock.now(), input)
      const r = out.events.find(e => e.type === 'failoverRefused' && e.vm === vm)
      if (r?.type === 'failoverRefused') refusal = r.reason
      await this.apply(out)
    })
    this.queue = run.catch((err) => { this.c.log.error({ error: errorMessage(err) }, 'ownership input failed') })
    await run
    return refusal
  }

  note (vm: string, type: TimelineType, event: string, epoch?: number, detail?: string, facts: { owner?: string, forced?: boolean } = {}): void {
    this.timeline.push({ atWallMs: this.c.clock.wallNow(), vm, type, event, ...(epoch !== undefined ? { epoch } : {}), ...(detail !== undefined ? { detail } : {}), ...facts })
    if (this.timeline.length > 200) this.timeline.shift()
  }

  private async apply (out: OwnershipOutput): Promise<void> {
    if (out.persist.length > 0) await this.c.persist(out.persist)
    for (const { to, msg } of out.send) this.c.send(to, msg)
    for (const e of out.events) await this.act(e)
    this.rearm()
  }

  /** Acts on one event. Only the watchdog is awaited here; driver calls go to the VM's lane. */
  private async act (e: OwnershipEvent): Promise<void> {
    const { log, watchdog, host } = this.c
    switch (e.type) {
      case 'watchdog':
        if (e.deadline === null) {
          this.deadlines.delete(e.vm)
          try { await watchdog?.disarm(e.vm) } catch (err) { log.warn({ vm: e.vm, error: errorMessage(err) }, 'watchdog could not be disarmed') }
          return
        }
        try {
          await watchdog?.arm(e.vm, e.deadline)
          this.deadlines.set(e.vm, e.deadline)
        } catch (err) {
          // The client still enforces the deadline itself; but no start may rely on it.
          this.deadlines.delete(e.vm)
          log.error({ vm: e.vm, error: errorMessage(err) }, 'watchdog could not be armed')
        }
        return
      case 'finalize': {
        const lane = this.lane(e.vm)
        lane.finalize = { generation: e.generation }
        this.onLane(e.vm, async () => { await this.finalizePending(e.vm, lane).catch(() => {}) })
        return
      }
      case 'start': this.startOnLane(e.vm, e.epoch); return
      case 'stop': this.stopOnLane(e.vm, e.reason); return
      case 'shipFinal': {
        const abort = new AbortController()
        this.ships.set(e.vm, abort)
        this.onLane(e.vm, async () => {
          try {
            const generation = await host.shipFinal(e.vm, e.to, abort.signal)
            this.input({ type: 'finalGenerationShipped', vm: e.vm, generation })
          } catch (err) {
            log.error({ vm: e.vm, to: e.to, error: errorMessage(err) }, 'shipping the final generation failed')
            // without this the machine would wait for the ship for ever, the VM off
            if (!abort.signal.aborted) this.input({ type: 'finalShipFailed', vm: e.vm })
          } finally {
            if (this.ships.get(e.vm) === abort) this.ships.delete(e.vm)
          }
        })
        return
      }
      case 'owner':
        // a finalize that failed belongs to the claim that asked for it, not to a later one
        if (e.owner !== this.c.machine.self) { const l = this.lanes.get(e.vm); if (l !== undefined) l.finalize = null }
        this.note(e.vm, 'owner', `owner ${e.owner}`, e.epoch, undefined, { owner: e.owner })
        log.info({ vm: e.vm, owner: e.owner, epoch: e.epoch }, 'VM owner')
        host.ownerChanged?.(e.vm, e.owner, e.epoch)
        return
      case 'elected':
        this.note(e.vm, 'elected', e.forced ? 'elected here (forced)' : 'elected here', e.epoch, undefined, { forced: e.forced })
        log.warn({ vm: e.vm, epoch: e.epoch, forced: e.forced }, 'won the election for the VM')
        return
      case 'demoted':
        this.note(e.vm, 'demoted', `demoted; new owner ${e.owner}`, e.epoch, undefined, { owner: e.owner })
        host.demoted(e.vm, e.owner, e.epoch)
        // drivers that register VMs (hyperv) unregister it, files kept, so a later start here
        // re-imports; on the VM's lane, behind any turn-off the machine asked for first
        this.onLane(e.vm, async () => {
          try { await this.c.driver?.release?.(e.vm) } catch (err) { log.error({ vm: e.vm, error: errorMessage(err) }, 'could not release the VM from the hypervisor') }
        })
        return
      case 'failoverRefused':
      case 'failoverAbandoned':
        // a planned failover given up: stop shipping (the VM is about to run again)
        if (e.type === 'failoverAbandoned') this.ships.get(e.vm)?.abort()
        this.note(e.vm, e.type, e.type, undefined, e.reason)
        log.warn({ vm: e.vm, reason: e.reason }, e.type)
        return
      case 'noRoom': {
        const detail = `needs ${e.need.memoryMiB} MiB / ${e.need.vcpus} vCPUs, ${e.free.memoryMiB} MiB / ${e.free.vcpus} vCPUs free`
        this.note(e.vm, 'noRoom', 'no room', undefined, detail)
        log.warn({ vm: e.vm, need: e.need, free: e.free }, 'VM kept off here: not enough room; it starts when room appears')
        this.c.alert?.({ kind: 'no-room', vm: e.vm, detail })
        return
      }
      case 'roomFound':
        this.note(e.vm, 'roomFound', 'room found')
        log.info({ vm: e.vm }, 'room found for the VM')
        this.c.alert?.({ kind: 'room-found', vm: e.vm, detail: '' })
        return
      case 'startAfterTimeout': {
        const detail = `starting without ${e.waitingFor.join(', ')}`
        this.note(e.vm, 'startAfterTimeout', 'startAfter timed out', undefined, detail)
        log.warn({ vm: e.vm, waitingFor: e.waitingFor }, 'startAfter VMs still not running after startAfterTimeoutMs; starting anyway')
        this.c.alert?.({ kind: 'start-after-timeout', vm: e.vm, detail })
      }
    }
  }

  // ---------------------------------------------------------------- driver lanes

  private lane (vm: string): Lane {
    let l = this.lanes.get(vm)
    if (l === undefined) { l = { tail: Promise.resolve(), busy: 0, start: null, finalize: null, instance: 0 }; this.lanes.set(vm, l) }
    return l
  }

  private onLane (vm: string, fn: () => Promise<void>): void {
    const lane = this.lane(vm)
    lane.busy++
    lane.tail = lane.tail.then(fn).catch((err) => { this.c.log.error({ vm, error: errorMessage(err) }, 'hypervisor call failed') }).finally(() => { lane.busy-- })
  }

  private async finalizePending (vm: string, lane: Lane): Promise<void> {
    const f = lane.finalize
    if (f === null) return
    const point = this.requestedPoints.get(vm)
    try {
      await this.c.host.finalize(vm, f.generation, point)
    } catch (err) {
      this.c.log.error({ vm, error: errorMessage(err) }, 'replica finalize failed; retried before the next start')
      throw err
    }
    if (lane.finalize === f) lane.finalize = null
    if (point !== undefined && this.requestedPoints.get(vm) === point) this.requestedPoints.delete(vm)
    this.note(vm, 'finalized', 'replica finalized', undefined, point !== undefined ? `recovery point ${point}` : f.generation === null ? 'latest' : `generation ${f.generation.generation}`)
  }

  private startOnLane (vm: string, epoch: number): void {
    const lane = this.lane(vm)
    const mine = { ctl: new AbortController(), abandoned: false }
    lane.start = mine
    this.onLane(vm, async () => {
      const { log, driver, clock } = this.c
      // started, startFailed — or nothing when a stop or a fence took over (it reports `stopped`)
      let outcome: 'started' | 'startFailed' = 'startFailed'
      try {
        if (mine.abandoned) return
        if (lane.finalize !== null) await this.finalizePending(vm, lane)
        const deadline = this.deadlines.get(vm)
        if (this.c.watchdog !== undefined && (deadline === undefined || deadline <= clock.now())) {
          log.warn({ vm, epoch }, 'start refused: no live watchdog deadline')
          return
        }
        if (driver === undefined) { log.warn({ vm }, 'no hypervisor driver configured; cannot start'); return }
        if (mine.abandoned) return
        const files = await this.c.host.filesForStart(vm)
        const t0 = clock.now()
        await driver.start(vm, files, epoch, { signal: mine.ctl.signal })
        lane.instance++
        this.runningHere.add(vm)
        if (mine.abandoned) return // a stop is queued behind us and turns it off
        this.stats.starts++
        this.note(vm, 'started', 'started here', epoch)
        log.info({ vm, epoch, tookMs: Math.round(clock.now() - t0) }, 'VM started')
        outcome = 'started'
      } catch (err) {
        if (mine.abandoned) {
          log.warn({ vm, epoch, error: errorMessage(err) }, 'start abandoned: its lease ran out before the hypervisor finished')
          return
        }
        this.stats.startFailures++
        log.error({ vm, epoch, error: errorMessage(err) }, 'VM start failed')
      } finally {
        if (lane.start === mine) lane.start = null
        if (!mine.abandoned) this.input({ type: outcome, vm })
      }
    })
  }

  /** Abandons a start still queued or running on the VM's lane (it reports nothing). */
  private abandonStart (vm: string): boolean {
    const s = this.lanes.get(vm)?.start
    if (s == null || s.abandoned) return false
    s.abandoned = true
    s.ctl.abort()
    return true
  }

  private stopOnLane (vm: string, reason: string, report = true): void {
    if (this.abandonStart(vm)) this.c.log.warn({ vm, reason }, 'abandoning the start still in progress; the VM is turned off once it settles')
    const lane = this.lane(vm)
    this.onLane(vm, async () => {
      const { log, driver } = this.c
      try {
        await driver?.turnOff(vm)
        lane.instance++
        this.runningHere.delete(vm)
        this.stats.stops++
        this.note(vm, 'stopped', `stopped here (${reason})`)
        log.warn({ vm, reason }, 'VM turned off')
      } catch (err) { log.error({ vm, error: errorMessage(err) }, 'VM turn-off failed; the watchdog still fences it at its deadline') }
      if (report) this.input({ type: 'stopped', vm })
    })
  }

  /**
   * The watchdog turned the VM off. A start still running could bring it back up after the
   * fence: abandon it, turn the VM off once more after it settles, then report `stopped`.
   */
  private fenced (vm: string, ok: boolean): void {
    this.note(vm, ok ? 'fenced' : 'fenceFailed', ok ? 'fenced by watchdog' : 'watchdog fence failed')
    if (!ok) return
    if (this.lanes.get(vm)?.start != null) { this.stopOnLane(vm, 'fenced during start'); return }
    this.lane(vm).instance++
    this.runningHere.delete(vm)
    this.input({ type: 'stopped', vm })
  }

  // ---------------------------------------------------------------- timers

  private rearm (): void {
    if (this.closed) return
    const clock = this.c.clock
    clock.clearTimeout(this.timer)
    const next = this.c.machine.nextDeadline()
    if (next === undefined) return
    this.timer = clock.setTimeout(() => { this.timer = undefined; this.input(null) }, Math.max(0, next - clock.now()))
  }

  /**
   * A VM that died on its own (guest crash, killed) is reported stopped so the machine can
   * restart it. VMs with a driver call in progress are left to that call; an answer about an
   * instance that has since been started or turned off is dropped.
   */
  private armMonitor (): void {
    const clock = this.c.clock
    this.monitorTimer = clock.setTimeout(() => {
      void (async () => {
        for (const vm of [...this.runningHere]) {
          const lane = this.lane(vm)
          if (lane.busy > 0) continue
          const instance = lane.instance
          try {
            const running = await this.c.driver?.isRunning(vm) ?? true
            if (!running && lane.busy === 0 && lane.instance === instance && this.runningHere.has(vm)) {
              this.runningHere.delete(vm)
              lane.instance++
              this.note(vm, 'stoppedOnItsOwn', 'stopped on its own')
              this.input({ type: 'stopped', vm })
            }
          } catch {}
        }
        if (!this.closed) this.armMonitor()
      })()
    }, this.init.monitorMs ?? 2000)
  }
}
