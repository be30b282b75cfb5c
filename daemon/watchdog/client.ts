/**
 * The daemon's side of the watchdog: `new Watchdog({ clock, fenceAction }, init)`, start(),
 * arm(vm, deadline) after each lease renewal, disarm(vm) when a VM stops being ours, stop().
 * Deadlines are on the daemon's Clock; they are translated into the watchdog's monotonic clock
 * with the conservative offset of clock-sync.ts, so the watchdog fences at or before the
 * deadline the lease arithmetic assumed — never after it.
 *
 * arm() resolves once the watchdog process acknowledged the deadline; only then may a VM be
 * started on it. The fence action (driver.fenceAction(vm)) travels with each arm.
 *
 * Crash and restart ("immediate fencing"): if the watchdog process dies or stops answering
 * (a ping or an arm not acknowledged within ackTimeoutMs: it is killed), the client
 *   1. enforces every armed deadline itself, on the daemon's event loop, and fences at once any
 *      VM whose deadline has already passed;
 *   2. respawns the watchdog with backoff and re-arms every VM with its ORIGINAL deadline (a
 *      deadline that has passed by then is fenced immediately by the new process);
 *   3. rejects arm() with WatchdogUnavailableError until the new process is up — the deadline
 *      is still recorded and enforced locally, but the caller must not start a VM on it.
 * stop() while the watchdog is down fences every armed VM immediately (nobody would enforce
 * those deadlines afterwards). stop() while it is up says bye: the process keeps every armed
 * deadline, fences each when it passes, then exits — a daemon exit never cuts a lease short
 * and never leaves a VM running past its deadline.
 *
 * Daemon restart (with `stateFile`): the new watchdog takes over the deadlines the previous
 * one still holds (handover.ts) and `inherited()` lists them on this daemon's clock after
 * start() — VMs still running from before the restart, fenced at those deadlines unless
 * re-armed. After a restart of the watchdog by this client, adopted deadlines this client no
 * longer holds are disarmed.
 */
import type { Clock, TimerHandle } from '../../common/clock.ts'
import { errorMessage, VmeshError } from '../../common/errors.ts'
import type { Logger } from '../log.ts'
import { silentLogger } from '../log.ts'
import { executeFence, type FenceAction, type FenceOutcome } from '../hypervisor/fence.ts'
import { createRunner } from '../hypervisor/run.ts'
import { spawnWatchdogProcess, type SpawnWatchdog, type WatchdogChannel } from './channel.ts'
import { ClockSync } from './clock-sync.ts'
import { decodeReport, WATCHDOG_PROTOCOL_VERSION, type InheritedArm, type WatchdogReport, type WatchdogRequest } from './messages.ts'

/** The watchdog process is not running (not started, restarting, or stopped). */
export class WatchdogUnavailableError extends VmeshError {
  constructor (detail: string) {
    super('ERR_WATCHDOG_UNAVAILABLE', `watchdog unavailable: ${detail}`)
  }
}

/** The watchdog process did not come up (no hello, wrong version). */
export class WatchdogStartError extends VmeshError {
  constructor (detail: string, options?: { cause?: unknown }) {
    super('ERR_WATCHDOG_START', `watchdog did not start: ${detail}`, options)
  }
}

/** arm() got a deadline that is not a finite number. */
export class WatchdogDeadlineError extends VmeshError {
  constructor (readonly deadline: number) {
    super('ERR_WATCHDOG_DEADLINE', `not a deadline: ${deadline}`)
  }
}

export interface WatchdogComponents {
  clock: Clock
  /** How to turn `vm` off without the daemon: the driver's fenceAction. */
  fenceAction: (vm: string) => Promise<FenceAction>
  log?: Logger
  /** @default spawns daemon/watchdog/main.ts */
  spawn?: SpawnWatchdog
  /** Fences in this process while the watchdog is down. @default executeFence on the real runner */
  fenceLocally?: (action: FenceAction) => Promise<FenceOutcome>
}

