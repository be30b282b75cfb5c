import { VmeshError } from '../../common/errors.ts'

/** Any failure to decode a membership message; the driver drops the message (and may cut the peer off). */
export class MembershipDecodeError extends VmeshError {}

export class MembershipMessageTooLargeError extends MembershipDecodeError {
  constructor (size: number, max: number) { super('ERR_MEMBERSHIP_TOO_LARGE', `message of ${size} bytes exceeds ${max}`) }
}
export class MembershipTruncatedError extends MembershipDecodeError {
  constructor (what: string) { super('ERR_MEMBERSHIP_TRUNCATED', `message truncated while reading ${what}`) }
}
export class MembershipBadVersionError extends MembershipDecodeError {
  constructor (version: number) { super('ERR_MEMBERSHIP_BAD_VERSION', `unsupported membership wire version ${version}`) }
}
export class MembershipUnknownTypeError extends MembershipDecodeError {
  constructor (type: number) { super('ERR_MEMBERSHIP_UNKNOWN_TYPE', `unknown membership message type ${type}`) }
}
export class MembershipBadEnumError extends MembershipDecodeError {
  constructor (what: string, value: number) { super('ERR_MEMBERSHIP_BAD_ENUM', `invalid ${what} value ${value}`) }
}
export class MembershipBadFlagsError extends MembershipDecodeError {
  constructor (what: string, value: number) { super('ERR_MEMBERSHIP_BAD_FLAGS', `reserved bits set in ${what} flags 0x${value.toString(16)}`) }
}
export class MembershipBadVarintError extends MembershipDecodeError {
  constructor (what: string) { super('ERR_MEMBERSHIP_BAD_VARINT', `malformed or out-of-range varint in ${what}`) }
}
export class MembershipBadIdError extends MembershipDecodeError {
  constructor (what: string) { super('ERR_MEMBERSHIP_BAD_ID', `invalid member id in ${what}`) }
}
export class MembershipTooManyUpdatesError extends MembershipDecodeError {
  constructor (count: number, max: number) { super('ERR_MEMBERSHIP_TOO_MANY_UPDATES', `${count} piggybacked updates exceed ${max}`) }
}
export class MembershipTrailingBytesError extends MembershipDecodeError {
  constructor (extra: number) { super('ERR_MEMBERSHIP_TRAILING_BYTES', `${extra} unexpected bytes after message`) }
}

/** A message handed to the encoder breaks the wire limits (a bug in the caller, not a peer). */
export class MembershipEncodeError extends VmeshError {
  constructor (message: string) { super('ERR_MEMBERSHIP_ENCODE_INVALID', message) }
}
