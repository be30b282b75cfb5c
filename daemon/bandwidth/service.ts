/**
 * The node's bandwidth: one node bucket whose rate follows the schedule, one bucket per peer (its
 * `limit` from mesh.peers) and one per VM that has a `limit`, shared by that VM's targets.
 * Senders ask limiterFor(peer, vm) once and keep the limiter; limits change underneath it
 * (schedule boundary, reload) without dropping a waiting take.
 *
 * The schedule is re-evaluated by one timer armed at the next window boundary (capped at
 * maxRecheckMs so a step of the wall clock is noticed), never by fast polling.
 */
import type { Clock, TimerHandle } from '../../common/clock.ts'
import { TokenBucket, checkRate } from './bucket.ts'
import { BandwidthLimiter } from './limiter.ts'
import { activeWindow, nextBoundary } from './schedule.ts'
import type { BandwidthConfig } from './schedule.ts'

export interface BandwidthPeer {
  name: string
  /** The peer's own cap in bytes per second; absent = only the node limit applies. */
  limitBytesPerSec?: number
}

export interface BandwidthVm {
  name: string
  /** The VM's own cap across all its targets, bytes per second; absent = none. */
  limitBytesPerSec?: number
}

export interface BandwidthSettings {
  bandwidth: BandwidthConfig
  peers: ReadonlyArray<BandwidthPeer>
  /** VMs with their own limit (config `vms[].limit`). @default [] */
  vms?: ReadonlyArray<BandwidthVm>
}

export interface BandwidthServiceInit extends BandwidthSettings {
  /** Bucket burst as time at the current rate. @default 100 */
  burstMs?: number
  /** Floor of every bucket's burst in bytes. @default 65536 */
  minBurstBytes?: number
  /** Longest wait between schedule evaluations, so a wall-clock step is picked up. @default 60000 */
  maxRecheckMs?: number
}

export interface LimitChange {
  /** The node limit now in force (Infinity = unlimited). */
  limitBytesPerSec: number
  /** Index of the schedule window in force, or undefined for the base limit. */
  window: number | undefined
}

export class BandwidthService {
  private readonly clock: Clock
  private settings: BandwidthSettings
  private readonly bucketInit: { burstMs?: number, minBurstBytes?: number }
  private readonly maxRecheckMs: number
  private readonly node: TokenBucket
  private readonly peerBuckets = new Map<string, TokenBucket>()
  private readonly vmBuckets = new Map<string, TokenBucket>()
  private readonly limiters = new Map<string, BandwidthLimiter>()
  private readonly listeners = new Set<(change: LimitChange) => void>()
  private window: number | undefined
  private timer: TimerHandle | undefined
  private running = false

  constructor (components: { clock: Clock }, init: BandwidthServiceInit) {
    this.clock = components.clock
    validate(init)
    this.settings = { bandwidth: init.bandwidth, peers: init.peers, vms: init.vms ?? [] }
    this.bucketInit = {
      ...(init.burstMs !== undefined ? { burstMs: init.burstMs } : {}),
      ...(init.minBurstBytes !== undefined ? { minBurstBytes: init.minBurstBytes } : {})
    }
    this.maxRecheckMs = init.maxRecheckMs ?? 60_000
    this.window = activeWindow(init.bandwidth.schedule, this.clock.wallNow())
    this.node = new TokenBucket({ clock: this.clock }, { rateBytesPerSec: this.scheduledLimit(), ...this.bucketInit })
    this.applyOwnLimits()
  }

  /** Starts following the schedule (evaluates it now, then at each boundary). Idempotent. */
  async start (): Promise<void> {
    if (this.running) return
    this.running = true
    this.evaluate()
  }

  /** Stops following the schedule; limiters keep working at the limits last in force. Idempotent. */
  async stop (): Promise<void> {
    this.running = false
    this.clock.clearTimeout(this.timer)
    this.timer = undefined
  }

  /**
   * Applies new limits, schedule, peers and VMs. Waiting takes stay queued and are re-timed at the
   * new rates; limiters handed out before stay valid (a peer or VM no longer configured simply
   * loses its own limit).
   */
  reload (settings: BandwidthSettings): void {
    validate(settings)
    this.settings = { bandwidth: settings.bandwidth, peers: settings.peers, vms: settings.vms ?? [] }
    this.applyOwnLimits()
    this.evaluate()
  }

