/**
 * The replication service: everything between the change sources and the wire, for both roles.
 *  - source: one VmSource per VM this node currently sources (by default every VM in its
 *    config; the ownership layer narrows or widens that through setSourceVms()), sharing one
 *    LevelDB (`<dataDir>/source/`) and one hashing WorkerPool;
 *  - target: a ReplicationReceiver for inbound sessions and the ReplicaRegistry of stores under
 *    `<dataDir>/replicas/<source>/<vm>/`.
 * It also serves the per-VM status, recovery points, restore and verify for the control API.
 */
import { join, resolve } from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Libp2p } from '@libp2p/interface'
import type { Level } from 'level'
import type { Clock } from '../../common/clock.ts'
import { errorMessage } from '../../common/errors.ts'
import type { Config, VmConfig } from '../../config/load.ts'
import { binarySublevel, openBinaryLevel } from '../../storage/manifest/db.ts'
import { WorkerPool } from '../../storage/workers/pool.ts'
import { REPLICATION_PROTOCOL } from '../../protocol/replication/index.ts'
import type { RestoreResult, RecoveryPoint } from '../../storage/replica/index.ts'
import type { Logger } from '../log.ts'
import type { VmStatus } from '../status.ts'
import type { VmeshMetrics } from '../metrics/registry.ts'
import type { BandwidthService } from '../bandwidth/service.ts'
import type { StreamLike } from './channel.ts'
import { ReplicationReceiver, type ReceiverInit } from './receiver.ts'
import { ReplicaRegistry } from './replicas.ts'
import { VmSource } from './vm-source.ts'
import { shipFinalGeneration } from './final.ts'
import type { VerifyReport } from './sender.ts'
import { UnknownVmError, VerifyFailedError } from './errors.ts'

export interface ReplicationComponents {
  clock: Clock
  log: Logger
  libp2p: Libp2p
  bandwidth?: BandwidthService
  metrics?: VmeshMetrics
}

export interface ReplicationInit {
  config: Config
  /** Hashing threads. @default min(2, cores) */
  workers?: number
  /** fsync replica writes. @default true */
  fsync?: boolean
  receiver?: ReceiverInit
}

export interface ReplicaPoints {
  vm: string
  replicas: Array<{ from: string, appliedGeneration: number, appliedConsistentGeneration: number, seeding: boolean, points: RecoveryPoint[] }>
}

export class ReplicationService {
  private config: Config
  private db: Level<Uint8Array, Uint8Array> | undefined
  private pool: WorkerPool | undefined
  readonly replicas: ReplicaRegistry
  readonly receiver: ReplicationReceiver
  private readonly sources = new Map<string, VmSource>()
  /** VMs this node sources; null = every VM in the config. */
  private sourceVms: Set<string> | null = null
  private adopted = new Map<string, VmConfig>()
  private running = false
  private changing: Promise<void> = Promise.resolve()

  constructor (private readonly components: ReplicationComponents, private readonly init: ReplicationInit) {
    this.config = init.config
    const log = components.log
    this.replicas = new ReplicaRegistry({ clock: components.clock, log: { info: (o, m) => { log.info(o, m) }, warn: (o, m) => { log.warn(o, m) } } }, { dir: join(this.config.node.dataDir, 'replicas'), fsync: init.fsync ?? true })
    this.receiver = new ReplicationReceiver({
      clock: components.clock,
      log: log.child({ role: 'target' }),
      replicas: this.replicas,
      peerName: (id) => this.config.mesh.peers.find(p => p.id === id)?.name,
      ...(components.metrics !== undefined ? { metrics: components.metrics } : {})
    }, init.receiver ?? {})
  }

  async start (): Promise<void> {
    if (this.running) return
    this.running = true
    await this.replicas.start()
    await this.receiver.start(this.components.libp2p)
    if (this.config.vms.length > 0) await this.ensureSourceInfra()
    await this.applySources()
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    await this.changing
    for (const s of this.sources.values()) await s.stop().catch(() => {})
    this.sources.clear()
    await this.receiver.stop()
    await this.replicas.stop()
    await this.pool?.stop()
    this.pool = undefined
    await this.db?.close()
    this.db = undefined
  }

