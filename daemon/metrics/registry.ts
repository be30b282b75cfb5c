/**
 * The daemon's Prometheus metrics: a private prom-client Registry (never the global one, so two
 * daemons in one test process do not collide) behind a typed facade, so call sites say
 * `metrics.replication.setLag(vm, target, s)` and never spell a metric or label name.
 * States are exported one-hot (one series per possible state, 1 for the current one), which is
 * what alert rules and Grafana state timelines expect.
 */
import { getHeapStatistics } from 'node:v8'
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client'
import type { MemberStatus, TargetStatus } from '../status.ts'

export const TARGET_STATES = ['seeding', 'in-sync', 'behind', 'disconnected', 'error'] as const satisfies ReadonlyArray<TargetStatus['state']>
export type TargetState = typeof TARGET_STATES[number]

export const MEMBER_STATES = ['alive', 'suspect', 'dead'] as const satisfies ReadonlyArray<MemberStatus['state']>
export type MemberState = typeof MEMBER_STATES[number]

export interface MetricsInit {
  /** Also export Node process metrics (CPU, memory, event loop lag, GC, handles). @default true */
  defaultMetrics?: boolean
  /** Labels put on every series, e.g. `{ node: 'hv-a' }`. @default {} */
  labels?: Record<string, string>
}

/** Per VM and target, on the source. */
export interface ReplicationMetrics {
  setAckedGeneration: (vm: string, target: string, generation: number) => void
  /** Seconds between the newest captured generation and the one the target acked. */
  setLag: (vm: string, target: string, seconds: number) => void
  setPendingBytes: (vm: string, target: string, bytes: number) => void
  /** Age of the newest capture point durable on the target (NaN: none yet). */
  setRpo: (vm: string, target: string, seconds: number) => void
  /** Adds bytes put on the wire to the target (ignored unless positive). */
  addSentBytes: (vm: string, target: string, bytes: number) => void
  setRate: (vm: string, target: string, bytesPerSec: number) => void
  setState: (vm: string, target: string, state: TargetState) => void
  /** Drops every series of the pair (VM removed or no longer replicated there). */
  forget: (vm: string, target: string) => void
}

/** Per replica held on this node. */
export interface ReplicaMetrics {
  setAppliedGeneration: (vm: string, source: string, generation: number) => void
  forget: (vm: string, source: string) => void
}

export interface MemberMetrics {
  setState: (peer: string, state: MemberState) => void
  forget: (peer: string) => void
}

export interface BandwidthMetrics {
  /** The node limit in force (Infinity = unlimited, exported as +Inf). */
  setLimit: (bytesPerSec: number) => void
  setPeerLimit: (peer: string, bytesPerSec: number) => void
  forgetPeer: (peer: string) => void
}

/** Memory of the node's LevelDB databases, read when /metrics is scraped. */
export interface StorageMetrics {
  /** Reports `db`'s memory (undefined: closed) until the returned function is called. */
  watchDb: (db: string, memoryBytes: () => number | undefined) => () => void
}

export class VmeshMetrics {
  readonly registry: Registry
  readonly replication: ReplicationMetrics
  readonly replica: ReplicaMetrics
  readonly members: MemberMetrics
  readonly bandwidth: BandwidthMetrics
  readonly storage: StorageMetrics

