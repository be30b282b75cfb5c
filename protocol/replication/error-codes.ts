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
/** Block decode failures a resend of that block can cure: its bytes were damaged on the way. */
const RESENDABLE_BLOCK_CODES = new Set(['ERR_DELTA_CHECKSUM_MISMATCH', 'ERR_DELTA_DECOMPRESS', 'ERR_DELTA_BAD_ENCODING', 'ERR_DELTA_BLOCK_TOO_LARGE'])

function codeOf (err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : undefined
}

/** True when a target should ask for the block again (resend) rather than end the session. */
export function isResendableBlockError (err: unknown): boolean {
  return RESENDABLE_BLOCK_CODES.has(codeOf(err) ?? '')
}

/**
 * True when the peer broke the protocol: any delta or replication error by its code (codes
 * ERR_DELTA_* and ERR_REPLICATION_*, which also covers the daemon's session errors such as
 * ERR_REPLICATION_PEER_VIOLATION that protocol/ cannot import), except a stream that merely
 * closed. The receiver cuts such a peer off and applies nothing of the generation.
 */
export function isProtocolFault (err: unknown): boolean {
  const c = codeOf(err)
  return c !== undefined && (c.startsWith('ERR_DELTA_') || (c.startsWith('ERR_REPLICATION_') && c !== 'ERR_REPLICATION_STREAM_CLOSED'))
}

/** The NackCode a target reports for `err`. */
export function nackCodeFor (err: unknown): NackCode {
  const code = codeOf(err)
  if (code !== undefined) {
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
