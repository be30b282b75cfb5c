/**
 * Typed errors of the replication control codec. Everything a peer's bytes can cause extends
 * ReplicationProtocolError, so a receiver cuts the peer off on `isPeerProtocolError(err)` (which
 * also covers the delta frames carried on the same stream); ReplicationEncodeError is a bug on
 * our side and deliberately outside that family.
 */
import { VmeshError } from '../../common/errors.ts'
import { DeltaProtocolError } from '../delta/errors.ts'

/** Base of every control-message decode error; never thrown itself. */
export class ReplicationProtocolError extends VmeshError {}

/** A frame header declares a body longer than its type allows (refused before buffering it). */
export class ReplicationFrameTooLargeError extends ReplicationProtocolError {
  constructor (message: string) { super('ERR_REPLICATION_FRAME_TOO_LARGE', message) }
}

/** Input ended in the middle of a frame. */
export class ReplicationTruncatedError extends ReplicationProtocolError {
  constructor (message: string) { super('ERR_REPLICATION_TRUNCATED', message) }
}

/** A frame type byte that is neither a delta frame nor a control message of this version. */
export class ReplicationUnknownFrameError extends ReplicationProtocolError {
  constructor (message: string) { super('ERR_REPLICATION_UNKNOWN_FRAME', message) }
}

/** A body inconsistent with its own layout: short fields, trailing bytes, bad UTF-8, reserved flags, ... */
export class ReplicationMalformedFrameError extends ReplicationProtocolError {
  constructor (message: string, options?: { cause?: unknown }) { super('ERR_REPLICATION_MALFORMED_FRAME', message, options) }
}

/** A count, string or number beyond a codec limit (files, ranges, hashes, u64 above 2^53 - 1, ...). */
export class ReplicationLimitExceededError extends ReplicationProtocolError {
  constructor (message: string) { super('ERR_REPLICATION_LIMIT_EXCEEDED', message) }
}

/** A wire enum value this version does not define (seed mode, file kind, nack code). */
export class ReplicationBadEnumError extends ReplicationProtocolError {
  constructor (message: string) { super('ERR_REPLICATION_BAD_ENUM', message) }
}

/** Durable ranges that are empty, out of order, overlapping or not merged. */
export class ReplicationBadRangesError extends ReplicationProtocolError {
  constructor (message: string) { super('ERR_REPLICATION_BAD_RANGES', message) }
}

/** A message handed to the encoder breaks the wire rules (a bug in the caller, not a peer). */
export class ReplicationEncodeError extends VmeshError {
  constructor (message: string) { super('ERR_REPLICATION_ENCODE_INVALID', message) }
}

/** The target answered a generation with nack (`nackCode`, optional `retryAfterMs`). */
export class ReplicationNackedError extends VmeshError {
  constructor (readonly generation: number, readonly nackCode: number, message: string, readonly retryAfterMs?: number) {
    super('ERR_REPLICATION_NACKED', message)
  }
}

/** The target refused the session or a generation (`nackCode`, optional `retryAfterMs`). */
export class ReplicationRefusedError extends VmeshError {
  constructor (readonly generation: number, readonly nackCode: number, message: string, readonly retryAfterMs?: number) {
    super('ERR_REPLICATION_REFUSED', message)
  }
}

/** True for any error a peer's bytes caused on a replication stream (control or delta frames). */
export function isPeerProtocolError (err: unknown): err is ReplicationProtocolError | DeltaProtocolError {
  return err instanceof ReplicationProtocolError || err instanceof DeltaProtocolError
}
