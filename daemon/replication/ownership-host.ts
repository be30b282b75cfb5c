/**
 * Replication's side of ownership (the OwnershipHost the OwnershipService calls), written
 * against the ReplicaSeam alone: which files to start a VM from here, finalizing the replica
 * before a start, reporting replica generations to the election, and moving the source role
 * with ownership.
 *
 * Replica generations are pushed: every change replication reports (a generation committed, a
 * replica opened, finalized or removed) recomputes that VM's best generation, and ownership
 * hears it only when it differs from the last one reported. Moves are serialized on one chain
 * (seed the new owner's replica, then re-derive what this node sources).
 */
import { join } from 'node:path'
import { errorMessage } from '../../common/errors.ts'
import type { VmConfig } from '../../config/load.ts'
import type { Logger } from '../log.ts'
import type { VmStartFiles } from '../hypervisor/driver.ts'
import type { OwnershipHost } from '../ownership/service.ts'
import type { GenerationRef } from '../ownership/types.ts'
import { compareGeneration } from '../ownership/rank.ts'
import type { Startable } from '../startable.ts'
import { adoptedVmConfig, type VmPolicy } from './failback.ts'
import { NoReplicaError } from './errors.ts'
import type { ReplicaSeam } from './seam.ts'
import { splitFiles } from './start-files.ts'
import type { ReplicaSummary } from './types.ts'

export { NoReplicaError } from './errors.ts'

/** What the host needs of the ownership service (reported to, asked for policies). */
export interface OwnershipFeed {
  /** The best replica generation held here for `vm` (null: none usable). */
  replicaApplied: (vm: string, generation: GenerationRef | null) => void
  /** The VM's policy as ownership knows it (learned from its home node). */
  specOf: (vm: string) => VmPolicy | undefined
}

export interface OwnershipHostComponents {
  log: Logger
  replication: ReplicaSeam
  ownership: OwnershipFeed
}

/** The slice of the config the host uses. */
export interface OwnershipHostSettings {
  /** This node's name. */
  node: string
  /** `<dataDir>/run`: the run folder of VMs started from their configured files. */
  runDir: string
  /** The VMs this node's config lists (it is their home). */
  vms: VmConfig[]
  /** Peers that may hold VMs (hosts, not witnesses). */
  hostPeers: string[]
}

export interface OwnershipHostInit extends OwnershipHostSettings {
  /** How long a planned failover waits for the target to hold the final generation. @default 120000 */
  finalShipTimeoutMs?: number
}

export class ReplicationOwnershipHost implements OwnershipHost, Startable<OwnershipHostSettings> {
  private settings: OwnershipHostSettings
  private readonly reported = new Map<string, string>()
  private readonly owners = new Map<string, { owner: string, epoch: number }>()
  /** vm/source → the latest epoch that source owned the VM at (this process's memory). */
  private readonly pastOwners = new Map<string, number>()
  private unsubscribe?: () => void
  private chain: Promise<void> = Promise.resolve()
  /** vm/source of superseded replicas queued for removal */
  private readonly removing = new Set<string>()
  /**
   * vm → the generation the current owner's replica here held when that owner took the VM
   * (0: none). A replica kept from an earlier tenure of the same node (owner A → B → A) holds
   * A's old data until A's first generation lands: only past this does it supersede B's.
   */
  private readonly ownerBase = new Map<string, number>()

  constructor (private readonly components: OwnershipHostComponents, private readonly init: OwnershipHostInit) {
    this.settings = { node: init.node, runDir: init.runDir, vms: init.vms, hostPeers: init.hostPeers }
  }

  /** Starts reporting replica generations (every VM's now, then on each change). */
  start (): void {
    if (this.unsubscribe !== undefined) return
    this.unsubscribe = this.components.replication.onReplicaChange((vm) => { this.report(vm) })
    for (const vm of new Set(this.components.replication.replicaSummaries().map(r => r.vm))) this.report(vm)
  }

  /**
   * Stops reporting. A move in flight is not awaited (as before the seam): a daemon stop must
   * finish well inside its 5 s budget, and replication, stopped next, ends what it was doing.
   */
  stop (): void {
    this.unsubscribe?.()
    this.unsubscribe = undefined
  }

