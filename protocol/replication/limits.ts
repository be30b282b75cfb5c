/**
 * Hard limits of the control codec, and from them the largest body each control type can have:
 * a frame header is judged on these before a single body byte is buffered.
 */
import { MAX_BLOCK_LENGTH } from '../delta/limits.ts'
import { ReplicationEncodeError } from './errors.ts'
import { ControlType, HASH_LENGTH } from './messages.ts'

export { MAX_BLOCK_LENGTH }

export interface ControlLimits {
  /** Most files in a hello. @default 1024 */
  maxFiles: number
  /** Longest file path, UTF-8 bytes. @default 4096 */
  maxPathBytes: number
  /** Longest VM or node name, UTF-8 bytes. @default 255 */
  maxNameBytes: number
  /** Most durable ranges in a targetState. @default 4096 */
  maxDurableRanges: number
  /** Most hashes in one hashResponse. @default 65536 (1 MiB of hashes) */
  maxHashesPerFrame: number
  /** Longest nack/refuse message, UTF-8 bytes. @default 1024 */
  maxMessageBytes: number
  /** Most blocks in one haveQuery (and flags in its haveAnswer). @default 4096 (112 KiB of query) */
  maxHaveBlocks: number
}

export const DEFAULT_CONTROL_LIMITS: Readonly<ControlLimits> = Object.freeze({
  maxFiles: 1024,
  maxPathBytes: 4096,
  maxNameBytes: 255,
  maxDurableRanges: 4096,
  maxHashesPerFrame: 65536,
  maxMessageBytes: 1024,
  maxHaveBlocks: 4096
})

/** Ceilings: u16 string lengths; counts kept far below what would strain a u32 body length. */
const CEILINGS: Readonly<ControlLimits> = Object.freeze({
  maxFiles: 100_000,
  maxPathBytes: 0xffff,
  maxNameBytes: 0xffff,
  maxDurableRanges: 10_000_000,
  maxHashesPerFrame: 100_000_000,
  maxMessageBytes: 0xffff,
  maxHaveBlocks: 1_000_000
})

/** Defaults overridden by `partial`; each value must be a positive integer within its ceiling. */
export function resolveControlLimits (partial?: Partial<ControlLimits>): ControlLimits {
  if (partial == null) return DEFAULT_CONTROL_LIMITS
  const out: ControlLimits = { ...DEFAULT_CONTROL_LIMITS }
  for (const key of Object.keys(DEFAULT_CONTROL_LIMITS) as Array<keyof ControlLimits>) {
    const v = partial[key]
    if (v === undefined) continue
    if (!Number.isSafeInteger(v) || v < 1 || v > CEILINGS[key]) {
      throw new ReplicationEncodeError(`limit ${key}=${String(v)} is not an integer in [1, ${CEILINGS[key]}]`)
    }
    out[key] = v
  }
  return out
}

export const HELLO_FILE_FIXED_BYTES = 4 + 1 + 4 + 8 + 2
/** hello's optional retention: count u32 | keepAllWithinMs u64 | flags u8 */
export const HELLO_RETENTION_BYTES = 4 + 8 + 1
/** Most recovery points a hello's retention may ask for (config: recoveryPoints.count ≤ 10 000). */
export const MAX_RETENTION_COUNT = 10_000
export const RANGE_BYTES = 4 + 8 + 8
/** haveQuery's fixed part (queryId u32 | generation u64 | fileId u32 | count u32) and one block (offset u64 | length u32 | hash) */
export const HAVE_QUERY_FIXED_BYTES = 4 + 8 + 4 + 4
export const HAVE_BLOCK_BYTES = 8 + 4 + HASH_LENGTH
/** haveAnswer's fixed part (queryId u32 | count u32), then ceil(count / 8) bytes of bitmap */
export const HAVE_ANSWER_FIXED_BYTES = 4 + 4

/** Exact body size of the fixed-size types. */
export const FIXED_BODY_BYTES: Readonly<Partial<Record<ControlType, number>>> = Object.freeze({
  [ControlType.Ack]: 8 + 1 + 8,
  [ControlType.HashRequest]: 4 + 4 + 8 + 8 + 4,
  [ControlType.Resend]: 8 + 4 + 8 + 8,
  [ControlType.Ping]: 4 + 8,
  [ControlType.Pong]: 4 + 8 + 8
})

/** Largest body a variable-size control type can have under `limits`. */
export function maxBodyBytes (type: ControlType, limits: ControlLimits): number {
  const fixed = FIXED_BODY_BYTES[type]
  if (fixed !== undefined) return fixed
  switch (type) {
    case ControlType.Hello:
      return 2 + 1 + 1 + 2 * (2 + limits.maxNameBytes) + 8 + HELLO_RETENTION_BYTES + 4 + limits.maxFiles * (HELLO_FILE_FIXED_BYTES + limits.maxPathBytes)
    case ControlType.TargetState:
      return 2 + limits.maxNameBytes + 8 + 8 + 8 + 1 + 8 + 4 + limits.maxDurableRanges * RANGE_BYTES
    case ControlType.Nack:
    case ControlType.Refuse:
      return 8 + 1 + 1 + 8 + 2 + limits.maxMessageBytes
    case ControlType.HashResponse:
      return 4 + 4 + 8 + 4 + 1 + 4 + limits.maxHashesPerFrame * HASH_LENGTH
    case ControlType.HaveQuery:
      return HAVE_QUERY_FIXED_BYTES + limits.maxHaveBlocks * HAVE_BLOCK_BYTES
    case ControlType.HaveAnswer:
      return HAVE_ANSWER_FIXED_BYTES + Math.ceil(limits.maxHaveBlocks / 8)
    default:
      return 0
  }
}

/** Smallest body a control type can have (a shorter one is malformed before it is buffered). */
export function minBodyBytes (type: ControlType): number {
  const fixed = FIXED_BODY_BYTES[type]
  if (fixed !== undefined) return fixed
  switch (type) {
    case ControlType.Hello: return 2 + 1 + 1 + 3 + 3 + 4 + HELLO_FILE_FIXED_BYTES + 1
    case ControlType.TargetState: return 3 + 8 + 8 + 8 + 1
    case ControlType.Nack:
    case ControlType.Refuse: return 8 + 1 + 1 + 2
    case ControlType.HashResponse: return 4 + 4 + 8 + 4 + 1 + 4
    case ControlType.HaveQuery: return HAVE_QUERY_FIXED_BYTES + HAVE_BLOCK_BYTES
    case ControlType.HaveAnswer: return HAVE_ANSWER_FIXED_BYTES + 1
    default: return 0
  }
}
