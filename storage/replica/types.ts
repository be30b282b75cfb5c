/**
 * The public shapes of the replica store API (see store.ts for the flow).
 */
import type { Clock } from '../../common/clock.ts'
import type { ReplicaFs } from './fs.ts'
import type { RetentionPolicy } from './retention.ts'
import type { FileKind } from './schema.ts'

export type { FileKind }

/** One file of a generation, as decoded from the wire. */
export interface GenerationFile {
  /** u32, unique within the generation; writeBlock/setSize refer to it */
  fileId: number
  /** the source path; the store keys files by it across generations */
  path: string
  /** the file's size at this generation; blocks must lie within it (setSize may change it) */
  size: number
  kind: FileKind
}

export interface GenerationHeader {
  generation: number
  /** must equal the replica's applied generation; 0 = initial seed of an empty replica */
  baseGeneration: number
  /** captured at one instant → becomes a recovery point; fuzzy → applied but not a point */
  consistent: boolean
  /** source wall-clock ms at capture; recovery point timestamps and retention ages use it */
  createdAtMs: number
  /** files changed in this generation (files not listed are unchanged) */
  files: GenerationFile[]
}

/** Block bytes: one buffer, or parts that follow each other in the file. */
export type BlockData = Uint8Array | readonly Uint8Array[]

export interface GenerationWriter {
  readonly generation: number
  /** true when this generation seeds an empty replica (written in place, resumable) */
  readonly seeding: boolean
  /**
   * Appends a block (any length; split internally): one buffer, or buffers that are contiguous
   * in the file (written gathered, without being copied into one). Await each call: concurrent
   * calls are refused. The buffers must not change until the call resolves.
   */
  writeBlock: (fileId: number, offset: number, data: BlockData) => Promise<void>
  /** Truncates or extends the file; later blocks must lie within the new size. */
  setSize: (fileId: number, size: number) => Promise<void>
  /** Seeding only: make what was written so far durable and record it in seedProgress(). No-op otherwise. */
  checkpoint: () => Promise<void>
  /** Makes the generation the replica's applied generation (crash-consistently). */
  commit: (opts?: CommitOptions) => Promise<CommitResult>
  /**
   * Discards the generation; the replica is unchanged. A seed keeps its durable progress
   * unless `discardSeedProgress` (use it when the stream turned out to be bad).
   */
  abort: (opts?: { discardSeedProgress?: boolean }) => Promise<void>
}

export interface CommitOptions {
  /**
   * Called once, as soon as the generation is durable: from then on it completes (here or at
   * the next open, after a crash) unless recovery itself fails. An incremental generation is
   * durable when its redo journal and commit record are synced, before the in-place writes, their
   * fsync and the state switch; a seed when its state switch is. The receiver acknowledges the
   * generation then, so the source moves on while the apply finishes. Must not throw.
   */
  onDurable?: () => void
}

export interface CommitResult {
  generation: number
  consistent: boolean
  /** bytes of block data in the generation */
  dataBytes: number
  /** recovery points dropped by retention after this commit */
  prunedPoints: number[]
}

export interface RecoveryPoint {
  /** stable id: the generation in decimal */
  id: string
  generation: number
  createdAtMs: number
  consistent: true
}

export interface ReplicaStateView {
  vm: string
  source: string
  appliedGeneration: number
  /** newest retained consistent generation ≤ applied (0 = none): finalize()'s default target */
  appliedConsistentGeneration: number
  /** a seed is in progress (the replica is not usable yet) */
  seeding: boolean
  seedingGeneration: number | null
  /** finalized for failover; accepts no more generations */
  finalized: boolean
  /**
   * Non-null while the files are being changed in place toward this generation (a commit's
   * in-place writes, a finalize's rollback): they then hold neither `appliedGeneration` nor it
   * exactly. When it is null and `seeding` is false, the files hold exactly `appliedGeneration`;
   * a reader of the files themselves checks that before and after reading (restore and finalize
   * need not: they take the store's lock).
   */
  applyingGeneration: number | null
  /**
   * The generation being received (its writer is open), or null. An incremental generation only
   * journals until its commit, so the files are unchanged meanwhile; once null (and not
   * applying) nothing changes the files until a new generation is received.
   */
  receivingGeneration: number | null
  /** source path → absolute replica path (including files being seeded) */
  files: Record<string, string>
  /** source path → size in bytes */
  sizes: Record<string, number>
}

export interface SeedProgress {
  generation: number
  /** source path → ranges already durable in the replica (the sender may skip them) */
  files: Record<string, Array<{ offset: number, length: number }>>
  durableBytes: number
}

export interface RestoreResult {
  pointId: string
  generation: number
  /** source path → restored file path */
  files: Record<string, string>
}

export interface FinalizeResult {
  generation: number
  consistent: boolean
  /** generations rolled back in place */
  rolledBack: number
  /** source path → replica path: the files to start the VM from */
  files: Record<string, string>
}

/** What open() found and did. */
export interface RecoveryAction {
  action: 'rolled-forward' | 'rolled-back' | 'discarded' | 'finalize-resumed' | 'removed-orphan'
  generation?: number
  path?: string
  /** the error that caused a discard (e.g. ReplicaJournalCorruptError), when there was one */
  error?: { name: string, code: string, message: string }
}

export type ReplicaStep =
  | 'redo-appended' | 'redo-committed'
  | 'undo-partial' | 'undo-synced'
  | 'inplace-partial' | 'inplace-synced'
  | 'applied-recorded'
  | 'seed-written' | 'seed-checkpointed'
  | 'merge-written'
  | 'finalize-undo-applied'
  | 'restore-copied'

export interface ReplicaHooks {
  /** Called at each step boundary; throwing aborts the operation there (crash injection in tests). */
  step?: (step: ReplicaStep, info: { generation: number }) => void | Promise<void>
}

/** The slice of a pino logger the store uses. */
export interface ReplicaLog {
  info: (obj: object, msg: string) => void
  warn: (obj: object, msg: string) => void
}

export interface ReplicaComponents {
  clock: Clock
  /** @default the real file system */
  fs?: ReplicaFs
  /** @default silent */
  log?: ReplicaLog
  hooks?: ReplicaHooks
}

export interface ReplicaInit {
  /** the store's directory (created if missing) */
  dir: string
  vm: string
  /** name of the node replicating to us */
  source: string
  /** @default { maxPoints: 24, keepAllWithinMs: 3_600_000, hourlyBeyond: true } */
  retention?: Partial<RetentionPolicy>
  /** fsync at every step boundary; false only survives process crashes, not power loss. @default true */
  fsync?: boolean
  /** seeding: bytes written between automatic durable checkpoints. @default 64 MiB */
  seedCheckpointBytes?: number
}
