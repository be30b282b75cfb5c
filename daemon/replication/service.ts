/**
 * The replication service: everything between the change sources and the wire, for both roles.
 *  - source: one VmSource per VM this node currently sources (by default every VM in its
 *    config; the ownership layer narrows or widens that through setSourceVms()), sharing one
 *    LevelDB (`<dataDir>/source/`) and one hashing WorkerPool;
 *  - target: a ReplicationReceiver for inbound sessions and the ReplicaRegistry of stores under
 *    `<dataDir>/replicas/<source>/<vm>/`.
 * It also serves the per-VM status, recovery points, restore and verify for the control API
 * (api.ts, registered at construction), and implements the ownership seam (seam.ts): replica
 * summaries and change events, finalize-for-start, files-for-start, seed-from-local-copy,
 * final shipping, and which VMs this node sources.
 */
import { join, resolve } from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Libp2p } from '@libp2p/interface'
import type { Level } from 'level'
import type { Clock } from '../../common/clock.ts'
import { errorMessage } from '../../common/errors.ts'
import type { Config, VmConfig } from '../../config/load.ts'
import { binarySublevel, levelMemoryBytes, openBinaryLevel } from '../../storage/manifest/db.ts'
import { WorkerPool } from '../../storage/workers/pool.ts'
import { ContentIndex, DEFAULT_CONTENT_INDEX_MAX_ENTRIES, type ContentIndexStats } from '../../storage/content-index/index.ts'
import { replicationProtocols } from '../../protocol/replication/index.ts'
import type { RestoreResult } from '../../storage/replica/index.ts'
import type { Logger } from '../log.ts'
import type { VmStatus } from '../status.ts'
import type { VmeshMetrics } from '../metrics/registry.ts'
import type { BandwidthService } from '../bandwidth/service.ts'
import { ScanReadBudget } from '../bandwidth/scan-budget.ts'
import type { StreamLike } from './channel.ts'
import { ReplicationReceiver, type ReceiverInit } from './receiver.ts'
import { ReplicaRegistry } from './replicas.ts'
import { VmSource, vmSublevelName, type VmSourceComponents } from './vm-source.ts'
import { changeSourceKind } from './told-source-runner.ts'
import { qemuQmpSocketOf } from '../hypervisor/qemu.ts'
import type { HypervDriver } from '../hypervisor/hyperv.ts'
import { shipFinalGeneration } from './final.ts'
import type { VerifyReport } from './sender.ts'
import { UnknownVmError, VerifyFailedError } from './errors.ts'
import type { VmStartFiles } from '../hypervisor/driver.ts'
import type { RouteRegistry } from '../api/routes.ts'
import type { Startable } from '../startable.ts'
import { registerReplicationRoutes } from './api.ts'
import { nodeScanIO } from '../../storage/changes/file-io.ts'
import { placeSeed } from './failback.ts'
import type { FinalizeOutcome, ReplicaSeam } from './seam.ts'
import { startFiles } from './start-files.ts'
import { OperationTracker } from './operations.ts'
import type { OperationStatus } from '../status.ts'
import type { CopyFile, ReplicaPoints, ReplicaSummary } from './types.ts'

export type { ReplicaPoints } from './types.ts'

export interface ReplicationComponents {
  clock: Clock
  log: Logger
  libp2p: Libp2p
  bandwidth?: BandwidthService
  metrics?: VmeshMetrics
  /** Where its control API routes are registered (the daemon's API server). */
  api?: Pick<RouteRegistry, 'route'>
  /** The Hyper-V driver, for `changeSource: rct` VMs. */
  hyperv?: Pick<HypervDriver, 'rct' | 'runningId'>
}

