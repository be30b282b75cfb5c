/**
 * A tiny synchronous cluster of OwnershipMachines for scenario unit tests: one global time,
 * per-node clocks offset from it, messages delivered in FIFO order with a fixed latency,
 * explicit partitions and pauses, failure-detector views set by the test, and a driver that
 * acknowledges starts and stops at once (unless told not to). Everything is bounded.
 */
import assert from 'node:assert/strict'
import { SeededRandom } from '../../../common/random.ts'
import { OwnershipMachine } from '../../../daemon/ownership/machine.ts'
import type { OwnershipMachineInit } from '../../../daemon/ownership/machine.ts'
import { encodeElectionMessage, decodeElectionMessage } from '../../../protocol/election/codec.ts'
import type { ElectionMessage } from '../../../protocol/election/messages.ts'
import type {
  HostCapacity, MemberState, OwnershipEvent, OwnershipInput, OwnershipOutput, OwnershipTiming, PersistRecord, VmSpec, VoterSpec
} from '../../../daemon/ownership/types.ts'
import { recordKey } from '../../../daemon/ownership/types.ts'

export interface MiniNode {
  id: string
  machine: OwnershipMachine
  offset: number
  up: boolean
  paused: boolean
  held: OwnershipInput[]
  persisted: Map<string, PersistRecord>
  /** Every event, with the global time it was emitted at. */
  log: Array<{ at: number, ev: OwnershipEvent }>
  /** VM → epoch of what the fake driver is running. */
  running: Map<string, number>
}

export interface MiniInit {
  voters: VoterSpec[]
  vms: VmSpec[]
  /** Per-node configured VMs (default: `vms` everywhere); others learn specs by `vm` inputs. */
  vmsOf?: Record<string, VmSpec[]>
  timing?: Partial<OwnershipTiming>
  maxConcurrentStarts?: number
  /** Per-node clock offsets (local = global + offset). */
  offsets?: Record<string, number>
  /** One-way message latency. @default 1 */
  latencyMs?: number
  /** Per-link latency overrides, keyed "from>to". */
  linkLatencyMs?: Record<string, number>
  /** Acknowledge starts/stops at once. @default true */
  autoDriver?: boolean
  /** Per-node capacity (absent: not counted). */
  capacityOf?: Record<string, HostCapacity>
}

interface InFlight { at: number, from: string, to: string, bytes: Uint8Array }

export class MiniCluster {
  time = 0
  readonly nodes = new Map<string, MiniNode>()
  private readonly queue: InFlight[] = []
  private readonly blocked = new Set<string>()
  private readonly latency: number
  private readonly autoDriver: boolean

  constructor (private readonly init: MiniInit) {
    this.latency = init.latencyMs ?? 1
    this.autoDriver = init.autoDriver ?? true
    for (const v of init.voters) {
      const node: MiniNode = {
        id: v.id, machine: undefined as unknown as OwnershipMachine, offset: init.offsets?.[v.id] ?? 0,
        up: true, paused: false, held: [], persisted: new Map(), log: [], running: new Map()
      }
      this.nodes.set(v.id, node)
      node.machine = this.build(node)
    }
    for (const n of this.nodes.values()) for (const p of this.nodes.keys()) if (p !== n.id) this.setView(n.id, p, 'alive')
  }

  node (id: string): MiniNode {
    const n = this.nodes.get(id)
    assert.ok(n !== undefined, `no node ${id}`)
    return n
  }

  local (id: string): number { return this.time + this.node(id).offset }

  private build (node: MiniNode): OwnershipMachine {
    const init: OwnershipMachineInit = {
      self: node.id,
      voters: this.init.voters,
      vms: this.init.vmsOf?.[node.id] ?? this.init.vms,
      random: new SeededRandom(node.id.length * 7919 + node.persisted.size),
      now: this.time + node.offset,
      records: [...node.persisted.values()]
    }
    if (this.init.timing !== undefined) init.timing = this.init.timing
    if (this.init.maxConcurrentStarts !== undefined) init.maxConcurrentStarts = this.init.maxConcurrentStarts
    const cap = this.init.capacityOf?.[node.id]
    if (cap !== undefined) init.capacity = cap
    return new OwnershipMachine(init)
  }

  /** Feeds an input to a node now (held while paused, dropped while down). */
  input (id: string, input: OwnershipInput): void {
    const n = this.node(id)
    if (!n.up) return
    if (n.paused) { n.held.push(input); return }
    this.apply(n, n.machine.step(this.local(id), input))
  }

