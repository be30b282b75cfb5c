/**
 * An in-process stand-in for the watchdog process: the real WatchdogCore on a ManualClock whose
 * reading is offset from the daemon's (another process's clock origin), with message delays
 * each way, fences that take virtual time, and crash/hang/exit controls.
 */
import type { ManualClock, TimerHandle } from '../../../common/clock.ts'
import { WatchdogCore, type CoreOutput } from '../../../daemon/watchdog/core.ts'
import { decodeRequest, WATCHDOG_PROTOCOL_VERSION, type InheritedArm, type WatchdogReport, type WatchdogRequest } from '../../../daemon/watchdog/messages.ts'
import type { SpawnOptions, WatchdogChannel } from '../../../daemon/watchdog/channel.ts'

export interface FakeOptions {
  /** Watchdog clock = daemon clock + offset. */
  offset: number
  upMs: number
  downMs: number
  /** Time from spawn to hello; Infinity: never says hello. */
  helloMs: number
  fenceMs: number
  /** Result of each fence attempt. */
  fenceOk?: (attempt: number) => boolean
  /** Deadlines the process says it took over from a predecessor (they are armed in its core). */
  inherited?: InheritedArm[]
}

let nextPid = 1000

export class FakeWatchdogProcess implements WatchdogChannel {
  readonly pid = nextPid++
  readonly core: WatchdogCore
  alive = true
  hung = false
  released = false
  readonly received: WatchdogRequest[] = []
  /** Fence attempts, on the daemon's clock. */
  readonly fences: Array<{ vm: string, at: number, attempt: number }> = []
  private timer?: TimerHandle
  private readonly msgFns: Array<(m: unknown) => void> = []
  private readonly exitFns: Array<(code: number | null, signal: string | null) => void> = []

  constructor (private readonly clock: ManualClock, readonly spawnOpts: SpawnOptions, private readonly o: FakeOptions) {
    this.core = new WatchdogCore({ retryMs: spawnOpts.retryMs, maxAttempts: spawnOpts.maxAttempts })
    if (o.inherited !== undefined) clock.setTimeout(() => { this.apply(this.core.adopt(this.mono(), o.inherited ?? [])) }, 0)
    if (Number.isFinite(o.helloMs)) {
      clock.setTimeout(() => { this.report({ type: 'hello', version: WATCHDOG_PROTOCOL_VERSION, pid: this.pid, monoMs: this.mono(), inherited: this.o.inherited ?? [] }) }, o.helloMs)
    }
  }

  mono (): number { return this.clock.now() + this.o.offset }

  send (msg: WatchdogRequest): void {
    if (!this.alive) return
    const copy = JSON.parse(JSON.stringify(msg)) as unknown
    this.clock.setTimeout(() => {
      if (!this.alive || this.hung) return
      const req = decodeRequest(copy)
      this.received.push(req)
      this.apply(this.core.step(this.mono(), { type: 'request', req }))
    }, this.o.upMs)
  }

  onMessage (fn: (m: unknown) => void): void { this.msgFns.push(fn) }
  onExit (fn: (code: number | null, signal: string | null) => void): void { this.exitFns.push(fn) }
  onStderr (): void {}
  kill (): void { this.die(null, 'SIGKILL') }
  release (): void {
    this.released = true
    // IPC closed: the process sees its parent go away
    this.clock.setTimeout(() => { if (this.alive) this.apply(this.core.step(this.mono(), { type: 'parent-gone' })) }, 0)
  }

  /** A crash: exits without a word. */
  die (code: number | null, signal: string | null): void {
    if (!this.alive) return
    this.alive = false
    this.clock.clearTimeout(this.timer)
    this.clock.setTimeout(() => { for (const f of this.exitFns) f(code, signal) }, 0)
  }

  private report (r: WatchdogReport): void {
    if (this.released) return
    this.clock.setTimeout(() => { if (this.alive) for (const f of this.msgFns) f(r) }, this.o.downMs)
  }

  private apply (out: CoreOutput): void {
    for (const r of out.send) this.report(r)
    for (const e of out.events) {
      if (e.type === 'exit') { this.die(0, null); return }
      this.fences.push({ vm: e.vm, at: this.clock.now(), attempt: e.attempt })
      this.clock.setTimeout(() => {
        if (!this.alive) return
        const ok = this.o.fenceOk?.(e.attempt) ?? true
        this.apply(this.core.step(this.mono(), ok
          ? { type: 'fence-done', vm: e.vm, attempt: e.attempt, ok: true, outcome: 'off' }
          : { type: 'fence-done', vm: e.vm, attempt: e.attempt, ok: false, code: 'ERR_HYPERVISOR_COMMAND_FAILED', message: 'stop failed' }))
      }, this.o.fenceMs)
    }
    this.clock.clearTimeout(this.timer)
    const next = this.core.nextDeadline()
    if (next !== undefined && this.alive) this.timer = this.clock.setTimeout(() => { if (this.alive && !this.hung) this.apply(this.core.tick(this.mono())) }, Math.max(0, next - this.mono()))
  }
}
