/**
 * Control messages of a replication session. They travel on the same stream as the delta frames
 * of protocol/delta (begin / blocks / resize / end), with the same 5-byte frame header
 * (type u8 | bodyLength u32), so one decoder reads both. Frame type numbers are split:
 *
 *     1 – 15    delta frames (protocol/delta FrameType: begin 1, blocks 2, resize 3, end 4)
 *    16 – 63    reserved
 *    64 – 127   control messages (ControlType below)
 *   128 – 255   reserved
 *
 * A session: source → hello; target → targetState; source → generations (delta frames), each
 * answered by ack or nack; resend asks for a block whose checksum failed on arrival; hashRequest /
 * hashResponse compare blocks (seed: existing, `vmesh verify`); ping / pong keep the stream alive
 * and measure RTT. refuse ends the session (or a generation) with a reason. Inside a generation,
 * haveQuery / haveAnswer (1.2.0 streams only) let the target copy blocks it already holds, found
 * by content in its content index, instead of receiving them.
 * Numbers are u64 on the wire but plain JS numbers here: decoders refuse values above 2^53 - 1.
 */
import { FileKind } from '../delta/messages.ts'

export { FileKind }

/** Version a source announces in hello; a target refuses versions it does not speak. */
export const CONTROL_PROTOCOL_VERSION = 1

/**
 * Bytes of one block hash in hashResponse and haveQuery (BLAKE3 truncated, like delta block
 * checksums). For content addressing across VMs (haveQuery) 16 bytes are still ample: among
 * 2^32 distinct blocks (256 TiB of 64 KiB blocks) an accidental collision has probability
 * ≈ 2^64 / 2^129 = 2^-65, and a deliberate one (≈ 2^64 work) needs the attacker to write both
 * blocks, which only a (trusted, allowlisted) source can, and only into its own VMs' replicas —
 * a second preimage of someone else's block costs 2^128. Keeping the delta checksum's length
 * means one hash per block serves the wire checksum, the manifest and the content index.
 */
export const HASH_LENGTH = 16

/** Control frame type byte. Wire values; append-only; 64–127 only. */
export enum ControlType {
  Hello = 64,
  TargetState = 65,
  Ack = 66,
  Nack = 67,
  Refuse = 68,
  HashRequest = 69,
  HashResponse = 70,
  Resend = 71,
  Ping = 72,
  Pong = 73,
  /** 1.2.0 streams only */
  HaveQuery = 74,
  /** 1.2.0 streams only */
  HaveAnswer = 75
}

/** How a target gets its first copy. Wire values; append-only. */
export enum SeedMode {
  /** every block is sent */
  Full = 0,
  /** the target already holds a copy (restored backup, earlier replica): compare hashes first */
  Existing = 1
}

/** Why a target said no. Wire values; append-only. */
export enum NackCode {
  DiskFull = 1,
  ChecksumMismatch = 2,
  BaseMismatch = 3,
  ProtocolError = 4,
  Busy = 5,
  Internal = 6
}

export interface HelloFile {
  /** u32, unique within the hello; the same ids are used by the session's delta frames */
  fileId: number
  /** source path, non-empty, at most maxPathBytes of UTF-8, no NUL */
  path: string
  kind: FileKind
  /** current size in bytes (u64) */
  size: number
  /** 1..MAX_BLOCK_LENGTH */
  blockSize: number
}

/** source → target: opens a session for one VM. */
export interface HelloMessage {
  type: 'hello'
  /** u16; CONTROL_PROTOCOL_VERSION of the sender */
  protocolVersion: number
  vm: string
  /** the source node's name */
  sourceNode: string
  /** the source's ownership epoch for the VM (u64), when it has one; a target refuses a stale owner */
  epoch?: number
  /** 1..maxFiles files, unique fileIds */
  files: HelloFile[]
  seedMode: SeedMode
  /**
   * The VM's `recoveryPoints` on the source, for the target's replica store (targets do not have
   * the VM in their config). Only on 1.1.0 and newer streams: a 1.0.0 target
   * refuses the flag bit it travels under. Absent from older sources: the target keeps the
   * policy it has (last sent, its own config's, or the default).
   */
  retention?: HelloRetention
}

/** A source's recovery-point policy (config `vms[].recoveryPoints`). */
export interface HelloRetention {
  /** u32, ≤ MAX_RETENTION_COUNT: points kept beyond the keep-all window */
  count: number
  /** u64: every point younger than this is kept */
  keepAllWithinMs: number
  /** beyond the window, only the newest point of each hour */
  hourlyBeyond: boolean
}

/** A byte range of one file (u64 offset and length, length ≥ 1). */
export interface FileRange {
  fileId: number
  offset: number
  length: number
}

export interface SeedingState {
  /** the generation being seeded (u64) */
  generation: number
  /**
   * What is already durable on the target: sorted by (fileId, offset), non-empty, neither
   * overlapping nor touching (merged), at most maxDurableRanges. See ranges.ts to build one.
   */
  durableRanges: FileRange[]
}

/** target → source: where the replica stands, in answer to hello (and after reconnects). */
export interface TargetStateMessage {
  type: 'targetState'
  vm: string
  /** u64; 0 = nothing applied yet */
  appliedGeneration: number
  /** u64, ≤ appliedGeneration: the newest crash-consistent generation applied */
  appliedConsistentGeneration: number
  /** null unless an initial copy is in progress */
  seeding: SeedingState | null
  /** free bytes where the replica lives (u64) */
  diskFree: number
}