/** The slice of the config replication uses (components.ts derives it; reload passes it again). */
export interface ReplicationSettings {
  /** This node's name (the `sourceNode` of its hellos). */
  nodeName: string
  /** Replicas under `<dataDir>/replicas`, source books under `<dataDir>/source`. */
  dataDir: string
  /** Every peer by name and libp2p peer ID. */
  peers: Array<{ name: string, id: string }>
  /** The VMs this node's config lists. */
  vms: VmConfig[]
  /** `scan:` — the host-wide read budget of the hash scan (Infinity: unbounded). */
  scan: Config['scan']
  /** `hypervisor.driver`: with `qemu`, `changeSource: auto` VMs use dirty bitmaps. @default 'none' */
  hypervisorDriver?: string
  /** `contentIndex:` of this node as a replica holder (read at start). @default enabled, 2 Mi entries */
  contentIndex?: { enabled: boolean, maxEntries: number }
}

export interface ReplicationInit extends ReplicationSettings {
  /** Hashing threads. @default min(2, cores) */
  workers?: number
  /** fsync replica writes. @default true */
  fsync?: boolean
  receiver?: ReceiverInit
}

export class ReplicationService implements ReplicaSeam, Startable<ReplicationSettings> {
  private config: ReplicationSettings
  private db: Level<Uint8Array, Uint8Array> | undefined
  private pool: WorkerPool | undefined
  private contentIndex: ContentIndex | undefined
  readonly replicas: ReplicaRegistry
  readonly receiver: ReplicationReceiver
  private readonly sources = new Map<string, VmSource>()
  /** VMs this node sources; null = every VM in the config. */
  private sourceVms: Set<string> | null = null
  private adopted = new Map<string, VmConfig>()
  private running = false
  private changing: Promise<void> = Promise.resolve()
  private readonly replicaListeners = new Set<(vm: string) => void>()
  /** `scan.budget`: one read budget shared by every VM's hash scan on this host. */
  readonly scanBudget: ScanReadBudget
  /** Verify, restore and final ships with their byte progress (status `operations`). */
  readonly operations: OperationTracker

  constructor (private readonly components: ReplicationComponents, private readonly init: ReplicationInit) {
    this.config = { nodeName: init.nodeName, dataDir: init.dataDir, peers: init.peers, vms: init.vms, scan: init.scan, ...(init.hypervisorDriver !== undefined ? { hypervisorDriver: init.hypervisorDriver } : {}), ...(init.contentIndex !== undefined ? { contentIndex: init.contentIndex } : {}) }
    this.scanBudget = new ScanReadBudget({ clock: components.clock }, { rateBytesPerSec: this.config.scan.budgetBytesPerSec })
    this.operations = new OperationTracker({ clock: components.clock })
    const log = components.log
    this.replicas = new ReplicaRegistry({ clock: components.clock, log: { info: (o, m) => { log.info(o, m) }, warn: (o, m) => { log.warn(o, m) } } }, { dir: join(this.config.dataDir, 'replicas'), fsync: init.fsync ?? true })
    this.receiver = new ReplicationReceiver({
      clock: components.clock,
      log: log.child({ role: 'target' }),
      replicas: this.replicas,
      peerName: (id) => this.config.peers.find(p => p.id === id)?.name,
      onApplied: (_source, vm) => { this.replicaChanged(vm) },
      retentionOf: (vm) => {
        const rp = this.config.vms.find(v => v.name === vm)?.recoveryPoints
        return rp !== undefined ? { maxPoints: rp.count, keepAllWithinMs: rp.keepAllWithinMs, hourlyBeyond: rp.hourlyBeyond } : undefined
      },
      ...(components.metrics !== undefined ? { metrics: components.metrics } : {}),
      // opened in start(); until then (and when disabled) nothing is held by content
      contentIndex: {
        add: (hash, loc) => this.contentIndex?.add(hash, loc) ?? false,
        fetchMany: async (wanted, signal) => await this.contentIndex?.fetchMany(wanted, signal) ?? wanted.map(() => undefined)
      }
    }, init.receiver ?? {})
    if (components.api !== undefined) registerReplicationRoutes(components.api, this)
  }