  private async ensureSourceInfra (): Promise<void> {
    if (this.db === undefined) this.db = await openBinaryLevel(join(this.config.node.dataDir, 'source'))
    if (this.pool === undefined) {
      this.pool = new WorkerPool({}, { size: this.init.workers ?? 2 })
      await this.pool.start()
    }
  }

  /** Ownership seam: the VMs this node should source (null = all configured). */
  async setSourceVms (names: string[] | null): Promise<void> {
    this.sourceVms = names === null ? null : new Set(names)
    await this.applySources()
  }

  /**
   * Ownership seam: VMs this node runs from files its config does not name (it took them over
   * and runs them from a finalized replica). Each is sourced from those files to the peers in
   * its entry; an entry replaces a configured VM of the same name.
   */
  async setAdoptedVms (vms: VmConfig[]): Promise<void> {
    this.adopted = new Map(vms.map(v => [v.name, v]))
    await this.applySources()
  }

  isSource (vm: string): boolean { return this.sources.has(vm) }

  /** Planned failover: scan the (stopped) VM, wait until `target` holds a consistent final generation. */
  async shipFinal (vm: string, target: string, timeoutMs: number): Promise<number> {
    const src = this.sources.get(vm)
    if (src === undefined) throw new UnknownVmError(vm)
    return await shipFinalGeneration(src, target, { clock: this.components.clock, timeoutMs })
  }

  /** Applies a reloaded config: targets, VMs added or removed. */
  async reload (config: Config): Promise<string[]> {
    const prev = this.config
    this.config = config
    const applied: string[] = []
    if (JSON.stringify(prev.vms) !== JSON.stringify(config.vms)) applied.push('vms')
    for (const vm of config.vms) {
      const s = this.sources.get(vm.name)
      const old = prev.vms.find(v => v.name === vm.name)
      if (s !== undefined && old !== undefined && sameFiles(old, vm)) await s.reconfigure(vm)
      else if (s !== undefined) { await s.stop(); this.sources.delete(vm.name) }
    }
    await this.applySources()
    return applied
  }

  private async applySources (): Promise<void> {
    const run = this.changing.then(async () => {
      if (!this.running) return
      const want = new Map(this.config.vms.filter(v => this.sourceVms === null || this.sourceVms.has(v.name)).map(v => [v.name, v]))
      for (const [name, vm] of this.adopted) want.set(name, vm)
      for (const [name, s] of this.sources) {
        const w = want.get(name)
        if (w === undefined || !sameFiles(s.vm, w)) { await s.stop(); this.sources.delete(name) } else if (JSON.stringify(s.vm.replicateTo) !== JSON.stringify(w.replicateTo)) await s.reconfigure(w)
      }
      for (const [name, vm] of want) {
        if (this.sources.has(name)) continue
        await this.ensureSourceInfra()
        await this.forgetIfOtherFiles(vm)
        const s = this.newSource(vm)
        try {
          await s.start()
          this.sources.set(name, s)
        } catch (err) {
          this.components.log.error({ vm: name, err: errorMessage(err) }, 'could not start replicating the VM')
          await s.stop().catch(() => {})
        }
      }
    })
    this.changing = run.catch(() => {})
    await run
  }

  /**
   * A VM's books, dirty maps and manifest describe one set of files. When the VM is sourced
   * from other files (taken over from a replica, or back on its home files), what its targets
   * acknowledged no longer applies: start afresh (targets then compare hashes, seed: existing).
   */
  private async forgetIfOtherFiles (vm: VmConfig): Promise<void> {
    const db = this.db as Level<Uint8Array, Uint8Array>
    const marks = binarySublevel(db, 'sourced-files')
    const key = new TextEncoder().encode(vm.name)
    const files = JSON.stringify([...vm.disks, ...vm.files].map(f => resolve(f)))
    const prev = await marks.get(key)
    if (prev !== undefined && new TextDecoder().decode(prev) === files) return
    if (prev !== undefined) {
      await binarySublevel(db, `vm-${vm.name}`).clear()
      this.components.log.info({ vm: vm.name }, 'VM now sourced from other files; its targets are compared afresh')
    }
    await marks.put(key, new TextEncoder().encode(files))
  }