/** target → source: a generation is applied. */
export interface AckMessage {
  type: 'ack'
  generation: number
  /** true once the generation is fsynced and marked applied (false is reserved for receipt-only acks) */
  durable: boolean
  /** target wall-clock epoch ms when it was applied (display and lag, never ordering) */
  appliedAtMs: number
}

interface Rejection {
  /** the generation concerned (u64; 0 when refusing the session itself) */
  generation: number
  code: NackCode
  /** human-readable detail, at most maxMessageBytes of UTF-8, no NUL; may be empty */
  message: string
  /** when to try again (u64 ms), if the condition is expected to clear */
  retryAfterMs?: number
}

/** target → source: this generation failed; the session continues. */
export interface NackMessage extends Rejection { type: 'nack' }

/** target → source: the target will not take the session (or generation); the source backs off. */
export interface RefuseMessage extends Rejection { type: 'refuse' }

/** source → target: hash `length` bytes from `offset` in `blockSize` blocks. */
export interface HashRequestMessage {
  type: 'hashRequest'
  /** u32, echoed in the responses */
  requestId: number
  fileId: number
  offset: number
  /** ≥ 1 */
  length: number
  /** 1..MAX_BLOCK_LENGTH */
  blockSize: number
}

/**
 * target → source: hashes of consecutive blocks from `offset` (the last block of a file may be
 * short and is hashed as it is). A request is answered by one or more responses; the final one
 * has `last` set. Fewer blocks than asked means the file ends there.
 */
export interface HashResponseMessage {
  type: 'hashResponse'
  requestId: number
  fileId: number
  offset: number
  blockSize: number
  /** HASH_LENGTH bytes each, at most maxHashesPerFrame; empty only in a last response */
  hashes: Uint8Array[]
  last: boolean
}

/** target → source: a block failed its checksum on arrival and was refused; send it again. */
export interface ResendMessage {
  type: 'resend'
  generation: number
  fileId: number
  offset: number
  /** ≥ 1 */
  length: number
}

/** Keepalive; the receiver answers with pong echoing nonce and timestamp. */
export interface PingMessage {
  type: 'ping'
  /** u32 */
  nonce: number
  /** sender's clock in integer ms (u64; monotonic for RTT) */
  timestampMs: number
}

export interface PongMessage {
  type: 'pong'
  nonce: number
  /** the ping's timestampMs, echoed: RTT = now - echoTimestampMs on the pinger's clock */
  echoTimestampMs: number
  /** the responder's wall clock in ms (u64), for display of skew and lag */
  timestampMs: number
}

/** One block of a haveQuery: where it goes in the file, and the hash of its content. */
export interface HaveBlock {
  /** u64 */
  offset: number
  /** 1..MAX_BLOCK_LENGTH (u32) */
  length: number
  /** HASH_LENGTH bytes: BLAKE3 of the block's bytes, truncated (the delta checksum of the block) */
  hash: Uint8Array
}

/**
 * source → target, inside a generation (after begin, before end), on 1.2.0 streams only: "these
 * blocks of `fileId` have these hashes; take the ones you already hold". The target copies every
 * block it can find by hash in its content index — re-reading and re-hashing the candidate first
 * — into the generation at `offset`, exactly as if it had arrived in a blocks frame, and answers
 * with which ones it wrote. The source then leaves those out of the data stream. Blocks are
 * ascending and non-overlapping.
 */
export interface HaveQueryMessage {
  type: 'haveQuery'
  /** u32, echoed in the answer */
  queryId: number
  /** the generation in progress (u64) */
  generation: number
  fileId: number
  /** 1..maxHaveBlocks */
  blocks: HaveBlock[]
}

/**
 * target → source: the answer to one haveQuery, in stream order. `held[i]` true: block i of the
 * query is written into the generation (the source must not send it); false: send it. A
 * target that refused the generation answers all false.
 */
export interface HaveAnswerMessage {
  type: 'haveAnswer'
  queryId: number
  /** one flag per block of the query (1..maxHaveBlocks), a bitmap on the wire */
  held: boolean[]
}

export type ControlMessage =
  | HelloMessage
  | TargetStateMessage
  | AckMessage
  | NackMessage
  | RefuseMessage
  | HashRequestMessage
  | HashResponseMessage
  | ResendMessage
  | PingMessage
  | PongMessage
  | HaveQueryMessage
  | HaveAnswerMessage

export const CONTROL_TYPE_OF: Readonly<Record<ControlMessage['type'], ControlType>> = Object.freeze({
  hello: ControlType.Hello,
  targetState: ControlType.TargetState,
  ack: ControlType.Ack,
  nack: ControlType.Nack,
  refuse: ControlType.Refuse,
  hashRequest: ControlType.HashRequest,
  hashResponse: ControlType.HashResponse,
  resend: ControlType.Resend,
  ping: ControlType.Ping,
  pong: ControlType.Pong,
  haveQuery: ControlType.HaveQuery,
  haveAnswer: ControlType.HaveAnswer
})

/** True for a frame type byte of a control message this version knows. */
export function isControlType (type: number): type is ControlType {
  return type >= ControlType.Hello && type <= ControlType.HaveAnswer
}

const CONTROL_TYPES = new Set<string>(Object.keys(CONTROL_TYPE_OF))

/** Tells a control message from a delta frame among decoded stream items. */
export function isControlMessage (item: { type: string }): item is ControlMessage {
  return CONTROL_TYPES.has(item.type)
}