  setView (id: string, peer: string, state: MemberState): void { this.input(id, { type: 'member', id: peer, state }) }

  /** Every node other than `peer` sees `peer` as `state`. */
  setViewOfAll (peer: string, state: MemberState): void {
    for (const n of this.nodes.keys()) if (n !== peer) this.setView(n, peer, state)
  }

  block (from: string, to: string): void { this.blocked.add(`${from}>${to}`) }
  cut (a: string, b: string): void { this.block(a, b); this.block(b, a) }
  isolate (id: string): void { for (const o of this.nodes.keys()) if (o !== id) this.cut(id, o) }
  heal (): void { this.blocked.clear() }

  kill (id: string): void {
    const n = this.node(id)
    n.up = false
    n.paused = false
    n.held = []
    n.running.clear()
  }

  restart (id: string): void {
    const n = this.node(id)
    n.up = true
    n.machine = this.build(n)
    for (const p of this.nodes.keys()) if (p !== id) this.setView(id, p, 'alive')
    this.apply(n, n.machine.tick(this.local(id)))
  }

  pause (id: string): void { this.node(id).paused = true }

  resume (id: string): void {
    const n = this.node(id)
    n.paused = false
    this.apply(n, n.machine.tick(this.local(id)))
    const held = n.held
    n.held = []
    for (const i of held) this.input(id, i)
  }

  private apply (n: MiniNode, out: OwnershipOutput): void {
    for (const r of out.persist) n.persisted.set(recordKey(r), r)
    for (const s of out.send) {
      // Through the codec, so every scenario also exercises it.
      const latency = this.init.linkLatencyMs?.[`${n.id}>${s.to}`] ?? this.latency
      this.queue.push({ at: this.time + latency, from: n.id, to: s.to, bytes: encodeElectionMessage(s.msg) })
    }
    for (const ev of out.events) {
      n.log.push({ at: this.time, ev })
      if (!this.autoDriver) continue
      if (ev.type === 'start') { n.running.set(ev.vm, ev.epoch); this.input(n.id, { type: 'started', vm: ev.vm }) }
      if (ev.type === 'stop') { n.running.delete(ev.vm); this.input(n.id, { type: 'stopped', vm: ev.vm }) }
    }
  }

  /** Runs global time forward by `ms`, delivering messages and ticking nodes in time order. */
  advance (ms: number): void {
    const end = this.time + ms
    for (let guard = 0; guard < 1_000_000; guard++) {
      let next = end
      for (const m of this.queue) if (m.at < next) next = m.at
      for (const n of this.nodes.values()) {
        if (!n.up || n.paused) continue
        const d = n.machine.nextDeadline()
        if (d !== undefined && d - n.offset < next) next = Math.max(this.time, d - n.offset)
      }
      this.time = next
      const due = this.queue.filter(m => m.at <= this.time).sort((x, y) => x.at - y.at)
      if (due.length > 0) {
        this.queue.splice(0, this.queue.length, ...this.queue.filter(m => m.at > this.time))
        for (const m of due) this.deliver(m)
      }
      for (const n of this.nodes.values()) {
        if (!n.up || n.paused) continue
        const d = n.machine.nextDeadline()
        if (d !== undefined && d <= this.local(n.id)) this.apply(n, n.machine.tick(this.local(n.id)))
      }
      if (this.time >= end && !this.queue.some(m => m.at <= end)) return
    }
    assert.fail('MiniCluster.advance did not converge')
  }

  private deliver (m: InFlight): void {
    if (this.blocked.has(`${m.from}>${m.to}`)) return
    const msg: ElectionMessage = decodeElectionMessage(m.bytes)
    this.input(m.to, { type: 'message', from: m.from, msg })
  }

  events (id: string, type?: OwnershipEvent['type']): Array<{ at: number, ev: OwnershipEvent }> {
    return this.node(id).log.filter(e => type === undefined || e.ev.type === type)
  }

  /** Who runs `vm` right now according to the fake drivers. */
  runners (vm: string): string[] {
    return [...this.nodes.values()].filter(n => n.running.has(vm)).map(n => n.id)
  }

  status (id: string, vm: string): ReturnType<OwnershipMachine['status']>[number] {
    const s = this.node(id).machine.status().find(x => x.vm === vm)
    assert.ok(s !== undefined)
    return s
  }
}