export interface WatchdogInit {
  /** Wait between attempts of a failed fence. @default 500 */
  retryMs?: number
  /** Attempts per deadline. @default 5 */
  maxAttempts?: number
  /** How often the watchdog checks that its parent still exists. @default 200 */
  parentPollMs?: number
  /** Time for the process to say hello. @default 15000 */
  startTimeoutMs?: number
  /** Liveness pings (and clock samples). @default 1000 */
  pingIntervalMs?: number
  /** A ping or arm unanswered this long means the watchdog is hung: it is killed and restarted. @default 2000 */
  ackTimeoutMs?: number
  /** Pings exchanged at start to tighten the clock offset. @default 3 */
  syncPings?: number
  /** Respawn backoff. @default 100 */
  restartMinMs?: number
  /** @default 5000 */
  restartMaxMs?: number
  /** With nothing armed, how long stop() waits for the process to exit. @default 2000 */
  stopWaitMs?: number
  /** The watchdog appends its fences and exits here (NDJSON). */
  logFile?: string
  /** Where the watchdog keeps its deadlines for a successor (daemon restart), e.g. <dataDir>/watchdog-state.json. */
  stateFile?: string
}

export interface FenceReport {
  vm: string
  /** When it happened, on the daemon's clock. */
  at: number
  ok: boolean
  /** Who fenced: the watchdog process, or the daemon itself while the watchdog was down. */
  by: 'watchdog' | 'daemon'
  outcome?: FenceOutcome
  attempt: number
  /** No more attempts will be made for this deadline. */
  final: boolean
  /** How long after the deadline the VM was off (watchdog fences). */
  lateMs?: number
  error?: { code: string, message: string }
}

export type WatchdogState = 'stopped' | 'starting' | 'up' | 'down' | 'stopping'

interface Armed {
  deadline: number
  action: FenceAction
  /** Seq of the arm last sent to the current process (undefined: not sent to it). */
  seq?: number
  acked: boolean
  localTimer?: TimerHandle
  /** The daemon fences this deadline itself too (the watchdog was slow past it). */
  fencingHere?: boolean
}

interface Waiter { resolve: (r: WatchdogReport) => void, reject: (e: Error) => void, timer: TimerHandle }

export class Watchdog {
  private readonly clock: Clock
  private readonly log: Logger
  private readonly spawnFn: SpawnWatchdog
  private readonly fenceLocally: (a: FenceAction) => Promise<FenceOutcome>
  private readonly o: Required<Omit<WatchdogInit, 'logFile' | 'stateFile'>> & { logFile?: string, stateFile?: string }
  private inheritedAtStart: Array<{ vm: string, deadline: number }> = []
  private state: WatchdogState = 'stopped'
  private channel?: WatchdogChannel
  private generation = 0
  private readonly sync = new ClockSync()
  private seq = 0
  private pingId = 0
  private readonly armed = new Map<string, Armed>()
  private readonly waiters = new Map<string, Waiter>()
  private pingTimer?: TimerHandle
  private restartTimer?: TimerHandle
  private backoff: number
  private restarts = 0
  private readonly listeners = new Set<(r: FenceReport) => void>()

  constructor (private readonly components: WatchdogComponents, init: WatchdogInit = {}) {
    this.clock = components.clock
    this.log = components.log ?? silentLogger()
    this.spawnFn = components.spawn ?? spawnWatchdogProcess
    const run = createRunner(components.clock)
    this.fenceLocally = components.fenceLocally ?? (async (a) => await executeFence(a, { run, clock: components.clock }))
    this.o = {
      retryMs: init.retryMs ?? 500,
      maxAttempts: init.maxAttempts ?? 5,
      parentPollMs: init.parentPollMs ?? 200,
      startTimeoutMs: init.startTimeoutMs ?? 15_000,
      pingIntervalMs: init.pingIntervalMs ?? 1000,
      ackTimeoutMs: init.ackTimeoutMs ?? 2000,
      syncPings: init.syncPings ?? 3,
      restartMinMs: init.restartMinMs ?? 100,
      restartMaxMs: init.restartMaxMs ?? 5000,
      stopWaitMs: init.stopWaitMs ?? 2000,
      ...(init.logFile !== undefined ? { logFile: init.logFile } : {}),
      ...(init.stateFile !== undefined ? { stateFile: init.stateFile } : {})
    }
    this.backoff = this.o.restartMinMs
  }