  /** A reload: VMs added here are owned here from epoch 0, so replication sources them now. */
  reload (next: OwnershipHostSettings, _prev?: OwnershipHostSettings): string[] {
    this.settings = next
    this.refreshSources()
    return []
  }

  /**
   * A generation is tagged with the epoch its source owned the VM at, like a log entry with its
   * term: after a failover, a replica of the new owner outranks any replica of an old one,
   * whatever their generation numbers (each source counts its own).
   */
  private report (vm: string): void {
    this.dropSuperseded(vm)
    let best: GenerationRef | null | undefined
    for (const r of this.components.replication.replicaSummaries(vm)) {
      const gen = r.seeding || r.appliedGeneration === 0 || r.finalized ? null : { epoch: this.epochOf(vm, r.source), generation: r.appliedConsistentGeneration > 0 ? r.appliedConsistentGeneration : r.appliedGeneration }
      if (best === undefined || compareGeneration(gen, best ?? null) > 0) best = gen
    }
    if (best === undefined) return
    const key = JSON.stringify(best)
    if (this.reported.get(vm) === key) return
    this.reported.set(vm, key)
    this.components.ownership.replicaApplied(vm, best)
  }

  /**
   * A replica holder keeps one store per source. Once the current owner's replica here is
   * whole (seeded, not finalized), a replica of the same VM from a former owner is superseded:
   * ownership ranks it below (a lower epoch), failover and failback seed from the current one,
   * and it would hold a full copy and its undo logs forever. It is deleted — its older recovery
   * points with it (README, "Replicas"). Never: while this node owns the VM, a finalized store
   * (a VM may run from it), the current owner's own replica, or before the owner's replica is
   * complete and holds a generation of its current tenure (before that the old one may be the
   * newest copy here: a replica kept from the same owner's earlier tenure is stale until the
   * owner's first generation lands). At most one removal per source is
   * queued at a time; the service refuses while that source still has a session open.
   */
  private dropSuperseded (vm: string): void {
    const o = this.owners.get(vm)
    if (o === undefined || o.owner === this.settings.node) return
    const reps = this.components.replication.replicaSummaries(vm)
    if (this.currentWhole(vm, o.owner) === undefined) return
    for (const r of reps) {
      if (r.source === o.owner || r.finalized) continue
      const key = `${vm}/${r.source}`
      if (this.removing.has(key)) continue
      this.removing.add(key)
      this.serial(async () => {
        try {
          // the owner may have changed meanwhile: decide again
          const now = this.owners.get(vm)
          if (now === undefined || now.owner === this.settings.node || now.owner === r.source) return
          if (this.currentWhole(vm, now.owner) === undefined) return
          await this.components.replication.removeSupersededReplica(vm, r.source)
        } finally { this.removing.delete(key) }
      })
    }
  }

  /**
   * The replica of `vm` from its current `owner` here, if it is whole and holds a generation
   * the owner sent since it took the VM (not only what it held from an earlier tenure).
   */
  private currentWhole (vm: string, owner: string): ReplicaSummary | undefined {
    const base = this.ownerBase.get(vm) ?? 0
    return this.components.replication.replicaSummaries(vm).find(r => r.source === owner && r.appliedGeneration > 0 && r.appliedGeneration > base && !r.seeding && !r.finalized)
  }

  /** The epoch `source` owned `vm` at, as far as this node knows (0: its home, before any move). */
  private epochOf (vm: string, source: string): number {
    const o = this.owners.get(vm)
    if (o?.owner === source) return o.epoch
    return this.pastOwners.get(`${vm}/${source}`) ?? 0
  }

  private home (vm: string): VmConfig | undefined { return this.settings.vms.find(v => v.name === vm) }

  async filesForStart (vm: string): Promise<VmStartFiles> {
    const home = this.home(vm)
    if (home !== undefined && (await this.components.replication.finalizedFiles(vm)) === undefined) {
      return { disks: home.disks, files: home.files, dir: join(this.settings.runDir, vm) }
    }
    const files = await this.components.replication.replicaFilesForStart(vm)
    if (files === undefined) throw new NoReplicaError(vm)
    return files
  }

