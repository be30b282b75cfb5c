/** The replica store's public surface. */
export { ReplicaStore, type BlockHash } from './store.ts'
export type {
  GenerationHeader, GenerationFile, GenerationWriter, BlockData, CommitResult, CommitOptions, RecoveryPoint, ReplicaStateView,
  SeedProgress, RestoreResult, FinalizeResult, RecoveryAction, ReplicaStep, ReplicaHooks, ReplicaLog,
  ReplicaComponents, ReplicaInit, FileKind
} from './types.ts'
export type { ReplicaFs, ReplicaFileHandle, OpenMode } from './fs.ts'
export { nodeReplicaFs } from './fs.ts'
export type { RestoreProgress } from './rollback.ts'
export { blockDataLength, sliceBlockData } from './block-data.ts'
export { DEFAULT_RETENTION, selectRetained, type RetentionPolicy } from './retention.ts'
export * from './errors.ts'