  /** Fence results (from the watchdog or, while it is down, from the daemon). */
  onFence (fn: (r: FenceReport) => void): () => void { this.listeners.add(fn); return () => this.listeners.delete(fn) }

  status (): { state: WatchdogState, pid?: number, restarts: number, offsetMs?: number, uncertaintyMs?: number, armed: Array<{ vm: string, deadline: number, acked: boolean }> } {
    return {
      state: this.state,
      ...(this.channel?.pid !== undefined ? { pid: this.channel.pid } : {}),
      restarts: this.restarts,
      ...(this.sync.synced ? { offsetMs: this.sync.offset, uncertaintyMs: this.sync.uncertainty } : {}),
      armed: [...this.armed].map(([vm, a]) => ({ vm, deadline: a.deadline, acked: a.acked }))
    }
  }

  /**
   * Deadlines adopted from the previous watchdog at start() (daemon clock): VMs that were armed
   * when the previous daemon went away. They stay armed here until re-armed or disarmed.
   */
  inherited (): Array<{ vm: string, deadline: number }> { return this.inheritedAtStart.map(x => ({ ...x })) }

  async start (): Promise<void> {
    if (this.state !== 'stopped') return
    await this.launch(false)
    this.schedulePing()
  }

  /**
   * Turn `vm` off by itself at `deadline` (this daemon's Clock.now() milliseconds) unless
   * re-armed or disarmed first. Resolves when the watchdog process holds the deadline.
   */
  async arm (vm: string, deadline: number): Promise<void> {
    if (this.state === 'stopped' || this.state === 'stopping') throw new WatchdogUnavailableError('not started')
    if (!Number.isFinite(deadline)) throw new WatchdogDeadlineError(deadline)
    const action = await this.components.fenceAction(vm)
    const prev = this.armed.get(vm)
    if (prev?.localTimer !== undefined) this.clock.clearTimeout(prev.localTimer)
    const entry: Armed = { deadline, action, acked: false }
    this.armed.set(vm, entry)
    if (this.state !== 'up') {
      this.enforceLocally(vm, entry)
      throw new WatchdogUnavailableError(`${this.state}; the deadline is enforced by the daemon until the watchdog is back`)
    }
    await this.sendArm(vm, entry)
  }

  async disarm (vm: string): Promise<void> {
    const entry = this.armed.get(vm)
    if (entry === undefined) return
    this.armed.delete(vm)
    if (entry.localTimer !== undefined) this.clock.clearTimeout(entry.localTimer)
    if (this.state !== 'up') return
    const seq = ++this.seq
    await this.request({ type: 'disarm', seq, vm }, `seq:${seq}`)
  }

  async stop (): Promise<void> {
    if (this.state === 'stopped' || this.state === 'stopping') return
    const wasUp = this.state === 'up'
    this.state = 'stopping'
    this.clock.clearTimeout(this.pingTimer)
    this.clock.clearTimeout(this.restartTimer)
    for (const a of this.armed.values()) this.clock.clearTimeout(a.localTimer)
    const ch = this.channel
    if (!wasUp || ch === undefined) {
      // nobody will hold these deadlines after us: fence now
      const now = [...this.armed]
      this.armed.clear()
      ch?.kill()
      await Promise.all(now.map(async ([vm, a]) => { await this.fenceHere(vm, a, 'stop while the watchdog is down') }))
    } else {
      ch.send({ type: 'bye' })
      if (this.armed.size === 0) {
        const exited = await new Promise<boolean>(resolve => {
          const t = this.clock.setTimeout(() => { resolve(false) }, this.o.stopWaitMs)
          ch.onExit(() => { this.clock.clearTimeout(t); resolve(true) })
        })
        if (!exited) ch.kill()
      } else {
        this.log.info({ armed: [...this.armed.keys()] }, 'watchdog keeps the armed deadlines after the daemon stops')
      }
      ch.release()
      this.armed.clear()
    }
    this.failWaiters('stopping')
    this.channel = undefined
    this.generation++
    this.state = 'stopped'
  }

