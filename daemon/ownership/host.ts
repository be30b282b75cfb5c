/**
 * The ownership layer's view of replication: which files to start a VM from here, finalizing
 * the replica before a start, reporting replica generations to the election, and moving the
 * source role with ownership. Replica generations are polled (once a second) rather than
 * pushed: the machine only needs them for ranking and the poll keeps the layers decoupled.
 */
import { join, extname } from 'node:path'
import type { Config } from '../../config/load.ts'
import type { Clock, TimerHandle } from '../../common/clock.ts'
import { errorMessage } from '../../common/errors.ts'
import type { Logger } from '../log.ts'
import type { ReplicationService } from '../replication/service.ts'
import type { VmStartFiles } from '../hypervisor/driver.ts'
import type { OwnershipHost } from './service.ts'
import type { GenerationRef, VmSpec } from './types.ts'
import type { VmConfig } from '../../config/load.ts'
import { adoptedVmConfig, placeSeed, type CopyFile } from './failback.ts'
import { compareGeneration } from './rank.ts'
import { VmeshError } from '../../common/errors.ts'

export class NoReplicaError extends VmeshError {
  constructor (vm: string) { super('ERR_NO_REPLICA', `no replica of ${vm} is held on this node`) }
}


const DISK_EXT = new Set(['.vhd', '.vhdx', '.avhd', '.avhdx', '.img', '.raw', '.qcow2'])

export class ReplicationOwnershipHost implements OwnershipHost {
  private timer?: TimerHandle
  private readonly reported = new Map<string, string>()
  private readonly owners = new Map<string, { owner: string, epoch: number }>()
  /** vm/source → the latest epoch that source owned the VM at (this process's memory). */
  private readonly pastOwners = new Map<string, number>()

  constructor (private readonly c: { config: () => Config, replication: ReplicationService, clock: Clock, log: Logger, finalShipTimeoutMs?: number }) {}

  /**
   * Starts reporting replica generations to `report` (ownership's replicaApplied). A
   * generation is tagged with the epoch its source owned the VM at, like a log entry with its
   * term: after a failover, a replica of the new owner outranks any replica of an old one,
   * whatever their generation numbers (each source counts its own).
   */
  startReporting (report: (vm: string, generation: GenerationRef | null) => void, periodMs = 1000): void {
    const tick = async (): Promise<void> => {
      try {
        const best = new Map<string, GenerationRef | null>()
        for (const { vm, source, store } of await this.c.replication.replicas.list()) {
          const st = store.state()
          const gen = st.seeding || st.appliedGeneration === 0 || st.finalized ? null : { epoch: this.epochOf(vm, source), generation: st.appliedConsistentGeneration > 0 ? st.appliedConsistentGeneration : st.appliedGeneration }
          const prev = best.get(vm)
          if (prev === undefined || compareGeneration(gen, prev ?? null) > 0) best.set(vm, gen)
        }
        for (const [vm, gen] of best) {
          const key = JSON.stringify(gen)
          if (this.reported.get(vm) !== key) { this.reported.set(vm, key); report(vm, gen) }
        }
      } catch (err) { this.c.log.warn({ error: errorMessage(err) }, 'replica report failed') }
      this.timer = this.c.clock.setTimeout(() => { void tick() }, periodMs)
    }
    void tick()
  }

  /** The epoch `source` owned `vm` at, as far as this node knows (0: its home, before any move). */
  private epochOf (vm: string, source: string): number {
    const o = this.owners.get(vm)
    if (o?.owner === source) return o.epoch
    return this.pastOwners.get(`${vm}/${source}`) ?? 0
  }

  stopReporting (): void { this.c.clock.clearTimeout(this.timer) }

  private home (vm: string): Config['vms'][number] | undefined { return this.c.config().vms.find(v => v.name === vm) }

