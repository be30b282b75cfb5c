/**
 * A seeded, discrete-event simulated network for running pure state machines (the membership
 * detector, the election machine, ...) as many nodes on virtual time. Generic over the message
 * type `M`; nothing here knows what a message means.
 *
 * Events (message deliveries, node wake-ups, scripted calls) sit in one priority queue ordered
 * by (time, insertion). Every random choice — link loss, delay jitter, duplication, clock
 * offsets and drift, each node's own Random — comes from one SeededRandom, so a run replays
 * exactly for a given seed and script. Runs are bounded: `runUntil(t)` stops at virtual time t
 * and throws if the event budget is exceeded or a node asks to be woken at the same instant
 * over and over (a state machine that never makes progress).
 *
 * Each node has its own clock, local = offset + rate × simTime, rate within 1 ± drift; the
 * handler only ever sees local time, and wake-up requests are in local time too. A restarted
 * node is a new process: fresh handler, fresh clock origin (same rate).
 */
import { SeededRandom } from '../../common/random.ts'
import type { Random } from '../../common/random.ts'

export interface LinkConfig {
  /** Probability that a message is lost. */
  drop: number
  /** Fixed one-way delay. */
  delayMs: number
  /** Extra delay, uniform in [0, jitterMs); messages can overtake each other. */
  jitterMs: number
  /** Probability that a message is delivered twice (the copy gets its own delay). */
  duplicate: number
}

/** What a node's handler can do to the world. */
export interface SimNodeContext<M> {
  readonly id: string
  /** 0 for the first start, +1 for each restart. */
  readonly life: number
  /** This node's own seeded stream (distinct per node and per life). */
  readonly random: Random
  /** This node's local monotonic clock. */
  now: () => number
  send: (to: string, msg: M) => void
}

/** A node: a message handler with a wake-up time. All times are the node's local time. */
export interface SimNodeHandler<M> {
  receive: (now: number, from: string, msg: M) => void
  tick: (now: number) => void
  /** Local time of the next wake-up wanted; Infinity for none. Asked after every call. */
  nextWake: () => number
  /** The connection to `peer` was reset (only when a kill asks for it). */
  peerLost?: (now: number, peer: string) => void
}

export type SimNodeFactory<M> = (ctx: SimNodeContext<M>) => SimNodeHandler<M>

export interface SimNetInit {
  seed: number
  /** Default link for every ordered pair. @default { drop: 0, delayMs: 1, jitterMs: 1, duplicate: 0 } */
  link?: Partial<LinkConfig>
  /** Max clock rate deviation: each node's rate is uniform in [1 - drift, 1 + drift]. @default 0 */
  drift?: number
  /** Clock offsets are uniform in [0, maxClockOffsetMs) so nodes never share an origin. @default 10000 */
  maxClockOffsetMs?: number
  /** Event budget per runUntil() call. @default 20_000_000 */
  maxEvents?: number
}

export interface SimStats {
  sent: number
  delivered: number
  /** Lost to link loss. */
  dropped: number
  /** Stopped by a partition. */
  blocked: number
  duplicated: number
  /** Arrived at a node that was down, restarted since, or paused with dropping. */
  undeliverable: number
}

export interface SendRecord<M> { at: number, from: string, to: string, msg: M }

interface Node<M> {
  id: string
  factory: SimNodeFactory<M>
  handler: SimNodeHandler<M> | undefined
  life: number
  up: boolean
  paused: boolean
  dropWhilePaused: boolean
  buffered: Array<{ from: string, msg: M }>
  offset: number
  rate: number
  wakeAt: number
  wakeToken: number
  spinAt: number
  spinCount: number
}

type SimEvent<M> =
  | { kind: 'deliver', at: number, seq: number, from: string, to: string, life: number, msg: M }
  | { kind: 'wake', at: number, seq: number, node: string, token: number }
  | { kind: 'call', at: number, seq: number, fn: () => void }
  | { kind: 'lost', at: number, seq: number, node: string, life: number, peer: string }

const DEFAULT_LINK: LinkConfig = { drop: 0, delayMs: 1, jitterMs: 1, duplicate: 0 }
const MAX_SAME_INSTANT_WAKES = 1000

