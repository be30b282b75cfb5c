/**
 * The one place errors meet the wire's NackCode: a target turns what went wrong into a code for
 * nack/refuse, and a source turns a nack/refuse back into a typed error. Storage errors are
 * matched by their stable `code` (protocol/ does not import storage/).
 */
import { hasCode } from '../../common/errors.ts'
import { DeltaProtocolError } from '../delta/errors.ts'
import { ReplicationNackedError, ReplicationProtocolError, ReplicationRefusedError } from './errors.ts'
import { NackCode } from './messages.ts'
import type { NackMessage, RefuseMessage } from './messages.ts'

const CHECKSUM_CODES = new Set(['ERR_DELTA_CHECKSUM_MISMATCH', 'ERR_DELTA_DIGEST_MISMATCH', 'ERR_DELTA_DECOMPRESS'])
const DISK_FULL_CODES = new Set(['ERR_REPLICA_DISK_FULL', 'ENOSPC', 'EDQUOT'])

/** The NackCode a target reports for `err`. */
export function nackCodeFor (err: unknown): NackCode {
  const code = (err as { code?: unknown } | null)?.code
  if (typeof code === 'string') {
    if (CHECKSUM_CODES.has(code)) return NackCode.ChecksumMismatch
    if (DISK_FULL_CODES.has(code)) return NackCode.DiskFull
    if (hasCode(err, 'ERR_REPLICA_BASE_MISMATCH')) return NackCode.BaseMismatch
    if (hasCode(err, 'ERR_REPLICA_BUSY')) return NackCode.Busy
  }
  if (err instanceof DeltaProtocolError || err instanceof ReplicationProtocolError) return NackCode.ProtocolError
  return NackCode.Internal
}

/** Stable name of a code for logs and status text. */
export function nackCodeName (code: NackCode): string {
  return NackCode[code] ?? `Unknown(${String(code)})`
}

/** The typed error a source raises when the target answers with nack or refuse. */
export function errorFromRejection (msg: NackMessage | RefuseMessage): ReplicationNackedError | ReplicationRefusedError {
  const text = `${msg.type} of generation ${msg.generation}: ${nackCodeName(msg.code)}${msg.message !== '' ? ` (${msg.message})` : ''}`
  return msg.type === 'nack'
    ? new ReplicationNackedError(msg.generation, msg.code, text, msg.retryAfterMs)
    : new ReplicationRefusedError(msg.generation, msg.code, text, msg.retryAfterMs)
}