  async filesForStart (vm: string): Promise<VmStartFiles> {
    const cfg = this.c.config()
    const home = this.home(vm)
    const reps = await this.c.replication.replicas.ofVm(vm)
    const finalized = reps.find(r => r.store.state().finalized)
    if (home !== undefined && finalized === undefined) {
      return { disks: home.disks, files: home.files, dir: join(cfg.node.dataDir, 'run', vm) }
    }
    const rep = finalized ?? reps[0]
    if (rep === undefined) throw new NoReplicaError(vm)
    const st = rep.store.state()
    const disks: string[] = []
    const files: string[] = []
    const sourceMap: Record<string, string> = {}
    for (const [src, path] of Object.entries(st.files)) {
      sourceMap[src] = path
      if (DISK_EXT.has(extname(src).toLowerCase())) disks.push(path); else files.push(path)
    }
    return { disks, files, dir: this.c.replication.replicas.dirOf(rep.source, vm), sourceMap }
  }

  async finalize (vm: string, generation: GenerationRef | null, point?: string): Promise<void> {
    const reps = await this.c.replication.replicas.ofVm(vm)
    if (reps.length === 0) { if (this.home(vm) !== undefined) return; throw new NoReplicaError(vm) }
    const rep = reps.sort((a, b) => b.store.state().appliedConsistentGeneration - a.store.state().appliedConsistentGeneration)[0]!
    if (rep.store.state().finalized) return
    if (point !== undefined) {
      // the operator chose this point: no silent fallback to another one
      const r = await rep.store.finalize({ pointId: point })
      this.c.log.warn({ vm, point, generation: r.generation, rolledBack: r.rolledBack }, 'replica finalized at the requested recovery point')
      this.refreshSources()
      return
    }
    try {
      const r = await rep.store.finalize(generation !== null && generation.generation > 0 ? { pointId: String(generation.generation) } : {})
      this.c.log.warn({ vm, generation: r.generation, rolledBack: r.rolledBack, consistent: r.consistent }, 'replica finalized for failover')
    } catch (err) {
      // no consistent point (e.g. a disk that was never quiet): start from the latest fuzzy state
      // rather than not at all, and say so loudly
      this.c.log.error({ vm, error: errorMessage(err) }, 'no consistent recovery point; finalizing at the latest (fuzzy) generation')
      await rep.store.finalize({ acceptFuzzy: true })
    } finally {
      // the VM runs from this replica from now on: it becomes what this node sources
      this.refreshSources()
    }
  }

  /** Planned failover, on the owner after its VM stopped: the final generation, durable on `to`. */
  async shipFinal (vm: string, to: string): Promise<GenerationRef> {
    const generation = await this.c.replication.shipFinal(vm, to, this.c.finalShipTimeoutMs ?? 120_000)
    this.c.log.info({ vm, to, generation }, 'final generation acknowledged by the planned target')
    return { epoch: this.owners.get(vm)?.epoch ?? 0, generation }
  }

  demoted (vm: string, owner: string, epoch: number): void {
    this.c.log.warn({ vm, owner, epoch }, 'this node no longer owns the VM; its copy seeds the replica it now receives')
  }

  ownerChanged (vm: string, owner: string, epoch: number): void {
    this.owners.set(vm, { owner, epoch })
    this.pastOwners.set(`${vm}/${owner}`, epoch)
    const self = this.c.config().node.name
    this.serial(async () => {
      if (owner !== self) await this.seedFor(vm, owner)
      await this.applySources()
    })
  }

  /** Where ownership finds each VM's policy (the machine's view). */
  setSpecSource (fn: (vm: string) => VmSpec | undefined): void { this.specOf = fn }

  /** Re-derives what this node sources (after a finalize: the replica it now runs from). */
  refreshSources (): void { this.serial(async () => { await this.applySources() }) }

  /** Resolves when the ownership-driven replication changes queued so far are done. */
  async settled (): Promise<void> { await this.chain }

  private specOf?: (vm: string) => VmSpec | undefined
  private chain: Promise<void> = Promise.resolve()