  constructor (init: MetricsInit = {}) {
    const registry = new Registry()
    this.registry = registry
    if (init.labels !== undefined) registry.setDefaultLabels(init.labels)
    if (init.defaultMetrics !== false) collectDefaultMetrics({ register: registry })
    const registers = [registry]
    const pair = ['vm', 'target'] as const

    const acked = new Gauge({ name: 'vmesh_replication_acked_generation', help: 'Newest generation the target acknowledged as durable', labelNames: pair, registers })
    const lag = new Gauge({ name: 'vmesh_replication_lag_seconds', help: 'Age of the newest change not yet durable on the target', labelNames: pair, registers })
    const rpo = new Gauge({ name: 'vmesh_replication_rpo_seconds', help: 'Age of the newest capture point durable on the target: time since that capture began (NaN: nothing durable yet)', labelNames: pair, registers })
    const pending = new Gauge({ name: 'vmesh_replication_pending_bytes', help: 'Changed bytes not yet sent to the target', labelNames: pair, registers })
    const sent = new Counter({ name: 'vmesh_replication_sent_bytes_total', help: 'Bytes sent to the target', labelNames: pair, registers })
    const rate = new Gauge({ name: 'vmesh_replication_rate_bytes_per_second', help: 'Recent send rate to the target', labelNames: pair, registers })
    const state = new Gauge({ name: 'vmesh_replication_state', help: 'Replication state of the target, one-hot over the state label', labelNames: [...pair, 'state'] as const, registers })
    const applied = new Gauge({ name: 'vmesh_replica_applied_generation', help: 'Newest generation applied to the replica held here', labelNames: ['vm', 'source'] as const, registers })
    const member = new Gauge({ name: 'vmesh_member_state', help: 'Failure detector view of the peer, one-hot over the state label', labelNames: ['peer', 'state'] as const, registers })
    const dbs = new Map<string, () => number | undefined>()
    // eslint-disable-next-line no-new
    new Gauge({
      name: 'vmesh_leveldb_memory_bytes',
      help: 'Memory a LevelDB database holds: memtables and block cache (leveldb.approximate-memory-usage), bounded by its write buffer and cache sizes',
      labelNames: ['db'] as const,
      registers,
      collect () {
        this.reset()
        for (const [db, read] of dbs) { const v = read(); if (v !== undefined && Number.isFinite(v)) this.set({ db }, v) }
      }
    })
    // V8's memory outside its heap that it allocates itself (compiler zones, parser, …): with RSS,
    // the heap and LevelDB's figure, what is left of RSS is glibc's and the native modules'
    // eslint-disable-next-line no-new
    new Gauge({
      name: 'vmesh_v8_malloced_bytes',
      help: 'Memory V8 has malloc()ed outside its heap (compiler zones and the like): now, and the peak since start',
      labelNames: ['at'] as const,
      registers,
      collect () {
        const h = getHeapStatistics()
        this.set({ at: 'now' }, h.malloced_memory)
        this.set({ at: 'peak' }, h.peak_malloced_memory)
      }
    })
    const limit = new Gauge({ name: 'vmesh_bandwidth_limit_bytes_per_second', help: 'Bandwidth limit in force (scope node, or scope peer with the peer label); +Inf = unlimited', labelNames: ['scope', 'peer'] as const, registers })

    this.replication = {
      setAckedGeneration: (vm, target, g) => { acked.set({ vm, target }, g) },
      setLag: (vm, target, s) => { lag.set({ vm, target }, s) },
      setPendingBytes: (vm, target, b) => { pending.set({ vm, target }, b) },
      setRpo: (vm, target, s) => { rpo.set({ vm, target }, s) },
      addSentBytes: (vm, target, b) => { if (b > 0 && Number.isFinite(b)) sent.inc({ vm, target }, b) },
      setRate: (vm, target, r) => { rate.set({ vm, target }, r) },
      setState: (vm, target, s) => { for (const x of TARGET_STATES) state.set({ vm, target, state: x }, x === s ? 1 : 0) },
      forget: (vm, target) => {
        for (const g of [acked, lag, rpo, pending, sent, rate]) g.remove({ vm, target })
        for (const x of TARGET_STATES) state.remove({ vm, target, state: x })
      }
    }
    this.replica = {
      setAppliedGeneration: (vm, source, g) => { applied.set({ vm, source }, g) },
      forget: (vm, source) => { applied.remove({ vm, source }) }
    }
    this.members = {
      setState: (peer, s) => { for (const x of MEMBER_STATES) member.set({ peer, state: x }, x === s ? 1 : 0) },
      forget: (peer) => { for (const x of MEMBER_STATES) member.remove({ peer, state: x }) }
    }
    this.storage = {
      watchDb: (db, memoryBytes) => {
        dbs.set(db, memoryBytes)
        return () => { if (dbs.get(db) === memoryBytes) dbs.delete(db) }
      }
    }
    this.bandwidth = {
      setLimit: (bps) => { limit.set({ scope: 'node', peer: '' }, bps) },
      setPeerLimit: (peer, bps) => { limit.set({ scope: 'peer', peer }, bps) },
      forgetPeer: (peer) => { limit.remove({ scope: 'peer', peer }) }
    }
  }

  /** The Prometheus text exposition, for `GET /metrics`. */
  async text (): Promise<string> { return await this.registry.metrics() }

  /** The Content-Type header to serve text() with. */
  get contentType (): string { return this.registry.contentType }
}

export function createMetrics (init: MetricsInit = {}): VmeshMetrics {
  return new VmeshMetrics(init)
}