export class SimNet<M> {
  readonly random: Random
  readonly stats: SimStats = { sent: 0, delivered: 0, dropped: 0, blocked: 0, duplicated: 0, undeliverable: 0 }
  private readonly nodes = new Map<string, Node<M>>()
  private readonly links = new Map<string, LinkConfig>()
  private readonly blockedPairs = new Set<string>()
  private readonly defaultLink: LinkConfig
  private readonly drift: number
  private readonly maxOffset: number
  private readonly maxEvents: number
  private readonly heap: Array<SimEvent<M>> = []
  private readonly tracers = new Set<(r: SendRecord<M>) => void>()
  private seq = 0
  private time = 0

  constructor (init: SimNetInit) {
    this.random = new SeededRandom(init.seed)
    this.defaultLink = { ...DEFAULT_LINK, ...init.link }
    this.drift = init.drift ?? 0
    this.maxOffset = init.maxClockOffsetMs ?? 10_000
    this.maxEvents = init.maxEvents ?? 20_000_000
  }

  /** Simulated (global) time. */
  get now (): number { return this.time }

  // ------------------------------------------------------------------ nodes

  /** Adds and starts a node now. */
  addNode (id: string, factory: SimNodeFactory<M>): void {
    if (this.nodes.has(id)) throw new Error(`node ${id} exists`)
    const node: Node<M> = {
      id, factory, handler: undefined, life: -1, up: false, paused: false, dropWhilePaused: false, buffered: [],
      offset: 0, rate: 1 + (this.random.next() * 2 - 1) * this.drift, wakeAt: Infinity, wakeToken: 0, spinAt: -1, spinCount: 0
    }
    this.nodes.set(id, node)
    this.boot(node)
  }

  nodeIds (): string[] { return [...this.nodes.keys()] }
  handler (id: string): SimNodeHandler<M> | undefined { return this.nodes.get(id)?.handler }
  isUp (id: string): boolean { return this.nodes.get(id)?.up === true }
  isPaused (id: string): boolean { return this.nodes.get(id)?.paused === true }
  life (id: string): number { return this.get(id).life }

  /** The node's local clock reading now. */
  localNow (id: string): number { return this.localAt(this.get(id), this.time) }
  /** The node's clock parameters: local = offset + rate × simTime. */
  clock (id: string): { offset: number, rate: number } { const n = this.get(id); return { offset: n.offset, rate: n.rate } }
  /** Simulated time at which the node's local clock reads `local`. */
  simTimeOf (id: string, local: number): number { return this.toSim(this.get(id), local) }

  /** Stops the node dead: state lost, in-flight messages to it lost. */
  kill (id: string, opts: { notifyPeers?: boolean } = {}): void {
    const node = this.get(id)
    if (!node.up) return
    node.up = false
    node.paused = false
    node.handler = undefined
    node.buffered = []
    node.wakeAt = Infinity
    node.wakeToken++
    if (opts.notifyPeers === true) {
      for (const other of this.nodes.values()) {
        if (other === node || !other.up) continue
        const link = this.link(id, other.id)
        this.push({ kind: 'lost', at: this.time + link.delayMs, seq: 0, node: other.id, life: other.life, peer: id })
      }
    }
  }

  /** Starts a killed node again as a fresh process (new handler, new clock origin). */
  restart (id: string): void {
    const node = this.get(id)
    if (node.up) this.kill(id)
    this.boot(node)
  }

  /**
   * Freezes the node: its handler does not run. Messages for it are held and delivered on
   * resume (like socket buffers), or lost with `drop: true`. Its clock keeps running, so it
   * wakes up to a time jump.
   */
  pause (id: string, opts: { drop?: boolean } = {}): void {
    const node = this.get(id)
    if (!node.up) return
    node.paused = true
    node.dropWhilePaused = opts.drop === true
  }

  /** Unfreezes: the node's timers run first (as in Node's event loop), then held messages. */
  resume (id: string): void {
    const node = this.get(id)
    if (!node.up || !node.paused) return
    node.paused = false
    const held = node.buffered
    node.buffered = []
    node.wakeAt = Infinity
    this.withHandler(node, h => h.tick(this.localAt(node, this.time)))
    for (const { from, msg } of held) {
      if (!node.up || node.paused) break
      this.stats.delivered++
      this.withHandler(node, h => h.receive(this.localAt(node, this.time), from, msg))
    }
  }

  /**
   * Runs `fn` against a live, unpaused node's handler now (with its local time), as an outside
   * input would (a lag monitor, an operator command), then re-arms its wake-up. Returns false
   * if the node is down or paused.
   */
  withNode (id: string, fn: (handler: SimNodeHandler<M>, now: number) => void): boolean {
    const node = this.get(id)
    if (!node.up || node.paused || node.handler === undefined) return false
    this.withHandler(node, h => { fn(h, this.localAt(node, this.time)) })
    return true
  }

