/**
 * The shape of `vmesh status --json` (see shared/interface.md). Built from the services'
 * live views; extended, never renamed.
 */
import type { TestFailoverRecord } from './ownership/test-failover.ts'
export interface MemberStatus {
  name: string
  peerId: string
  role: 'host' | 'witness'
  state: 'alive' | 'suspect' | 'dead'
  incarnation: number
  /** Milliseconds since the member entered its current state. */
  sinceMs: number
  everSeen: boolean
  connected: boolean
}

export interface TargetStatus {
  node: string
  state: 'seeding' | 'in-sync' | 'behind' | 'disconnected' | 'error'
  ackedGeneration: number
  lagMs: number | null
  bytesPending: number
  rateBytesPerSec?: number
  seedProgress?: number
  error?: string
  /** The last block-by-block comparison with this target (vmesh verify or verifyInterval). */
  lastVerify?: { atMs: number, mismatchedBlocks: number }
}

export interface VmStatus {
  name: string
  owner: string | null
  epoch: number
  runningHere: boolean
  generation: number
  targets: TargetStatus[]
  replica: null | {
    from: string
    appliedGeneration: number
    files: Record<string, string>
    /** Newest crash-consistent generation held (the default failover point). */
    appliedConsistentGeneration?: number
    /** An initial copy is still in progress (the replica is not usable yet). */
    seeding?: boolean
    /** While seeding: bytes of it made durable by checkpoints (a restarted seed skips them). */
    seedDurableBytes?: number
    /**
     * Non-null while the replica files are being changed in place toward this generation: they
     * hold neither `appliedGeneration` nor it exactly. While it is null and `seeding` is false,
     * the files hold exactly `appliedGeneration`; to read them directly, check that before and
     * after reading (`vmesh restore` and failover need not: they lock the replica).
     */
    applyingGeneration?: number | null
    /** The generation being received, or null (once null and not applying, the files stay put). */
    receivingGeneration?: number | null
    /** Replication stream bytes received from the source since this daemon started. */
    bytesReceived?: number
  }
}

export interface StatusDocument {
  node: { name: string, peerId: string, role: 'host' | 'witness', incarnation?: number, awareness?: number, uptimeMs: number, profile: string }
  members: MemberStatus[]
  vms: VmStatus[]
  /** Test failovers (isolated clones of a recovery point) on this node. */
  tests?: TestFailoverRecord[]
}