  private serial (fn: () => Promise<void>): void {
    this.chain = this.chain.then(fn).catch((err) => { this.c.log.error({ error: errorMessage(err) }, 'could not move replication with ownership') })
  }

  /**
   * Sources what this node owns: configured VMs from their files while it runs them from
   * there, and any VM it runs from a finalized replica from that replica's files (adopted).
   */
  private async applySources (): Promise<void> {
    const cfg = this.c.config()
    const self = cfg.node.name
    const sourced: string[] = []
    const adopted: VmConfig[] = []
    for (const vm of new Set([...cfg.vms.map(v => v.name), ...this.owners.keys()])) {
      const o = this.owners.get(vm)
      const home = this.home(vm)
      if (!(o === undefined ? home !== undefined : o.owner === self)) continue
      const finalized = (await this.c.replication.replicas.ofVm(vm)).find(r => r.store.state().finalized)
      if (finalized === undefined) { if (home !== undefined) sourced.push(vm); continue }
      const spec = this.specOf?.(vm) ?? (home !== undefined ? { name: vm, home: self, replicateTo: home.replicateTo } : undefined)
      if (spec === undefined) continue
      const { disks, files } = splitFiles(finalized.store.state().files)
      adopted.push(adoptedVmConfig({ spec, self, ...(home !== undefined ? { home } : {}), disks, files, isPeer: (n) => cfg.mesh.peers.some(p => p.name === n && p.role !== 'witness') }))
    }
    await this.c.replication.setAdoptedVms(adopted)
    await this.c.replication.setSourceVms(sourced)
  }

  /**
   * `owner` now sources `vm`: our copy becomes the seed of its replica here. The copy is a
   * finalized replica we ran the VM from (deleted once linked: it takes no more generations),
   * else the home files (the VM is off here: we do not own it), else our newest replica from
   * another source (kept, with its recovery points, until the new one is seeded).
   */
  private async seedFor (vm: string, owner: string): Promise<void> {
    const reps = await this.c.replication.replicas.ofVm(vm)
    const fromOwner = reps.find(r => r.source === owner)
    if (fromOwner !== undefined && fromOwner.store.state().appliedGeneration > 0 && !fromOwner.store.state().finalized) return
    const finalized = reps.find(r => r.store.state().finalized)
    const others = reps.filter(r => r.source !== owner && !r.store.state().finalized).sort((a, b) => b.store.state().appliedGeneration - a.store.state().appliedGeneration)
    const home = this.home(vm)
    const filesOf = (st: { files: Record<string, string> }): CopyFile[] => Object.entries(st.files).map(([source, local]) => ({ source, local }))
    let copy: CopyFile[] | undefined
    if (finalized !== undefined) copy = filesOf(finalized.store.state())
    else if (home !== undefined) copy = [...home.disks, ...home.files].map(p => ({ source: p, local: p }))
    else if (others[0] !== undefined && others[0].store.state().appliedGeneration > 0) copy = filesOf(others[0].store.state())
    if (copy === undefined || copy.length === 0) return
    const dir = this.c.replication.replicas.seedDirOf(owner, vm)
    const placed = await placeSeed(dir, copy)
    // a finalized replica takes no more generations: the new owner's session needs a fresh store
    if (finalized !== undefined) await this.c.replication.replicas.remove(finalized.source, vm)
    this.c.log.info({ vm, owner, seed: dir, files: placed.length }, 'local copy placed as the seed of the new owner\'s replica; only differing blocks will be sent')
  }

  ownerOf (vm: string): { owner: string, epoch: number } | undefined { return this.owners.get(vm) }
}

function splitFiles (files: Record<string, string>): { disks: string[], files: string[] } {
  const disks: string[] = []
  const other: string[] = []
  for (const [src, path] of Object.entries(files)) {
    if (DISK_EXT.has(extname(src).toLowerCase())) disks.push(path); else other.push(path)
  }
  return { disks, files: other }
}
