/** Shapes replication hands out (control API answers, the ownership seam). Types only. */
import type { RecoveryPoint } from '../../storage/replica/index.ts'

export interface ReplicaPoints {
  vm: string
  replicas: Array<{ from: string, appliedGeneration: number, appliedConsistentGeneration: number, seeding: boolean, points: RecoveryPoint[] }>
}

/** One replica held on this node, as the ownership side sees it. */
export interface ReplicaSummary {
  vm: string
  /** The node the replica is received from. */
  source: string
  appliedGeneration: number
  /** Newest crash-consistent generation held (0: none). */
  appliedConsistentGeneration: number
  /** The initial copy is still in progress (not usable yet). */
  seeding: boolean
  /** Rolled to a recovery point for a start here: takes no more generations. */
  finalized: boolean
}

/** One file of this node's copy of a VM: where it is, and the source path it stands for. */
export interface CopyFile { local: string, source: string }
