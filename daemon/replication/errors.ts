/** Typed errors of the replication engine (one class per condition, stable codes). */
import { VmeshError } from '../../common/errors.ts'

/** Failover or a test failover asked for a replica of a VM this node does not hold. */
export class NoReplicaError extends VmeshError {
  constructor (vm: string) { super('ERR_NO_REPLICA', `no replica of ${vm} is held on this node`) }
}

/** The replication stream closed or was reset before the exchange finished. */
export class ReplicationStreamClosedError extends VmeshError {
  constructor (message = 'replication stream closed', options?: { cause?: unknown }) { super('ERR_REPLICATION_STREAM_CLOSED', message, options) }
}

/** The peer did not answer within the allowed time. */
export class ReplicationTimeoutError extends VmeshError {
  constructor (message: string) { super('ERR_REPLICATION_TIMEOUT', message) }
}

/** The peer answered with something the session did not expect at that point. */
export class ReplicationUnexpectedMessageError extends VmeshError {
  constructor (message: string) { super('ERR_REPLICATION_UNEXPECTED_MESSAGE', message) }
}

/** A file changed while a generation announced as consistent was being read; it is resent as fuzzy. */
export class GenerationTurnedFuzzyError extends VmeshError {
  constructor (message: string) { super('ERR_REPLICATION_TURNED_FUZZY', message) }
}

/** No VM of that name is replicated from or to this node. */
export class UnknownVmError extends VmeshError {
  constructor (vm: string) { super('ERR_REPLICATION_UNKNOWN_VM', `no VM named ${JSON.stringify(vm)} is replicated here`) }
}

/** A verify could not run (target not connected, not in sync in time, source kept changing). */
export class VerifyFailedError extends VmeshError {
  constructor (message: string) { super('ERR_REPLICATION_VERIFY_FAILED', message) }
}

/** The hello named a source node that is not the peer on the connection. */
export class SourceMismatchError extends VmeshError {
  constructor (message: string) { super('ERR_REPLICATION_SOURCE_MISMATCH', message) }
}

/** The peer broke the session's sequence (no hello, a second hello, frames for another VM, ...). */
export class PeerProtocolViolationError extends VmeshError {
  constructor (message: string) { super('ERR_REPLICATION_PEER_VIOLATION', message) }
}

/** Planned failover: `target` is not one of the VM's replication targets here. */
export class NotAReplicationTargetError extends VmeshError {
  constructor (vm: string, target: string) { super('ERR_REPLICATION_NOT_A_TARGET', `${target} does not receive replicas of ${vm} from this node`) }
}

/** Planned failover: the target did not make the final generation durable in time. */
export class FinalGenerationTimeoutError extends VmeshError {
  constructor (vm: string, target: string, generation: number, timeoutMs: number) { super('ERR_REPLICATION_FINAL_TIMEOUT', `${target} did not acknowledge the final generation ${generation} of ${vm} within ${timeoutMs} ms`) }
}

/**
 * A generation was acknowledged as durable, then its in-place apply failed: the session ends
 * (a nack would contradict the ack) and the next one reconciles from what the store reports.
 */
export class ReplicaApplyAfterAckError extends VmeshError {
  constructor (message: string, options?: { cause?: unknown }) { super('ERR_REPLICA_APPLY_AFTER_ACK', message, options) }
}

/** A client-chosen operation id names an operation still running. */
export class OperationIdInUseError extends VmeshError {
  constructor (id: string) { super('ERR_OPERATION_ID_IN_USE', `an operation with id ${JSON.stringify(id)} is still running`) }
}

/**
 * The replica store a receiving session held was taken from it: the registry removed it (a
 * finalized replica whose VM moved on, a former owner's superseded replica), or the session
 * reached a store that was already closed. The session ends — nothing of a generation in
 * progress is applied — and its source's next session opens whatever store the registry holds
 * for it then, instead of being nacked by a closed store generation after generation.
 */
export class ReplicaStoreRevokedError extends VmeshError {
  constructor (message: string, options?: { cause?: unknown }) { super('ERR_REPLICA_STORE_REVOKED', message, options) }
}
