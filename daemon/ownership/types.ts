/**
 * Shapes of the ownership machine: its configuration, inputs, outputs and persisted records.
 * All times are the node's own monotonic milliseconds (Clock.now()), never wall time.
 */
import type { OwnershipProfile } from '../../config/profiles.ts'
import type { ElectionMessage, GenerationRef, VoteReason } from '../../protocol/election/messages.ts'

export type { GenerationRef } from '../../protocol/election/messages.ts'

export type NodeRole = 'host' | 'witness'
export type MemberState = 'alive' | 'suspect' | 'dead'
export type FailoverPolicy = 'auto' | 'manual'

/** A voter: every configured node (hosts and witnesses) votes; only hosts hold VMs. */
export interface VoterSpec {
  id: string
  role: NodeRole
}

export interface VmSpec {
  name: string
  /** The node that owns the VM at epoch 0 (the node whose config lists it). */
  home: string
  /** Replica targets in failover priority order. */
  replicateTo: string[]
  /** @default 'auto' */
  failover?: FailoverPolicy
  /** Lower starts first when several VMs wait to start on one node. @default 0 */
  startOrder?: number
  /** Higher gets room first when hosts are short of it, and starts first among equal startOrder. @default 0 */
  priority?: number
  /** Memory the VM needs where it runs, in MiB (0: not counted against capacity). @default 0 */
  memoryMiB?: number
  /** Virtual CPUs the VM needs where it runs (0: not counted). @default 0 */
  vcpus?: number
  /** VMs that must run (anywhere in the mesh) before this one starts. @default [] */
  startAfter?: string[]
  /** How long a queued start waits for `startAfter`, then starts anyway with a warning. @default 120000 */
  startAfterTimeoutMs?: number
}

/** What a host can hold (already net of its own reserve); a missing dimension is unlimited. */
export interface HostCapacity {
  memoryMiB: number
  vcpus: number
}

/** The default wait for `startAfter` VMs. */
export const DEFAULT_START_AFTER_TIMEOUT_MS = 120_000

/** Every ownership timing; the values (per profile) are in config/profiles.ts. */
export type OwnershipTiming = OwnershipProfile

export type OwnershipInput =
  /** A decoded message from a peer. */
  | { type: 'message', from: string, msg: ElectionMessage }
  /** The failure detector's view of a member changed. */
  | { type: 'member', id: string, state: MemberState }
  /** A VM to protect here (added or changed at runtime, e.g. learned from the replication layer). */
  | { type: 'vm', spec: VmSpec }
  /** The local replica of `vm` now has this applied consistent generation (null: none). */
  | { type: 'replicaApplied', vm: string, generation: GenerationRef | null }
  /** Driver feedback on a `start` event. */
  | { type: 'started', vm: string }
  | { type: 'startFailed', vm: string }
  /** The VM is off (after a `stop`, or on its own: crash, watchdog). */
  | { type: 'stopped', vm: string }
  /**
   * What the driver found at boot. A VM still running from before a daemon restart keeps
   * running until `fenceDeadline` (the watchdog's current deadline) unless a renewal succeeds.
   */
  | { type: 'vmState', vm: string, running: boolean, fenceDeadline?: number }
  /** `vmesh failover VM [--to NODE] [--force]`: take the VM over here (or on `to`). */
  | { type: 'operatorFailover', vm: string, to?: string, force?: boolean }
  /** `vmesh failover VM --to NODE --planned` on the owner. */
  | { type: 'plannedFailover', vm: string, to: string }
  /** The replication layer shipped the final generation requested by `shipFinal`. */
  | { type: 'finalGenerationShipped', vm: string, generation: GenerationRef }
  /** Shipping the final generation failed (timeout, error): the planned failover is off. */
  | { type: 'finalShipFailed', vm: string }
  /** This host's capacity became known or changed (the hypervisor told, or a reload); null: unlimited. */
  | { type: 'capacity', capacity: HostCapacity | null }

export type StopReason = 'lease-lost' | 'superseded' | 'planned'