  /** `contentIndex.enabled` as read at start (a change needs a restart). */
  private contentIndexEnabled (): boolean { return this.config.contentIndex?.enabled === true }

  /** The config slice in force (after the latest reload). */
  settings (): Readonly<ReplicationSettings> { return this.config }

  async start (): Promise<void> {
    if (this.running) return
    this.running = true
    await this.replicas.start()
    const ci = this.config.contentIndex ?? { enabled: false, maxEntries: DEFAULT_CONTENT_INDEX_MAX_ENTRIES }
    if (ci.enabled) {
      try {
        const index = await ContentIndex.open({ log: this.components.log }, { dir: join(this.config.dataDir, 'content-index'), root: resolve(this.config.dataDir, 'replicas'), maxEntries: ci.maxEntries })
        this.contentIndex = index
        this.components.metrics?.storage.watchDb('content-index', () => index.memoryBytes())
      } catch (err) {
        // a hint only: without it every block travels as data
        this.components.log.warn({ err: errorMessage(err) }, 'content index could not be opened; blocks this node holds will be received again')
      }
    }
    for (const vm of new Set(this.replicas.snapshot().map(r => r.vm))) this.replicaChanged(vm)
    await this.receiver.start(this.components.libp2p, replicationProtocols(this.contentIndexEnabled()))
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
    await this.contentIndex?.close().catch(() => {})
    this.contentIndex = undefined
    await this.pool?.stop()
    this.pool = undefined
    await this.db?.close()
    this.db = undefined
  }

  private async ensureSourceInfra (): Promise<void> {
    if (this.db === undefined) {
      const db = await openBinaryLevel(join(this.config.dataDir, 'source'))
      this.db = db
      this.components.metrics?.storage.watchDb('source', () => levelMemoryBytes(db))
    }
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
    const out: VmConfig[] = []
    for (const v of vms) {
      // not this node's VM: its `recoveryPoints` are the home's, as the finalized replica last
      // heard them from its source (else the defaults would go to every target from now on)
      const heard = this.config.vms.some(c => c.name === v.name) ? undefined : (await this.replicas.ofVm(v.name)).find(r => r.store.state().finalized)?.store.sourceRetention()
      out.push(heard !== undefined ? { ...v, recoveryPoints: { count: heard.maxPoints, keepAllWithinMs: heard.keepAllWithinMs, hourlyBeyond: heard.hourlyBeyond } } : v)
    }
    this.adopted = new Map(out.map(v => [v.name, v]))
    await this.applySources()
  }

  isSource (vm: string): boolean { return this.sources.has(vm) }

  /** Planned failover: scan the (stopped) VM, wait until `target` holds a consistent final generation. */
  async shipFinal (vm: string, target: string, timeoutMs: number, signal?: AbortSignal): Promise<number> {
    const src = this.sources.get(vm)
    if (src === undefined) throw new UnknownVmError(vm)
    const op = this.operations.begin('final-ship', vm, { peer: target, phase: 'scanning the stopped VM' })
    try {
      const g = await shipFinalGeneration(src, target, { clock: this.components.clock, timeoutMs, ...(signal !== undefined ? { signal } : {}), onProgress: (done, total, phase) => { op.update(done, total, phase) } })
      op.finish(`final generation ${g} acknowledged by ${target}`)
      return g
    } catch (err) { op.fail(err); throw err }
  }

  /** The content index's counters (undefined: disabled or not open). */
  contentIndexStats (): ContentIndexStats | undefined { return this.contentIndex?.stats() }

  /** Long operations running here and the last ones finished, with their byte progress. */
  operationStatus (): OperationStatus[] { return this.operations.list() }