  private newSource (vm: VmConfig): VmSource {
    const { clock, log, libp2p, bandwidth, metrics } = this.components
    return new VmSource({
      clock,
      log: log.child({ role: 'source' }),
      db: this.db as Level<Uint8Array, Uint8Array>,
      ...(this.pool !== undefined ? { pool: this.pool } : {}),
      dial: async (peer: string, signal: AbortSignal): Promise<StreamLike> => {
        const p = this.config.mesh.peers.find(x => x.name === peer)
        if (p === undefined) throw new UnknownVmError(`peer ${peer}`)
        const stream = await libp2p.dialProtocol(peerIdFromString(p.id), REPLICATION_PROTOCOL, { signal, runOnLimitedConnection: false })
        return stream as unknown as StreamLike
      },
      ...(bandwidth !== undefined ? { limiterFor: (peer: string, name: string) => bandwidth.limiterFor(peer, name) } : {}),
      ...(metrics !== undefined ? { metrics } : {})
    }, { vm, nodeName: this.config.node.name })
  }

  source (vm: string): VmSource | undefined { return this.sources.get(vm) }

  /** Status entries: VMs sourced here (with targets) merged with replicas held here. */
  vmStatus (): VmStatus[] {
    const out = new Map<string, VmStatus>()
    for (const s of this.sources.values()) out.set(s.name, s.status())
    for (const { source, vm, store } of this.replicas.snapshot()) {
      const st = store.state()
      const replica = {
        from: source,
        appliedGeneration: st.appliedGeneration,
        files: st.files,
        appliedConsistentGeneration: st.appliedConsistentGeneration,
        seeding: st.seeding,
        ...(st.seeding ? { seedDurableBytes: store.seedProgress()?.durableBytes ?? 0 } : {}),
        applyingGeneration: st.applyingGeneration,
        receivingGeneration: st.receivingGeneration,
        bytesReceived: this.receiver.bytesReceived(source, vm)
      }
      const e = out.get(vm)
      if (e !== undefined) {
        if (e.replica === null) e.replica = replica
        continue
      }
      out.set(vm, { name: vm, owner: source, epoch: 0, runningHere: false, generation: st.appliedGeneration, targets: [], replica })
    }
    return [...out.values()].sort((a, b) => a.name.localeCompare(b.name))
  }

  async points (vm: string): Promise<ReplicaPoints> {
    const rs = await this.replicas.ofVm(vm)
    if (rs.length === 0) throw new UnknownVmError(vm)
    return {
      vm,
      replicas: rs.map(({ source, store }) => {
        const st = store.state()
        return { from: source, appliedGeneration: st.appliedGeneration, appliedConsistentGeneration: st.appliedConsistentGeneration, seeding: st.seeding, points: store.points() }
      })
    }
  }

  async restore (vm: string, pointId: string, toDir: string, from?: string): Promise<RestoreResult & { from: string }> {
    const rs = (await this.replicas.ofVm(vm)).filter(r => from === undefined || r.source === from)
    const r = rs.find(x => x.store.points().some(p => p.id === pointId)) ?? rs[0]
    if (r === undefined) throw new UnknownVmError(vm)
    return { ...(await r.store.restore(pointId, toDir)), from: r.source }
  }

  async verify (vm: string, repair: boolean, timeoutMs: number): Promise<{ vm: string, ok: boolean, targets: VerifyReport[] }> {
    const s = this.sources.get(vm)
    if (s === undefined) throw new UnknownVmError(vm)
    const targets: VerifyReport[] = []
    for (const t of s.vm.replicateTo) {
      const sender = s.sender(t)
      if (sender === undefined) throw new VerifyFailedError(`no sender for ${t}`)
      targets.push(await sender.verify(repair, timeoutMs))
    }
    return { vm, ok: targets.every(t => t.mismatchedBlocks === 0), targets }
  }
}

function sameFiles (a: VmConfig, b: VmConfig): boolean {
  return JSON.stringify([a.disks, a.files, a.blockSizeBytes, a.scanIntervalMs, a.quietBudgetMs]) === JSON.stringify([b.disks, b.files, b.blockSizeBytes, b.scanIntervalMs, b.quietBudgetMs])
}