export type OwnershipEvent =
  /** Start the VM at this epoch (only after the `watchdog` event that precedes it is armed). */
  | { type: 'start', vm: string, epoch: number }
  /** Turn the VM off now. */
  | { type: 'stop', vm: string, reason: StopReason }
  /** Arm the watchdog: turn the VM off by itself at `deadline` (local monotonic) unless re-armed; null disarms. */
  | { type: 'watchdog', vm: string, deadline: number | null }
  /** Roll the local replica to this generation (the latest consistent one) before starting. */
  | { type: 'finalize', vm: string, generation: GenerationRef | null }
  /** Ownership changed (as far as this node knows). */
  | { type: 'owner', vm: string, owner: string, epoch: number }
  /** This node won an election (or forced one). */
  | { type: 'elected', vm: string, epoch: number, forced: boolean }
  /** This node owned the VM and another took over: become a replica holder. */
  | { type: 'demoted', vm: string, owner: string, epoch: number }
  /** Planned failover: ship the final generation to `to`, then report finalGenerationShipped. */
  | { type: 'shipFinal', vm: string, to: string }
  /** An operator request was refused at once. */
  | { type: 'failoverRefused', vm: string, reason: FailoverRefusal }
  /**
   * An operator request stopped trying (timeout, or another node took the VM), or a planned
   * failover on the owner was given up before its release: the target died ('target-dead': the
   * driver aborts the ship in flight) or the ship failed ('ship-failed'). The VM runs here again.
   */
  | { type: 'failoverAbandoned', vm: string, reason: 'timeout' | 'superseded' | 'target-dead' | 'ship-failed' }
  /**
   * The VM should run (or stand for election) here but does not fit in what this host has left:
   * it stays off until room appears (`roomFound`). Emitted once per change.
   */
  | { type: 'noRoom', vm: string, need: HostCapacity, free: HostCapacity }
  | { type: 'roomFound', vm: string }
  /** A queued start waited `startAfterTimeoutMs` for VMs that still do not run: it starts anyway. */
  | { type: 'startAfterTimeout', vm: string, waitingFor: string[] }

/** Why a failover request was refused ('target-dead': a planned failover to a host the owner does not see alive). */
export type FailoverRefusal = 'unknown-vm' | 'unknown-node' | 'witness' | 'no-replica' | 'already-owner' | 'not-owner' | 'busy' | 'target-dead'

/** One durable record; the latest record per `key` wins. The driver writes it before sending. */
export type PersistRecord = VmRecord | SeqRecord

export interface VmRecord {
  kind: 'vm'
  vm: string
  /** Highest epoch with a known owner, and that owner. */
  epoch: number
  owner: string
  /** This node's latest grant (0/null: none). */
  votedEpoch: number
  votedFor: string | null
  /** The owner at `epoch` released the VM to `to` (planned failover). */
  released: { epoch: number, to: string, generation: GenerationRef } | null
  /** This node took the VM with --force and has not had a majority since. */
  forced: boolean
  /**
   * The policy as last announced by the VM's home node: a replica holder that restarts while
   * the home node is down must still know it may (and how to) fail the VM over.
   */
  spec?: VmSpec
}

/** Round numbers are handed out in blocks so a restarted node never reuses one. */
export interface SeqRecord {
  kind: 'seq'
  /** Every seq below this may have been used. */
  reservedUpTo: number
}

export function recordKey (r: PersistRecord): string { return r.kind === 'vm' ? `vm:${r.vm}` : 'seq' }

export interface OwnershipOutput {
  /** Write these durably first, then send. */
  persist: PersistRecord[]
  send: Array<{ to: string, msg: ElectionMessage }>
  events: OwnershipEvent[]
}

export type RunState = 'off' | 'queued' | 'starting' | 'running' | 'stopping'

/** What one node believes about one VM (for status and tests). */
export interface VmOwnershipStatus {
  vm: string
  owner: string
  epoch: number
  ownedHere: boolean
  run: RunState
  /** Lease end and watchdog deadline (local monotonic) when owned here; -Infinity when none. */
  leaseUntil: number
  fenceUntil: number
  forced: boolean
  released: boolean
  votedEpoch: number
  votedFor: string | null
  applied: GenerationRef | null
  /** Epoch of the election round in progress here, if any. */
  candidateEpoch: number | null
  /**
   * Room on this host: 'placed' (kept: it runs, starts, stops or stands here), 'reserved' (held
   * for it while it waits its rank's turn to stand), 'no-room' (it should run or stand here and
   * does not fit), null (nothing asked of this host).
   */
  placement: 'placed' | 'reserved' | 'no-room' | null
  /** `startAfter` VMs not yet running while this VM waits to start here. */
  waitingFor: string[]
}

export type VoteDecision =
  | { granted: true }
  | { granted: false, reason: Exclude<VoteReason, 'granted'>, retryAfterMs: number }
