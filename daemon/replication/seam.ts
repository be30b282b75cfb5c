/**
 * The replication ↔ ownership seam: what replication offers the ownership side, and nothing
 * more. ReplicationService implements it; the ownership host (ownership-host.ts) is written
 * against it alone, so nobody outside this folder touches a replica store.
 *
 *   ownership ──OwnershipHost──▶ ownership-host.ts ──ReplicaSeam──▶ ReplicationService ─▶ replica stores
 *             ◀─replicaApplied── (epoch-tagged generations) ◀─onReplicaChange (events, no polling)
 */
import type { VmConfig } from '../../config/load.ts'
import type { VmStartFiles } from '../hypervisor/driver.ts'
import type { CopyFile, ReplicaSummary } from './types.ts'

/** How a finalize went (for the log). */
export interface FinalizeOutcome {
  generation: number
  rolledBack: number
  consistent?: boolean
  /** No consistent point existed: finalized at the latest (fuzzy) generation. */
  fuzzy: boolean
}

export interface ReplicaSeam {
  /** Replicas of `vm` held here (every VM's when undefined), from the stores open now. */
  replicaSummaries: (vm?: string) => ReplicaSummary[]
  /**
   * Calls `fn(vm)` whenever a replica of `vm` changes: opened, a generation committed, seeded,
   * finalized or removed. Returns the unsubscribe function.
   */
  onReplicaChange: (fn: (vm: string) => void) => () => void
  /**
   * Rolls the replica of `vm` with the newest consistent generation to `point` (an operator's
   * choice: no fallback), else to `generation`, else to the latest consistent generation, else
   * (no consistent point at all) to the latest fuzzy one. Resolves null when no replica is held;
   * does nothing when it is already finalized.
   */
  finalizeForStart: (vm: string, opts: { generation?: number, point?: string }) => Promise<FinalizeOutcome | null>
  /** Files to start `vm` from a replica held here (the finalized one first); undefined: none held. */
  replicaFilesForStart: (vm: string, runDir?: string) => Promise<VmStartFiles | undefined>
  /** The files (source path → local path) of the finalized replica `vm` runs from here, if any. */
  finalizedFiles: (vm: string) => Promise<Record<string, string> | undefined>
  /**
   * `owner` now sources `vm`: this node's own copy becomes the seed of the replica it will
   * receive — a finalized replica (then removed: it takes no more generations), else `homeCopy`
   * (the configured files), else the newest replica from another source. Does nothing when the
   * replica from `owner` already holds data. Returns the seed folder, or undefined if nothing was placed.
   */
  seedFromLocalCopy: (vm: string, owner: string, homeCopy?: CopyFile[]) => Promise<{ dir: string, files: number } | undefined>
  /**
   * Deletes the replica of `vm` from `source` (its store and its recovery points) because a
   * newer owner's replica superseded it. Refused (false) while that source still has a session
   * open here, or when the store is finalized (a VM may run from it).
   */
  removeSupersededReplica: (vm: string, source: string) => Promise<boolean>
  /** Planned failover: scan the stopped VM, wait until `target` holds it durably; the final generation. */
  shipFinal: (vm: string, target: string, timeoutMs: number, signal?: AbortSignal) => Promise<number>
  /** The configured VMs this node should source (null: all of them). */
  setSourceVms: (names: string[] | null) => Promise<void>
  /** VMs this node runs from replica files, sourced from those files. */
  setAdoptedVms: (vms: VmConfig[]) => Promise<void>
}