  // ---- process lifecycle -------------------------------------------------------------

  private async launch (restart: boolean): Promise<void> {
    this.state = 'starting'
    const gen = ++this.generation
    this.sync.reset()
    const ch = this.spawnFn({
      retryMs: this.o.retryMs,
      maxAttempts: this.o.maxAttempts,
      parentPollMs: this.o.parentPollMs,
      ...(this.o.logFile !== undefined ? { logFile: this.o.logFile } : {}),
      ...(this.o.stateFile !== undefined ? { stateFile: this.o.stateFile } : {})
    })
    this.channel = ch
    ch.onMessage(m => { if (gen === this.generation) this.onMessage(m) })
    ch.onExit((code, signal) => { if (gen === this.generation) this.onExit(code, signal) })
    ch.onStderr(line => { this.log.warn({ pid: ch.pid, line }, 'watchdog stderr') })
    const t0 = this.clock.now()
    let inherited: InheritedArm[]
    try {
      const hello = await this.wait('hello', this.o.startTimeoutMs)
      if (hello.type !== 'hello' || hello.version !== WATCHDOG_PROTOCOL_VERSION) throw new WatchdogStartError(`protocol version ${hello.type === 'hello' ? hello.version : '?'}, expected ${WATCHDOG_PROTOCOL_VERSION}`)
      inherited = hello.inherited
      this.sync.add(t0, hello.monoMs, this.clock.now())
      for (let i = 0; i < this.o.syncPings; i++) await this.ping()
      if (this.state !== 'starting' || gen !== this.generation) throw new WatchdogUnavailableError('stopped while starting')
    } catch (err) {
      if (gen === this.generation) { this.generation++; this.channel = undefined; ch.kill(); ch.release() }
      this.failWaiters('start failed')
      if (this.state === 'starting') this.state = restart ? 'down' : 'stopped'
      throw err instanceof WatchdogStartError ? err : new WatchdogStartError(errorMessage(err), { cause: err })
    }
    this.state = 'up'
    this.backoff = this.o.restartMinMs
    this.log.info({ pid: ch.pid, offsetMs: this.sync.offset, uncertaintyMs: this.sync.uncertainty, inherited: inherited.length }, 'watchdog up')
    for (const a of inherited) this.seq = Math.max(this.seq, a.seq)
    if (!restart) {
      // a new daemon: what the previous one left armed stays armed, under this client
      this.inheritedAtStart = inherited.map(a => ({ vm: a.vm, deadline: this.sync.toLocal(a.deadlineMonoMs) }))
      for (const a of inherited) {
        if (!this.armed.has(a.vm)) this.armed.set(a.vm, { deadline: this.sync.toLocal(a.deadlineMonoMs), action: a.action, seq: a.seq, acked: true })
      }
    } else {
      // our own restart: we know better than the file what is armed
      await Promise.allSettled(inherited.filter(a => !this.armed.has(a.vm)).map(async a => {
        const seq = ++this.seq
        await this.request({ type: 'disarm', seq, vm: a.vm }, `seq:${seq}`)
      }))
    }
    // re-arm everything with its original deadline (after a restart)
    await Promise.allSettled([...this.armed].map(async ([vm, a]) => { await this.sendArm(vm, a) }))
  }

