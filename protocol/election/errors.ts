import { VmeshError } from '../../common/errors.ts'

/** Any failure to decode an election message; the driver drops it (and may cut the peer off). */
export class ElectionDecodeError extends VmeshError {}

export class ElectionMessageTooLargeError extends ElectionDecodeError {
  constructor (size: number, max: number) { super('ERR_ELECTION_TOO_LARGE', `message of ${size} bytes exceeds ${max}`) }
}
export class ElectionTruncatedError extends ElectionDecodeError {
  constructor (what: string) { super('ERR_ELECTION_TRUNCATED', `message truncated while reading ${what}`) }
}
export class ElectionBadVersionError extends ElectionDecodeError {
  constructor (version: number) { super('ERR_ELECTION_BAD_VERSION', `unsupported election wire version ${version}`) }
}
export class ElectionBadFlagsError extends ElectionDecodeError {
  constructor (what: string, value: number) { super('ERR_ELECTION_BAD_FLAGS', `reserved bits set in ${what} flags 0x${value.toString(16)}`) }
}
export class ElectionUnknownTypeError extends ElectionDecodeError {
  constructor (tag: number) { super('ERR_ELECTION_UNKNOWN_TYPE', `unknown election message type ${tag}`) }
}
export class ElectionBadEnumError extends ElectionDecodeError {
  constructor (what: string, value: number) { super('ERR_ELECTION_BAD_ENUM', `invalid ${what} value ${value}`) }
}
export class ElectionBadIntegerError extends ElectionDecodeError {
  constructor (what: string) { super('ERR_ELECTION_BAD_INTEGER', `${what} is out of range`) }
}
export class ElectionBadNameError extends ElectionDecodeError {
  constructor (what: string) { super('ERR_ELECTION_BAD_NAME', `invalid name in ${what}`) }
}
export class ElectionInconsistentError extends ElectionDecodeError {
  constructor (what: string) { super('ERR_ELECTION_INCONSISTENT', `inconsistent fields: ${what}`) }
}
export class ElectionTrailingBytesError extends ElectionDecodeError {
  constructor (extra: number) { super('ERR_ELECTION_TRAILING_BYTES', `${extra} unexpected bytes after message`) }
}

/** A message handed to the encoder breaks the wire limits (a bug in the caller, not a peer). */
export class ElectionEncodeError extends VmeshError {
  constructor (message: string) { super('ERR_ELECTION_ENCODE_INVALID', message) }
}

/** Every code a decoder may throw, for tests and for mapping to wire/log codes in one place. */
export const ELECTION_DECODE_CODES = [
  'ERR_ELECTION_TOO_LARGE', 'ERR_ELECTION_TRUNCATED', 'ERR_ELECTION_BAD_VERSION', 'ERR_ELECTION_BAD_FLAGS', 'ERR_ELECTION_UNKNOWN_TYPE', 'ERR_ELECTION_BAD_ENUM',
  'ERR_ELECTION_BAD_INTEGER', 'ERR_ELECTION_BAD_NAME', 'ERR_ELECTION_INCONSISTENT', 'ERR_ELECTION_TRAILING_BYTES'
] as const
