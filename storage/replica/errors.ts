/**
 * Typed errors of the replica store: one class per condition with a stable code. All extend
 * ReplicaError so a caller can tell "the replica said no" from a bug.
 */
import { VmeshError } from '../../common/errors.ts'

/** Base of every replica store error; never thrown itself. */
export class ReplicaError extends VmeshError {}

/** A generation does not start from the replica's applied generation. */
export class ReplicaBaseMismatchError extends ReplicaError {
  constructor (message: string) { super('ERR_REPLICA_BASE_MISMATCH', message) }
}

/** A journal or undo record failed its checksum or is structurally invalid. */
export class ReplicaJournalCorruptError extends ReplicaError {
  constructor (message: string, options?: { cause?: unknown }) { super('ERR_REPLICA_JOURNAL_CORRUPT', message, options) }
}

/** The persisted state file is unreadable or fails its checksum. */
export class ReplicaStateCorruptError extends ReplicaError {
  constructor (message: string, options?: { cause?: unknown }) { super('ERR_REPLICA_STATE_CORRUPT', message, options) }
}

/** The disk filled up (ENOSPC/EDQUOT); the generation was discarded and the replica is unchanged. */
export class ReplicaDiskFullError extends ReplicaError {
  constructor (message: string, options?: { cause?: unknown }) { super('ERR_REPLICA_DISK_FULL', message, options) }
}

/** Another generation writer is active, or a writer method was called while one was running. */
export class ReplicaBusyError extends ReplicaError {
  constructor (message: string) { super('ERR_REPLICA_BUSY', message) }
}

/** A writer was used after commit/abort/failure. */
export class ReplicaWriterClosedError extends ReplicaError {
  constructor (message: string) { super('ERR_REPLICA_WRITER_CLOSED', message) }
}

/** A generation header, block or size is invalid (unknown file id, out of range, bad numbers, ...). */
export class ReplicaInvalidInputError extends ReplicaError {
  constructor (message: string) { super('ERR_REPLICA_INVALID_INPUT', message) }
}

/** The requested recovery point does not exist (never was, or pruned by retention). */
export class ReplicaPointNotFoundError extends ReplicaError {
  constructor (message: string) { super('ERR_REPLICA_POINT_NOT_FOUND', message) }
}

/** finalize() found no consistent generation to roll back to (and fuzzy was not accepted). */
export class ReplicaNoConsistentPointError extends ReplicaError {
  constructor (message: string) { super('ERR_REPLICA_NO_CONSISTENT_POINT', message) }
}

/** The replica was finalized for failover; it accepts no further generations. */
export class ReplicaFinalizedError extends ReplicaError {
  constructor (message: string) { super('ERR_REPLICA_FINALIZED', message) }
}

/** The replica holds no applied generation yet (empty or still seeding). */
export class ReplicaNotReadyError extends ReplicaError {
  constructor (message: string) { super('ERR_REPLICA_NOT_READY', message) }
}

/** The store directory belongs to another VM or source node. */
export class ReplicaIdentityMismatchError extends ReplicaError {
  constructor (message: string) { super('ERR_REPLICA_IDENTITY_MISMATCH', message) }
}

/** A restore target directory is not empty, or lies inside the store. */
export class ReplicaRestoreTargetError extends ReplicaError {
  constructor (message: string) { super('ERR_REPLICA_RESTORE_TARGET', message) }
}

/**
 * An earlier failure left the replica needing recovery that could not run in-process
 * (for example a rollback that failed too). Close and reopen the store: open() recovers.
 */
export class ReplicaNeedsRecoveryError extends ReplicaError {
  constructor (message: string, options?: { cause?: unknown }) { super('ERR_REPLICA_NEEDS_RECOVERY', message, options) }
}

/** The store was closed. */
export class ReplicaClosedError extends ReplicaError {
  constructor (message = 'replica store is closed') { super('ERR_REPLICA_CLOSED', message) }
}

/** True for the errno codes that mean "no space left". */
export function isDiskFull (err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return code === 'ENOSPC' || code === 'EDQUOT'
}