  private onExit (code: number | null, signal: string | null): void {
    this.channel = undefined
    this.generation++
    this.failWaiters('watchdog exited')
    if (this.state !== 'up') return // starting: launch() fails; stopping: expected
    this.state = 'down'
    this.restarts++
    this.log.error({ code, signal, armed: [...this.armed.keys()] }, 'watchdog process died; enforcing its deadlines in the daemon and restarting it')
    for (const [vm, a] of this.armed) { a.acked = false; a.seq = undefined; this.enforceLocally(vm, a) }
    this.scheduleRestart()
  }

  private scheduleRestart (): void {
    const delay = this.backoff
    this.backoff = Math.min(this.o.restartMaxMs, this.backoff * 2)
    this.restartTimer = this.clock.setTimeout(() => {
      if (this.state !== 'down') return
      this.launch(true).then(() => { this.schedulePing() }, (err: unknown) => {
        if (this.state !== 'down') return
        this.log.error({ err: errorMessage(err) }, 'watchdog restart failed')
        this.scheduleRestart()
      })
    }, delay)
  }

  private schedulePing (): void {
    this.clock.clearTimeout(this.pingTimer)
    this.pingTimer = this.clock.setTimeout(() => {
      if (this.state !== 'up') return
      // a ping that went unanswered killed the process (onExit restarts it and pings again),
      // unless a fence was due: then it was kept, and is pinged again
      this.ping().then(() => { this.schedulePing() }, () => { if (this.state === 'up') this.schedulePing() })
    }, this.o.pingIntervalMs)
  }

  private async ping (): Promise<void> {
    const id = ++this.pingId
    const t0 = this.clock.now()
    const r = await this.request({ type: 'ping', id }, `ping:${id}`)
    if (r.type === 'pong' && !this.sync.add(t0, r.monoMs, this.clock.now())) this.log.warn('watchdog clock disagrees with the daemon clock; offset re-estimated')
  }

  // ---- arming --------------------------------------------------------------------------

  private async sendArm (vm: string, entry: Armed): Promise<void> {
    const seq = ++this.seq
    entry.seq = seq
    await this.request({ type: 'arm', seq, vm, deadlineMonoMs: this.sync.toWatchdog(entry.deadline), action: entry.action }, `seq:${seq}`)
    if (this.armed.get(vm) === entry && entry.seq === seq) {
      entry.acked = true
      if (entry.localTimer !== undefined) { this.clock.clearTimeout(entry.localTimer); entry.localTimer = undefined }
    }
  }

  private enforceLocally (vm: string, entry: Armed): void {
    if (entry.localTimer !== undefined) this.clock.clearTimeout(entry.localTimer)
    entry.localTimer = this.clock.setTimeout(() => {
      entry.localTimer = undefined
      if (this.armed.get(vm) !== entry) return
      this.armed.delete(vm)
      void this.fenceHere(vm, entry, 'deadline passed while the watchdog was down')
    }, Math.max(0, entry.deadline - this.clock.now()))
  }

  private async fenceHere (vm: string, entry: Armed, why: string): Promise<void> {
    this.log.warn({ vm, why }, 'fencing from the daemon')
    for (let attempt = 1; attempt <= this.o.maxAttempts; attempt++) {
      try {
        const outcome = await this.fenceLocally(entry.action)
        this.emit({ vm, at: this.clock.now(), ok: true, by: 'daemon', outcome, attempt, final: true, lateMs: Math.max(0, this.clock.now() - entry.deadline) })
        return
      } catch (err) {
        const final = attempt === this.o.maxAttempts
        this.emit({ vm, at: this.clock.now(), ok: false, by: 'daemon', attempt, final, error: { code: err instanceof VmeshError ? err.code : 'ERR_FENCE', message: errorMessage(err) } })
        if (!final) await this.clock.sleep(this.o.retryMs)
      }
    }
  }

  // ---- messages ------------------------------------------------------------------------