  /** Applies a reloaded config: peers, targets, VMs added or removed. */
  async reload (config: ReplicationSettings, _prev?: ReplicationSettings): Promise<string[]> {
    const prev = this.config
    this.config = { ...config }
    const applied: string[] = []
    if (JSON.stringify(prev.vms) !== JSON.stringify(config.vms)) applied.push('vms')
    if (prev.scan.budgetBytesPerSec !== config.scan.budgetBytesPerSec) {
      this.scanBudget.setRate(config.scan.budgetBytesPerSec)
      applied.push('scan')
    }
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
      await binarySublevel(db, vmSublevelName(vm.name)).clear()
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
        const p = this.config.peers.find(x => x.name === peer)
        if (p === undefined) throw new UnknownVmError(`peer ${peer}`)
        // newest first: an older target settles on 1.0.0 (the sender then leaves retention out)
        const stream = await libp2p.dialProtocol(peerIdFromString(p.id), [...replicationProtocols(this.contentIndexEnabled())], { signal, runOnLimitedConnection: false })
        return stream as unknown as StreamLike
      },
      ...(bandwidth !== undefined ? { limiterFor: (peer: string, name: string) => bandwidth.limiterFor(peer, name) } : {}),
      ...(metrics !== undefined ? { metrics } : {}),
      scanBudget: this.scanBudget,
      ...(changeSourceKind(vm, this.config.hypervisorDriver ?? 'none') === 'qemu-bitmap' ? { qmpSocket: async () => vm.qmpPath ?? await qemuQmpSocketOf(join(this.config.dataDir, 'hypervisor'), vm.name), fleeceDir: join(this.config.dataDir, 'fleece') } : {}),
      // the Hyper-V driver is here only when hypervisor.driver is hyperv (config/schema.ts requires it for rct)
      ...(vm.changeSource === 'rct' && this.components.hyperv !== undefined ? { rct: hypervRct(this.components.hyperv, vm.name, join(this.config.dataDir, 'hypervisor')) } : {})
    }, { vm, nodeName: this.config.nodeName })
  }

  source (vm: string): VmSource | undefined { return this.sources.get(vm) }


  // ── the ownership seam (seam.ts) ────────────────────────────────────────────────────────

  onReplicaChange (fn: (vm: string) => void): () => void {
    this.replicaListeners.add(fn)
    return () => { this.replicaListeners.delete(fn) }
  }

  private replicaChanged (vm: string): void {
    for (const fn of this.replicaListeners) {
      try { fn(vm) } catch (err) { this.components.log.warn({ vm, error: errorMessage(err) }, 'replica change listener failed') }
    }
  }

  replicaSummaries (vm?: string): ReplicaSummary[] {
    return this.replicas.snapshot().filter(r => vm === undefined || r.vm === vm).map(({ source, vm, store }) => {
      const st = store.state()
      return { vm, source, appliedGeneration: st.appliedGeneration, appliedConsistentGeneration: st.appliedConsistentGeneration, seeding: st.seeding, finalized: st.finalized }
    })
  }

  async finalizeForStart (vm: string, opts: { generation?: number, point?: string }): Promise<FinalizeOutcome | null> {
    const reps = await this.replicas.ofVm(vm)
    if (reps.length === 0) return null
    const rep = reps.sort((a, b) => b.store.state().appliedConsistentGeneration - a.store.state().appliedConsistentGeneration)[0]!
    if (rep.store.state().finalized) return { generation: rep.store.state().appliedGeneration, rolledBack: 0, fuzzy: false }
    try {
      if (opts.point !== undefined) {
        // the operator chose this point: no silent fallback to another one
        const r = await rep.store.finalize({ pointId: opts.point })
        return { generation: r.generation, rolledBack: r.rolledBack, consistent: r.consistent, fuzzy: false }
      }
      try {
        const r = await rep.store.finalize(opts.generation !== undefined && opts.generation > 0 ? { pointId: String(opts.generation) } : {})
        return { generation: r.generation, rolledBack: r.rolledBack, consistent: r.consistent, fuzzy: false }
      } catch (err) {
        // no consistent point (e.g. a disk that was never quiet): start from the latest fuzzy state
        // rather than not at all, and say so loudly
        this.components.log.error({ vm, error: errorMessage(err) }, 'no consistent recovery point; finalizing at the latest (fuzzy) generation')
        const r = await rep.store.finalize({ acceptFuzzy: true })
        return { generation: r.generation, rolledBack: r.rolledBack, consistent: r.consistent, fuzzy: true }
      }
    } finally { this.replicaChanged(vm) }
  }

  async replicaFilesForStart (vm: string): Promise<VmStartFiles | undefined> {
    const reps = await this.replicas.ofVm(vm)
    const rep = reps.find(r => r.store.state().finalized) ?? reps[0]
    if (rep === undefined) return undefined
    return startFiles(rep.store.state().files, this.replicas.dirOf(rep.source, vm))
  }

  async finalizedFiles (vm: string): Promise<Record<string, string> | undefined> {
    return (await this.replicas.ofVm(vm)).find(r => r.store.state().finalized)?.store.state().files
  }

  async seedFromLocalCopy (vm: string, owner: string, homeCopy?: CopyFile[]): Promise<{ dir: string, files: number } | undefined> {
    const reps = await this.replicas.ofVm(vm)
    const fromOwner = reps.find(r => r.source === owner)
    const finalized = reps.find(r => r.store.state().finalized)
    if (fromOwner !== undefined && fromOwner.store.state().appliedGeneration > 0 && !fromOwner.store.state().finalized) {
      // no seed needed — but a finalized store this node ran the VM from is stale from now on
      // (the owner's replica here moves on): left in place, a later win here (owner A → B → A)
      // would start the VM from it again and lose B's writes
      if (finalized !== undefined) await this.dropFinalized(vm, finalized.source)
      return undefined
    }
    const others = reps.filter(r => r.source !== owner && !r.store.state().finalized).sort((a, b) => b.store.state().appliedGeneration - a.store.state().appliedGeneration)
    const filesOf = (st: { files: Record<string, string> }): CopyFile[] => Object.entries(st.files).map(([source, local]) => ({ source, local }))
    let copy: CopyFile[] | undefined
    if (finalized !== undefined) copy = filesOf(finalized.store.state())
    else if (homeCopy !== undefined) copy = homeCopy
    else if (others[0] !== undefined && others[0].store.state().appliedGeneration > 0) copy = filesOf(others[0].store.state())
    if (copy === undefined || copy.length === 0) return undefined
    const dir = this.replicas.seedDirOf(owner, vm)
    const placed = await placeSeed(dir, copy)
    // seed copies placed for earlier owners that never used them are abandoned: only the
    // current owner's session reads a seed, and a seed is only a head start for the hash
    // comparison (never a replica ownership counts), so dropping one costs bandwidth at most
    for (const other of await this.replicas.seedSourcesOf(vm)) {
      if (other === owner) continue
      await this.replicas.removeSeed(other, vm).catch((err) => { this.components.log.warn({ vm, source: other, err: errorMessage(err) }, 'could not remove an abandoned seed copy') })
    }
    // a finalized replica takes no more generations: the new owner's session needs a fresh store
    // (when the new owner is the finalized store's own source — owner A → B → A — its session may
    // already be open on it: the removal ends that session first, and the next one gets the
    // fresh store and this seed)
    if (finalized !== undefined) await this.dropFinalized(vm, finalized.source)
    return { dir, files: placed.length }
  }

  /** Deletes the finalized replica of `vm` from `source`: this node no longer runs the VM from it. */
  private async dropFinalized (vm: string, source: string): Promise<void> {
    await this.replicas.remove(source, vm)
    this.components.log.info({ vm, source }, 'finalized replica removed: another node owns the VM now')
    this.replicaChanged(vm)
  }

  async removeSupersededReplica (vm: string, source: string): Promise<boolean> {
    const r = (await this.replicas.ofVm(vm)).find(x => x.source === source)
    if (r === undefined || r.store.state().finalized || this.receiver.hasSession(source, vm)) return false
    // ifUnused: a session of that source that got its store after the check above keeps it
    if (!await this.replicas.remove(source, vm, { ifUnused: true })) return false
    await this.replicas.removeSeed(source, vm)
    this.components.log.info({ vm, source }, 'replica from a former owner removed: the current owner\'s replica here is complete')
    this.replicaChanged(vm)
    return true
  }

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
        finalized: st.finalized,
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

  /** Materializes a recovery point; `opId` names its entry in `operations` (the CLI follows it). */
  async restore (vm: string, pointId: string, toDir: string, from?: string, opId?: string): Promise<RestoreResult & { from: string }> {
    const rs = (await this.replicas.ofVm(vm)).filter(r => from === undefined || r.source === from)
    const r = rs.find(x => x.store.points().some(p => p.id === pointId)) ?? rs[0]
    if (r === undefined) throw new UnknownVmError(vm)
    const op = this.operations.begin('restore', vm, { ...(opId !== undefined ? { id: opId } : {}), peer: r.source, phase: `restoring point ${pointId}` })
    try {
      const out = await r.store.restore(pointId, toDir, { onProgress: (p) => { op.update(p.doneBytes, p.totalBytes, p.phase === 'copy' ? 'copying the replica files' : 'rolling back to the point') } })
      op.finish(`restored point ${pointId} (generation ${out.generation})`)
      return { ...out, from: r.source }
    } catch (err) { op.fail(err); throw err }
  }

  /**
   * Compares the source with every target, one after the other; `opId` names its entry in
   * `operations`, whose bytes are the source files read (their sizes, once per target).
   */
  async verify (vm: string, repair: boolean, timeoutMs: number, opId?: string): Promise<{ vm: string, ok: boolean, targets: VerifyReport[] }> {
    const s = this.sources.get(vm)
    if (s === undefined) throw new UnknownVmError(vm)
    let size = 0
    for (const f of s.files) size += await nodeScanIO.stat(f.path).then(st => st.size, () => 0)
    const list = s.vm.replicateTo
    const op = this.operations.begin('verify', vm, { ...(opId !== undefined ? { id: opId } : {}), totalBytes: size * list.length, phase: 'waiting for the targets' })
    try {
      const targets: VerifyReport[] = []
      let done = 0
      for (const t of list) {
        const sender = s.sender(t)
        if (sender === undefined) throw new VerifyFailedError(`no sender for ${t}`)
        op.update(done, undefined, `waiting for ${t} to be in sync`)
        const base = done
        let read = 0
        targets.push(await sender.verify(repair, timeoutMs, (n) => { read += n; op.update(base + read, undefined, `comparing with ${t}`) }))
        // a file that grew or shrank since the total was taken: this target counts as its size
        done = base + size
      }
      const ok = targets.every(t => t.mismatchedBlocks === 0)
      op.finish(ok ? 'identical' : `${targets.reduce((n, t) => n + t.mismatchedBlocks, 0)} block(s) differ`)
      return { vm, ok, targets }
    } catch (err) { op.fail(err); throw err }
  }
}

function sameFiles (a: VmConfig, b: VmConfig): boolean {
  return JSON.stringify([a.disks, a.files, a.blockSizeBytes, a.scanIntervalMs, a.quietBudgetMs, a.changeSource, a.qmpPath]) === JSON.stringify([b.disks, b.files, b.blockSizeBytes, b.scanIntervalMs, b.quietBudgetMs, b.changeSource, b.qmpPath])
}

/** The RCT source's hooks for one VM: the driver's session, its running ID, its state file. */
function hypervRct (hv: Pick<HypervDriver, 'rct' | 'runningId'>, vm: string, stateDir: string): NonNullable<VmSourceComponents['rct']> {
  return { rct: hv.rct(), vmId: async () => await hv.runningId(vm), stateFile: join(stateDir, `rct-${encodeURIComponent(vm)}.json`) }
}
