/**
 * The watchdog's deadline logic, pure: `step(now, input)` and `tick(now)` return reports to
 * send and events for the process to act on (run a fence, exit). `now` is the watchdog's
 * monotonic clock; deadlines arrive already in it.
 *
 * Per VM: armed (deadline, action) → deadline passes with no newer arm → fencing (attempt n)
 * → off: report `fenced`, forget the VM | failed: report, retry after `retryMs`, give up after
 * `maxAttempts`. An arm that arrives while a fence runs is kept and takes over afterwards
 * (the VM is off by then; the new deadline fences it again if it is restarted and not renewed).
 *
 * When the daemon is gone (pipe closed, parent pid changed) or says bye, deadlines already
 * granted stay valid: the core neither fences early nor waits longer, and asks to exit once
 * nothing is armed or fencing.
 */
import type { FenceAction } from '../hypervisor/fence.ts'
import type { InheritedArm, WatchdogReport, WatchdogRequest } from './messages.ts'

export interface WatchdogCoreOptions {
  /** Wait before retrying a failed fence. @default 500 */
  retryMs?: number
  /** Fence attempts per deadline before giving up (and reporting it). @default 5 */
  maxAttempts?: number
}

export type CoreInput =
  | { type: 'request', req: WatchdogRequest }
  | { type: 'parent-gone' }
  | { type: 'fence-done', vm: string, attempt: number, ok: true, outcome: 'off' | 'already-off' }
  | { type: 'fence-done', vm: string, attempt: number, ok: false, code: string, message: string }

export type CoreEvent =
  /** `dueAt`: when this attempt was due (deadline or retry time), for lateness figures. */
  | { type: 'fence', vm: string, action: FenceAction, attempt: number, dueAt: number }
  | { type: 'exit' }

export interface CoreOutput { send: WatchdogReport[], events: CoreEvent[] }

interface Arm { seq: number, deadline: number, action: FenceAction }

interface Entry extends Arm {
  /** Attempts made for this deadline. */
  attempt: number
  fencing: boolean
  /** When a failed fence is tried again. */
  retryAt?: number
  /** An arm (or a disarm: null) that came while a fence was running. */
  next?: Arm | null
}

export class WatchdogCore {
  private readonly entries = new Map<string, Entry>()
  private orphaned = false
  private exited = false
  private readonly retryMs: number
  private readonly maxAttempts: number

  constructor (opts: WatchdogCoreOptions = {}) {
    this.retryMs = opts.retryMs ?? 500
    this.maxAttempts = Math.max(1, opts.maxAttempts ?? 5)
  }

  /** Earliest time `tick` has something to do, or undefined. */
  nextDeadline (): number | undefined {
    let min: number | undefined
    for (const e of this.entries.values()) {
      if (e.fencing) continue
      const at = e.retryAt ?? e.deadline
      if (min === undefined || at < min) min = at
    }
    return min
  }

  /** VMs armed or being fenced (for status and tests). */
  armed (): Array<{ vm: string, deadline: number, fencing: boolean }> {
    return [...this.entries].map(([vm, e]) => ({ vm, deadline: e.deadline, fencing: e.fencing }))
  }

  get isOrphaned (): boolean { return this.orphaned }

  /** Everything armed, with its action: what a successor watchdog adopts (handover). */
  snapshot (): InheritedArm[] {
    return [...this.entries].map(([vm, e]) => {
      const a = e.next ?? e
      return { vm, seq: a.seq, deadlineMonoMs: a.deadline, action: a.action }
    })
  }

  /**
   * Takes over the deadlines a predecessor held (it has exited). They are armed as they were;
   * one already past is fenced at once.
   */
  adopt (now: number, arms: InheritedArm[]): CoreOutput {
    const out: CoreOutput = { send: [], events: [] }
    for (const a of arms) {
      if (!this.entries.has(a.vm)) this.entries.set(a.vm, { seq: a.seq, deadline: a.deadlineMonoMs, action: a.action, attempt: 0, fencing: false })
    }
    this.due(now, out)
    return out
  }

  step (now: number, input: CoreInput): CoreOutput {
    const out: CoreOutput = { send: [], events: [] }
    switch (input.type) {
      case 'request': this.request(now, input.req, out); break
      case 'parent-gone': this.orphaned = true; break
      case 'fence-done': this.fenceDone(now, input, out); break
    }
    this.due(now, out)
    this.maybeExit(out)
    return out
  }

  tick (now: number): CoreOutput {
    const out: CoreOutput = { send: [], events: [] }
    this.due(now, out)
    this.maybeExit(out)
    return out
  }

  private request (now: number, req: WatchdogRequest, out: CoreOutput): void {
    switch (req.type) {
      case 'ping':
        out.send.push({ type: 'pong', id: req.id, monoMs: now })
        return
      case 'arm': {
        const arm: Arm = { seq: req.seq, deadline: req.deadlineMonoMs, action: req.action }
        const e = this.entries.get(req.vm)
        if (e?.fencing === true) e.next = arm
        else this.entries.set(req.vm, { ...arm, attempt: 0, fencing: false })
        out.send.push({ type: 'armed', seq: req.seq, vm: req.vm, deadlineMonoMs: req.deadlineMonoMs, monoMs: now })
        return
      }
      case 'disarm': {
        const e = this.entries.get(req.vm)
        if (e?.fencing === true) e.next = null
        else this.entries.delete(req.vm)
        out.send.push({ type: 'disarmed', seq: req.seq, vm: req.vm })
        return
      }
      case 'bye':
        this.orphaned = true
    }
  }

  private fenceDone (now: number, d: Extract<CoreInput, { type: 'fence-done' }>, out: CoreOutput): void {
    const e = this.entries.get(d.vm)
    if (e === undefined || !e.fencing || e.attempt !== d.attempt) return
    e.fencing = false
    if (d.ok) {
      out.send.push({ type: 'fenced', vm: d.vm, seq: e.seq, monoMs: now, outcome: d.outcome, attempt: d.attempt, lateMs: Math.max(0, now - e.deadline) })
      this.afterFence(d.vm, e)
      return
    }
    const final = e.attempt >= this.maxAttempts
    out.send.push({ type: 'fence-failed', vm: d.vm, seq: e.seq, monoMs: now, attempt: d.attempt, final, code: d.code, message: d.message })
    if (final) { this.afterFence(d.vm, e); return }
    if (e.next !== undefined) { this.afterFence(d.vm, e); return } // a newer arm or disarm supersedes the retry
    e.retryAt = now + this.retryMs
  }

  private afterFence (vm: string, e: Entry): void {
    if (e.next === undefined || e.next === null) { this.entries.delete(vm); return }
    this.entries.set(vm, { ...e.next, attempt: 0, fencing: false })
  }

  private due (now: number, out: CoreOutput): void {
    for (const [vm, e] of this.entries) {
      if (e.fencing) continue
      const dueAt = e.retryAt ?? e.deadline
      if (dueAt > now) continue
      e.fencing = true
      e.retryAt = undefined
      e.attempt++
      out.events.push({ type: 'fence', vm, action: e.action, attempt: e.attempt, dueAt })
    }
  }

  private maybeExit (out: CoreOutput): void {
    if (this.orphaned && !this.exited && this.entries.size === 0) {
      this.exited = true
      out.events.push({ type: 'exit' })
    }
  }
}