  private request (msg: WatchdogRequest, key: string): Promise<WatchdogReport> {
    const ch = this.channel
    if (ch === undefined) return Promise.reject(new WatchdogUnavailableError('no process'))
    const p = this.wait(key, this.o.ackTimeoutMs, () => {
      const due = [...this.armed].filter(([, e]) => e.deadline <= this.clock.now())
      if (due.length > 0) {
        // past a deadline the watchdog is (or should be) fencing, and a slow answer then is most
        // likely a busy host. Killing it would take its fence down with it (on Windows the
        // fence's cmd.exe lives in the watchdog's job object) and only delay the fence: keep it,
        // and fence from the daemon as well — turning a VM off twice is harmless
        this.log.error({ request: msg.type, vms: due.map(([vm]) => vm) }, 'watchdog did not answer in time past a fence deadline; not killed, fencing from the daemon too')
        for (const [vm, e] of due) {
          if (e.fencingHere === true) continue
          e.fencingHere = true
          void this.fenceHere(vm, e, 'watchdog slow to answer past the deadline')
        }
        return
      }
      this.log.error({ request: msg.type }, 'watchdog did not answer in time; killing it')
      ch.kill()
    })
    ch.send(msg)
    return p
  }

  private wait (key: string, timeoutMs: number, onTimeout?: () => void): Promise<WatchdogReport> {
    return new Promise((resolve, reject) => {
      const timer = this.clock.setTimeout(() => {
        this.waiters.delete(key)
        reject(new WatchdogUnavailableError(`no answer to ${key} within ${timeoutMs} ms`))
        onTimeout?.()
      }, timeoutMs)
      this.waiters.set(key, { resolve, reject, timer })
    })
  }

  private settle (key: string, r: WatchdogReport): void {
    const w = this.waiters.get(key)
    if (w === undefined) return
    this.waiters.delete(key)
    this.clock.clearTimeout(w.timer)
    w.resolve(r)
  }

  private failWaiters (why: string): void {
    for (const [key, w] of this.waiters) {
      this.clock.clearTimeout(w.timer)
      w.reject(new WatchdogUnavailableError(`${why} (waiting for ${key})`))
    }
    this.waiters.clear()
  }

  private onMessage (m: unknown): void {
    let r: WatchdogReport
    try { r = decodeReport(m) } catch (err) { this.log.warn({ err: errorMessage(err) }, 'bad report from watchdog'); return }
    switch (r.type) {
      case 'hello': this.settle('hello', r); return
      case 'pong': this.settle(`ping:${r.id}`, r); return
      case 'armed': case 'disarmed': this.settle(`seq:${r.seq}`, r); return
      case 'error': this.log.error({ code: r.code, message: r.message }, 'watchdog refused a request'); return
      case 'fenced': case 'fence-failed': {
        const entry = this.armed.get(r.vm)
        const final = r.type === 'fenced' || r.final
        if (final && entry?.seq === r.seq) {
          this.armed.delete(r.vm)
          if (entry.localTimer !== undefined) this.clock.clearTimeout(entry.localTimer)
        }
        const base = { vm: r.vm, at: this.sync.toLocal(r.monoMs), by: 'watchdog' as const, attempt: r.attempt, final }
        if (r.type === 'fenced') this.emit({ ...base, ok: true, outcome: r.outcome, lateMs: r.lateMs })
        else this.emit({ ...base, ok: false, error: { code: r.code, message: r.message } })
      }
    }
  }

  private emit (r: FenceReport): void {
    if (r.ok) this.log.warn({ vm: r.vm, by: r.by, outcome: r.outcome, lateMs: r.lateMs }, 'VM fenced')
    else this.log.error({ vm: r.vm, by: r.by, attempt: r.attempt, final: r.final, error: r.error }, 'fence failed')
    for (const fn of this.listeners) {
      try { fn(r) } catch (err) { this.log.error({ err: errorMessage(err) }, 'fence listener threw') }
    }
  }
}