  // ------------------------------------------------------------------ links

  /** Overrides the one-way link from → to. */
  setLink (from: string, to: string, cfg: Partial<LinkConfig>): void {
    this.links.set(pairKey(from, to), { ...this.link(from, to), ...cfg })
  }

  /** Overrides both directions between a and b. */
  setLinks (a: string, b: string, cfg: Partial<LinkConfig>): void {
    this.setLink(a, b, cfg)
    this.setLink(b, a, cfg)
  }

  /** Overrides every link to and from `id`. */
  setNodeLinks (id: string, cfg: Partial<LinkConfig>): void {
    for (const other of this.nodes.keys()) if (other !== id) this.setLinks(id, other, cfg)
  }

  /** Back to the default link everywhere (partitions are separate: see heal()). */
  resetLinks (): void { this.links.clear() }

  link (from: string, to: string): LinkConfig { return this.links.get(pairKey(from, to)) ?? this.defaultLink }

  /** Cuts a ↔ b (or only a → b with oneWay) between every member of the two groups. */
  partition (a: string[], b: string[], opts: { oneWay?: boolean } = {}): void {
    for (const x of a) {
      for (const y of b) {
        if (x === y) continue
        this.blockedPairs.add(pairKey(x, y))
        if (opts.oneWay !== true) this.blockedPairs.add(pairKey(y, x))
      }
    }
  }

  /** Cuts one node off from everyone. */
  isolate (id: string): void { this.partition([id], this.nodeIds().filter(n => n !== id)) }

  /** Removes every partition. */
  heal (): void { this.blockedPairs.clear() }

  isBlocked (from: string, to: string): boolean { return this.blockedPairs.has(pairKey(from, to)) }

  // ------------------------------------------------------------------ running

  /** Observes every send attempt (before loss is decided). Returns an unsubscribe function. */
  trace (fn: (r: SendRecord<M>) => void): () => void {
    this.tracers.add(fn)
    return () => this.tracers.delete(fn)
  }

  /** Runs `fn` at simulated time `t` (not before now). */
  at (t: number, fn: () => void): void { this.push({ kind: 'call', at: Math.max(t, this.time), seq: 0, fn }) }
  after (ms: number, fn: () => void): void { this.at(this.time + ms, fn) }

  /** Processes every event up to and including simulated time `t`; then now = t. */
  runUntil (t: number): void {
    let budget = this.maxEvents
    for (;;) {
      const ev = this.heap[0]
      if (ev === undefined || ev.at > t) break
      if (budget-- <= 0) throw new Error(`simnet: event budget of ${this.maxEvents} exhausted at t=${this.time}`)
      this.pop()
      this.time = Math.max(this.time, ev.at)
      this.dispatch(ev)
    }
    this.time = Math.max(this.time, t)
  }

  runFor (ms: number): void { this.runUntil(this.time + ms) }

  /**
   * Runs in steps of `stepMs` until `pred()` holds or `limitMs` of simulated time pass; returns
   * the simulated time at which it held (checked at step boundaries), or undefined.
   */
  runUntilTrue (pred: () => boolean, limitMs: number, stepMs = 10): number | undefined {
    const end = this.time + limitMs
    while (this.time < end) {
      if (pred()) return this.time
      this.runUntil(Math.min(end, this.time + stepMs))
    }
    return pred() ? this.time : undefined
  }

  // ------------------------------------------------------------------ internals

  private get (id: string): Node<M> {
    const n = this.nodes.get(id)
    if (n === undefined) throw new Error(`no node ${id}`)
    return n
  }

  private boot (node: Node<M>): void {
    node.life++
    node.offset = this.random.next() * this.maxOffset
    node.up = true
    node.paused = false
    node.buffered = []
    node.wakeAt = Infinity
    node.wakeToken++
    const life = node.life
    const ctx: SimNodeContext<M> = {
      id: node.id,
      life,
      random: new SeededRandom(this.random.int(0x1_0000_0000)),
      now: () => this.localAt(node, this.time),
      send: (to, msg) => { if (node.up && node.life === life) this.send(node.id, to, msg) }
    }
    node.handler = node.factory(ctx)
    this.reschedule(node)
  }