  /**
   * The limiter for sends to `peer`, on behalf of `vm` when given (so the VM's own limit, if it
   * has or later gets one, applies too). One per (peer, vm), stable across reloads.
   */
  limiterFor (peer: string, vm?: string): BandwidthLimiter {
    const key = vm === undefined ? peer : `${peer}\u0000${vm}`
    let l = this.limiters.get(key)
    if (l === undefined) {
      const own = [this.bucket(this.peerBuckets, peer, this.settings.peers)]
      if (vm !== undefined) own.push(this.bucket(this.vmBuckets, vm, this.settings.vms ?? []))
      l = new BandwidthLimiter(peer, this.node, own, vm)
      this.limiters.set(key, l)
    }
    return l
  }

  /** The node limit in force now, bytes per second (Infinity = unlimited). */
  currentLimit (): number { return this.node.rate }

  /** Index of the schedule window in force, or undefined when the base limit applies. */
  currentWindow (): number | undefined { return this.window }

  /** A peer's own limit (Infinity when it has none or is unknown). */
  peerLimit (peer: string): number { return this.peerBuckets.get(peer)?.rate ?? limitOf(this.settings.peers, peer) }

  /** A VM's own limit (Infinity when it has none or is unknown). */
  vmLimit (vm: string): number { return this.vmBuckets.get(vm)?.rate ?? limitOf(this.settings.vms ?? [], vm) }

  /** Calls `fn` whenever the node limit or active window changes; returns the unsubscribe. */
  onLimitChange (fn: (change: LimitChange) => void): () => void {
    this.listeners.add(fn)
    return () => { this.listeners.delete(fn) }
  }

  private scheduledLimit (): number {
    const w = this.window
    return w === undefined ? this.settings.bandwidth.limitBytesPerSec : (this.settings.bandwidth.schedule[w]?.limitBytesPerSec ?? this.settings.bandwidth.limitBytesPerSec)
  }

  private bucket (buckets: Map<string, TokenBucket>, name: string, configured: ReadonlyArray<{ name: string, limitBytesPerSec?: number }>): TokenBucket {
    let b = buckets.get(name)
    if (b === undefined) {
      b = new TokenBucket({ clock: this.clock }, { rateBytesPerSec: limitOf(configured, name), ...this.bucketInit })
      buckets.set(name, b)
    }
    return b
  }

  /** Pushes configured peer and VM limits into the buckets handed out (absent = unlimited). */
  private applyOwnLimits (): void {
    for (const [name, bucket] of this.peerBuckets) bucket.setRate(limitOf(this.settings.peers, name))
    for (const [name, bucket] of this.vmBuckets) bucket.setRate(limitOf(this.settings.vms ?? [], name))
  }

  /** Applies the window in force now and arms the timer for the next boundary. */
  private evaluate (): void {
    this.clock.clearTimeout(this.timer)
    this.timer = undefined
    const wall = this.clock.wallNow()
    const before = { limit: this.node.rate, window: this.window }
    this.window = activeWindow(this.settings.bandwidth.schedule, wall)
    this.node.setRate(this.scheduledLimit())
    if (this.running) {
      const next = nextBoundary(this.settings.bandwidth.schedule, wall)
      if (next !== undefined) {
        this.timer = this.clock.setTimeout(() => { this.timer = undefined; this.evaluate() }, Math.min(next - wall, this.maxRecheckMs))
      }
    }
    // listeners last: one that throws must not leave the schedule unarmed
    if (before.limit !== this.node.rate || before.window !== this.window) {
      const change: LimitChange = { limitBytesPerSec: this.node.rate, window: this.window }
      for (const fn of this.listeners) fn(change)
    }
  }
}

function limitOf (list: ReadonlyArray<{ name: string, limitBytesPerSec?: number }>, name: string): number {
  return list.find(x => x.name === name)?.limitBytesPerSec ?? Infinity
}

function validate (s: BandwidthSettings): void {
  checkRate(s.bandwidth.limitBytesPerSec)
  for (const w of s.bandwidth.schedule) checkRate(w.limitBytesPerSec)
  for (const p of s.peers) if (p.limitBytesPerSec !== undefined) checkRate(p.limitBytesPerSec)
  for (const v of s.vms ?? []) if (v.limitBytesPerSec !== undefined) checkRate(v.limitBytesPerSec)
}
