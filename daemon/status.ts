/**
 * The shape of `vmesh status --json` (README, "vmesh status --json"). Built from the services'
 * live views; extended, never renamed.
 */
import type { TestFailoverRecord } from './test-failover/types.ts'
import type { ProbeRttView } from './membership/probe-rtt.ts'
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
  /** How the open connection runs: `direct`, or `relayed` through a circuit relay (`mesh.relay`). */
  path?: 'direct' | 'relayed'
  /** Round trips of this node's direct membership probes to the member (absent before the first ack). */
  probeRtt?: ProbeRttView
}

export interface TargetStatus {
  node: string
  state: 'seeding' | 'in-sync' | 'behind' | 'disconnected' | 'error'
  ackedGeneration: number
  lagMs: number | null
  /** Age of the newest capture point durable on the target (since that capture began); null: none yet. */
  rpoMs?: number | null
  bytesPending: number
  rateBytesPerSec?: number
  seedProgress?: number
  error?: string
  /** The last block-by-block comparison with this target (vmesh verify or verifyInterval). */
  lastVerify?: { atMs: number, mismatchedBlocks: number }
  /**
   * The session's in-flight bound (replication/pacer.ts): measured bottleneck rate and min RTT,
   * the cap they give, and round trips of its probes (what a message sent now waits).
   */
  pacing?: { capBytes: number, inflightBytes: number, btlBwBytesPerSec: number, minRttMs: number | null, rttP50Ms: number | null, rttP99Ms: number | null, rttSamples: number }
}

/** How a sourced VM's changes are found, and the RPO that allows (hash scan: under `scan.budget`). */
export interface CaptureStatus {
  source: 'hash-scan' | 'told' | 'qemu-bitmap'
  /** qemu-bitmap: QEMU answered at the last round; answers from bitmaps and from the hash scan (chain gaps, VM not running under QEMU). */
  live?: boolean
  toldAnswers?: number
  scanAnswers?: number
  /** qemu-bitmap: generations are read from fleecing points (consistent); false: from the live file (fuzzy). */
  fleecing?: boolean
  /**
   * qemu-bitmap with fleecing: how its points were taken — `copied` (the changed blocks read
   * while no guest write completed), `fleeced` (a copy-before-write job), `raced` (copies lost
   * to a write that completed meanwhile), `tooLarge` (change sets over the copy budget).
   */
  points?: { copied: number, fleeced: number, raced: number, tooLarge: number }
  /** Bytes one full scan of the VM's files reads at most (their sizes). */
  scanBytes: number
  /** The host's `scan.budget` (null: unbounded) and this VM's fair share of it. */
  scanBudgetBytesPerSec: number | null
  scanShareBytesPerSec: number | null
  /** The RPO the source and budget allow: interval + two scans at the share (null: no budget). */
  rpoBoundMs: number | null
}

export interface VmStatus {
  name: string
  owner: string | null
  epoch: number
  runningHere: boolean
  /** 'no-room': the VM should run or stand here and does not fit in what this host has left. */
  placement?: 'no-room'
  /** `startAfter` VMs not running yet while the VM waits to start here. */
  waitingFor?: string[]
  generation: number
  targets: TargetStatus[]
  /** On the VM's source: its RPO target (`vms[].rpo`, default 60 s); alerts and the dashboard compare with it. */
  rpoTargetMs?: number
  /** On the VM's source: its change source and the RPO it allows. */
  capture?: CaptureStatus
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
     * hold neither `appliedGeneration` nor it exactly. While it is null and `seeding` and
     * `finalized` are false, the files hold exactly `appliedGeneration`; to read them directly, check that before and
     * after reading (`vmesh restore` and failover need not: they lock the replica).
     */
    applyingGeneration?: number | null
    /** The generation being received, or null (once null and not applying, the files stay put). */
    receivingGeneration?: number | null
    /**
     * Finalized for a failover: the VM runs (or ran) from these files here, so they hold what it
     * wrote since, not `appliedGeneration`; the replica takes no more generations.
     */
    finalized?: boolean
    /** Replication stream bytes received from the source since this daemon started. */
    bytesReceived?: number
  }
}

/** A long operation of this node (append-only kinds): a verify, a restore, a planned failover's final ship. */
export type OperationKind = 'verify' | 'restore' | 'final-ship'

/** One long operation and its byte progress (`status().operations`, `GET /v1/operations`). */
export interface OperationStatus {
  id: string
  kind: OperationKind
  vm: string
  /** The other node: verify's target being compared, restore's source, the final ship's target. */
  peer?: string
  state: 'running' | 'done' | 'failed'
  /** What it does now, for people (e.g. "comparing with hv-b", "copying the replica files"). */
  phase: string
  /** Wall-clock ms it began. */
  startedAtMs: number
  elapsedMs: number
  doneBytes: number
  totalBytes: number
  /** Measured over the last seconds (null: not yet, or finished). */
  rateBytesPerSec: number | null
  /** null: no rate yet; 0 once finished. */
  etaMs: number | null
  error?: string
}

export interface StatusDocument {
  node: { name: string, peerId: string, role: 'host' | 'witness', incarnation?: number, awareness?: number, uptimeMs: number, profile: string }
  members: MemberStatus[]
  vms: VmStatus[]
  /** Test failovers (isolated clones of a recovery point) on this node. */
  tests?: TestFailoverRecord[]
  /** Long operations running here, and the last ones finished. */
  operations?: OperationStatus[]
}