  async finalize (vm: string, generation: GenerationRef | null, point?: string): Promise<void> {
    const { log, replication } = this.components
    try {
      const r = await replication.finalizeForStart(vm, { ...(generation !== null ? { generation: generation.generation } : {}), ...(point !== undefined ? { point } : {}) })
      if (r === null) {
        if (this.home(vm) !== undefined) return
        throw new NoReplicaError(vm)
      }
      if (point !== undefined) log.warn({ vm, point, generation: r.generation, rolledBack: r.rolledBack }, 'replica finalized at the requested recovery point')
      else log.warn({ vm, generation: r.generation, rolledBack: r.rolledBack, consistent: r.consistent, fuzzy: r.fuzzy }, 'replica finalized for failover')
    } finally {
      // the VM runs from this replica from now on: it becomes what this node sources
      this.refreshSources()
    }
  }

  /** Planned failover, on the owner after its VM stopped: the final generation, durable on `to`. */
  async shipFinal (vm: string, to: string, signal?: AbortSignal): Promise<GenerationRef> {
    const generation = await this.components.replication.shipFinal(vm, to, this.init.finalShipTimeoutMs ?? 120_000, signal)
    this.components.log.info({ vm, to, generation }, 'final generation acknowledged by the planned target')
    return { epoch: this.owners.get(vm)?.epoch ?? 0, generation }
  }

  demoted (vm: string, owner: string, epoch: number): void {
    this.components.log.warn({ vm, owner, epoch }, 'this node no longer owns the VM; its copy seeds the replica it now receives')
  }

  ownerChanged (vm: string, owner: string, epoch: number): void {
    if (this.owners.get(vm)?.owner !== owner) {
      const held = this.components.replication.replicaSummaries(vm).find(r => r.source === owner)
      this.ownerBase.set(vm, held?.appliedGeneration ?? 0)
    }
    this.owners.set(vm, { owner, epoch })
    this.pastOwners.set(`${vm}/${owner}`, epoch)
    // the epoch tags of this VM's replicas may have changed
    this.report(vm)
    this.serial(async () => {
      if (owner !== this.settings.node) await this.seedFor(vm, owner)
      await this.applySources()
    })
  }

  /** Re-derives what this node sources (after a finalize: the replica it now runs from). */
  refreshSources (): void { this.serial(async () => { await this.applySources() }) }

  /** Resolves when the ownership-driven replication changes queued so far are done. */
  async settled (): Promise<void> { await this.chain }

  ownerOf (vm: string): { owner: string, epoch: number } | undefined { return this.owners.get(vm) }

  private serial (fn: () => Promise<void>): void {
    this.chain = this.chain.then(fn).catch((err) => { this.components.log.error({ error: errorMessage(err) }, 'could not move replication with ownership') })
  }

  /**
   * Sources what this node owns: configured VMs from their files while it runs them from
   * there, and any VM it runs from a finalized replica from that replica's files (adopted).
   */
  private async applySources (): Promise<void> {
    const { node: self, vms, hostPeers } = this.settings
    const { replication, ownership } = this.components
    const sourced: string[] = []
    const adopted: VmConfig[] = []
    for (const vm of new Set([...vms.map(v => v.name), ...this.owners.keys()])) {
      const o = this.owners.get(vm)
      const home = this.home(vm)
      if (!(o === undefined ? home !== undefined : o.owner === self)) continue
      const finalized = await replication.finalizedFiles(vm)
      if (finalized === undefined) { if (home !== undefined) sourced.push(vm); continue }
      const spec = ownership.specOf(vm) ?? (home !== undefined ? { name: vm, home: self, replicateTo: home.replicateTo } : undefined)
      if (spec === undefined) continue
      const { disks, files } = splitFiles(finalized)
      adopted.push(adoptedVmConfig({ spec, self, ...(home !== undefined ? { home } : {}), disks, files, isPeer: (n) => hostPeers.includes(n) }))
    }
    await replication.setAdoptedVms(adopted)
    await replication.setSourceVms(sourced)
  }

  /** `owner` now sources `vm`: our copy becomes the seed of its replica here. */
  private async seedFor (vm: string, owner: string): Promise<void> {
    const home = this.home(vm)
    const homeCopy = home !== undefined ? [...home.disks, ...home.files].map(p => ({ source: p, local: p })) : undefined
    const placed = await this.components.replication.seedFromLocalCopy(vm, owner, homeCopy)
    if (placed !== undefined) this.components.log.info({ vm, owner, seed: placed.dir, files: placed.files }, 'local copy placed as the seed of the new owner\'s replica; only differing blocks will be sent')
  }
}