  private send (from: string, to: string, msg: M): void {
    this.stats.sent++
    for (const t of this.tracers) t({ at: this.time, from, to, msg })
    const target = this.nodes.get(to)
    if (target === undefined) { this.stats.undeliverable++; return }
    if (this.blockedPairs.has(pairKey(from, to))) { this.stats.blocked++; return }
    const link = this.link(from, to)
    if (this.random.next() < link.drop) { this.stats.dropped++; return }
    const copies = this.random.next() < link.duplicate ? 2 : 1
    if (copies === 2) this.stats.duplicated++
    for (let i = 0; i < copies; i++) {
      const delay = link.delayMs + this.random.next() * link.jitterMs
      this.push({ kind: 'deliver', at: this.time + delay, seq: 0, from, to, life: target.up ? target.life : -1, msg })
    }
  }

  private dispatch (ev: SimEvent<M>): void {
    switch (ev.kind) {
      case 'call':
        ev.fn()
        return
      case 'wake': {
        const node = this.nodes.get(ev.node)
        if (node === undefined || !node.up || node.paused || ev.token !== node.wakeToken) return
        node.wakeAt = Infinity
        if (node.spinAt === this.time) {
          if (++node.spinCount > MAX_SAME_INSTANT_WAKES) throw new Error(`simnet: node ${node.id} keeps asking to wake at t=${this.time}`)
        } else {
          node.spinAt = this.time
          node.spinCount = 0
        }
        this.withHandler(node, h => h.tick(this.localAt(node, this.time)))
        return
      }
      case 'deliver': {
        const node = this.nodes.get(ev.to)
        if (node === undefined || !node.up || node.life !== ev.life) { this.stats.undeliverable++; return }
        if (node.paused) {
          if (node.dropWhilePaused) this.stats.undeliverable++
          else node.buffered.push({ from: ev.from, msg: ev.msg })
          return
        }
        this.stats.delivered++
        this.withHandler(node, h => h.receive(this.localAt(node, this.time), ev.from, ev.msg))
        return
      }
      case 'lost': {
        const node = this.nodes.get(ev.node)
        if (node === undefined || !node.up || node.paused || node.life !== ev.life) return
        this.withHandler(node, h => h.peerLost?.(this.localAt(node, this.time), ev.peer))
      }
    }
  }

  private withHandler (node: Node<M>, fn: (h: SimNodeHandler<M>) => void): void {
    const h = node.handler
    if (h === undefined) return
    fn(h)
    if (node.handler === h) this.reschedule(node)
  }

  private reschedule (node: Node<M>): void {
    const h = node.handler
    if (h === undefined || !node.up || node.paused) return
    const local = h.nextWake()
    if (!Number.isFinite(local)) {
      if (node.wakeAt !== Infinity) { node.wakeAt = Infinity; node.wakeToken++ }
      return
    }
    const at = Math.max(this.time, this.toSim(node, local))
    if (at === node.wakeAt) return
    node.wakeAt = at
    node.wakeToken++
    this.push({ kind: 'wake', at, seq: 0, node: node.id, token: node.wakeToken })
  }

  private localAt (node: Node<M>, simTime: number): number { return node.offset + node.rate * simTime }

  /** Smallest representable-ish simulated time at which the node's clock reads at least `local`. */
  private toSim (node: Node<M>, local: number): number {
    let t = (local - node.offset) / node.rate
    for (let i = 0; i < 8 && this.localAt(node, t) < local; i++) t += Math.max(1e-9, Math.abs(t) * 1e-15) * 2 ** i
    return t
  }

  // binary min-heap on (at, seq)
  private push (ev: SimEvent<M>): void {
    ev.seq = this.seq++
    const h = this.heap
    h.push(ev)
    let i = h.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!before(h[i] as SimEvent<M>, h[parent] as SimEvent<M>)) break
      swap(h, i, parent)
      i = parent
    }
  }

  private pop (): void {
    const h = this.heap
    const last = h.pop()
    if (last === undefined || h.length === 0) return
    h[0] = last
    let i = 0
    for (;;) {
      const l = 2 * i + 1
      const r = l + 1
      let m = i
      if (l < h.length && before(h[l] as SimEvent<M>, h[m] as SimEvent<M>)) m = l
      if (r < h.length && before(h[r] as SimEvent<M>, h[m] as SimEvent<M>)) m = r
      if (m === i) break
      swap(h, i, m)
      i = m
    }
  }
}

function pairKey (from: string, to: string): string { return `${from}\u0000${to}` }

function before<M> (a: SimEvent<M>, b: SimEvent<M>): boolean { return a.at < b.at || (a.at === b.at && a.seq < b.seq) }

function swap<T> (arr: T[], i: number, j: number): void {
  const t = arr[i] as T
  arr[i] = arr[j] as T
  arr[j] = t
}
