/**
 * Binary layout of control messages. Integers are big-endian; the frame header is the delta
 * codec's (see messages.ts for the type-number split).
 *
 *   frame        = type u8 | bodyLength u32 | body
 *   hello        = protocolVersion u16 | flags u8 (bit 0 epoch, bit 1 retention) | seedMode u8 | vm str
 *                  | sourceNode str | [epoch u64] | [retention] | fileCount u32 | file*
 *   retention    = count u32 | keepAllWithinMs u64 | flags u8 (bit 0 hourlyBeyond)   (1.1.0 streams only:
 *                  a 1.0.0 peer refuses flag bit 1, so a source sets it only where 1.1.0 was negotiated)
 *   file         = fileId u32 | kind u8 | blockSize u32 | size u64 | path str
 *   targetState  = vm str | appliedGeneration u64 | appliedConsistentGeneration u64 | diskFree u64
 *                  | flags u8 (bit 0 seeding) | [seedGeneration u64 | rangeCount u32 | range*]
 *   range        = fileId u32 | offset u64 | length u64
 *   ack          = generation u64 | flags u8 (bit 0 durable) | appliedAtMs u64
 *   nack, refuse = generation u64 | code u8 | flags u8 (bit 0 retryAfter) | [retryAfterMs u64] | message str0
 *   hashRequest  = requestId u32 | fileId u32 | offset u64 | length u64 | blockSize u32
 *   hashResponse = requestId u32 | fileId u32 | offset u64 | blockSize u32 | flags u8 (bit 0 last)
 *                  | count u32 | hash [16] × count
 *   resend       = generation u64 | fileId u32 | offset u64 | length u64
 *   ping         = nonce u32 | timestampMs u64
 *   pong         = nonce u32 | echoTimestampMs u64 | timestampMs u64
 *   haveQuery    = queryId u32 | generation u64 | fileId u32 | count u32 | haveBlock × count   (1.2.0 streams)
 *   haveBlock    = offset u64 | length u32 | hash [16]     (ascending, non-overlapping, length ≥ 1)
 *   haveAnswer   = queryId u32 | count u32 | bitmap [ceil(count / 8)]   (bit i = byte i>>3, 0x80 >> (i&7);
 *                  bits past count are zero)
 *   str          = byteLength u16 | UTF-8 (non-empty, no NUL); str0 may be empty
 *
 * Reserved flag bits must be zero and u64 values fit 2^53 - 1, so every message has exactly one
 * encoding (decode → encode gives the same bytes back). The header alone decides whether a body
 * may be buffered (checkControlHeader). Decoded hashes are views into the input (no copies).
 */
import { FileKind } from '../delta/messages.ts'
import { FRAME_HEADER_BYTES } from '../delta/codec.ts'
import { decodeWholeFrame } from '../common/frame-stream.ts'
import {
  ReplicationBadEnumError, ReplicationEncodeError, ReplicationFrameTooLargeError, ReplicationLimitExceededError,
  ReplicationMalformedFrameError, ReplicationTruncatedError, ReplicationUnknownFrameError, isPeerProtocolError
} from './errors.ts'
import { FIXED_BODY_BYTES, HAVE_BLOCK_BYTES, HELLO_FILE_FIXED_BYTES, MAX_BLOCK_LENGTH, MAX_RETENTION_COUNT, RANGE_BYTES, maxBodyBytes, minBodyBytes, resolveControlLimits } from './limits.ts'
import type { ControlLimits } from './limits.ts'
import { CONTROL_TYPE_OF, ControlType, HASH_LENGTH, NackCode, SeedMode, isControlType } from './messages.ts'
import type {
  AckMessage, ControlMessage, FileRange, HashRequestMessage, HashResponseMessage, HaveAnswerMessage, HaveBlock, HaveQueryMessage,
  HelloFile, HelloMessage, HelloRetention,
  NackMessage, PingMessage, PongMessage, RefuseMessage, ResendMessage, TargetStateMessage
} from './messages.ts'
import { checkMergedRanges } from './ranges.ts'
import { Reader, Writer } from './wire.ts'

export { FRAME_HEADER_BYTES }

export interface ControlCodecOptions {
  /** Lower (or raise, up to the ceilings) the default limits. */
  limits?: Partial<ControlLimits>
}

const FLAG_EPOCH = 1
const FLAG_RETENTION = 2
const FLAG_HOURLY = 1
const FLAG_SEEDING = 1
const FLAG_DURABLE = 1
const FLAG_RETRY = 1
const FLAG_LAST = 1
const MAX_SAFE = Number.MAX_SAFE_INTEGER

const isSeedMode = (v: number): v is SeedMode => v === SeedMode.Full || v === SeedMode.Existing
const isFileKind = (v: number): v is FileKind => v === FileKind.Disk || v === FileKind.WholeFile
const isNackCode = (v: number): v is NackCode => Number.isInteger(v) && v >= NackCode.DiskFull && v <= NackCode.Internal

/**
 * Judges a control frame header alone: unknown types, sizes a type can never have and sizes over
 * the limit are refused here, before anything is allocated.
 */
export function checkControlHeader (type: number, bodyLength: number, limits: ControlLimits): ControlType {
  if (!isControlType(type)) throw new ReplicationUnknownFrameError(`unknown control frame type ${type}`)
  const fixed = FIXED_BODY_BYTES[type]
  if (fixed !== undefined) {
    if (bodyLength !== fixed) throw new ReplicationMalformedFrameError(`control type ${type} body of ${bodyLength} bytes, expected ${fixed}`)
    return type
  }
  const max = maxBodyBytes(type, limits)
  if (bodyLength > max) throw new ReplicationFrameTooLargeError(`control type ${type} body of ${bodyLength} bytes exceeds ${max}`)
  const min = minBodyBytes(type)
  if (bodyLength < min) throw new ReplicationMalformedFrameError(`control type ${type} body of ${bodyLength} bytes, at least ${min} needed`)
  return type
}

/** Decodes one complete control frame (header and body, nothing more). */
export function decodeControl (bytes: Uint8Array, options: ControlCodecOptions = {}): ControlMessage {
  const limits = resolveControlLimits(options.limits)
  return decodeWholeFrame<ControlMessage>(bytes, {
    checkType: (type) => { if (!isControlType(type)) throw new ReplicationUnknownFrameError(`unknown control frame type ${type}`) },
    checkHeader: (type, bodyLength) => { checkControlHeader(type, bodyLength, limits) },
    decodeBody: (type, body) => decodeControlBody(type as ControlType, body, limits),
    truncated: (message) => new ReplicationTruncatedError(message),
    malformed: (message) => new ReplicationMalformedFrameError(message),
    isProtocolError: isPeerProtocolError
  })
}

/** Decodes a body whose header already passed checkControlHeader. */
export function decodeControlBody (type: ControlType, body: Uint8Array, limits: ControlLimits): ControlMessage {
  const name = NAME_OF_TYPE.get(type)
  if (name === undefined) throw new ReplicationUnknownFrameError(`unknown control frame type ${type}`)
  return CODECS[name].decode(new Reader(body, name), limits)
}

function decodeHello (r: Reader, limits: ControlLimits): HelloMessage {
  const protocolVersion = r.u16('protocolVersion')
  const flags = r.flags('flags', FLAG_EPOCH | FLAG_RETENTION)
  const seedMode = r.u8('seedMode')
  if (!isSeedMode(seedMode)) throw new ReplicationBadEnumError(`hello: unknown seed mode ${seedMode}`)
  const vm = r.string('vm', limits.maxNameBytes)
  const sourceNode = r.string('sourceNode', limits.maxNameBytes)
  const epoch = (flags & FLAG_EPOCH) !== 0 ? r.u64('epoch') : undefined
  let retention: HelloRetention | undefined
  if ((flags & FLAG_RETENTION) !== 0) {
    const count = r.u32('retentionCount')
    if (count > MAX_RETENTION_COUNT) throw new ReplicationLimitExceededError(`hello: retention count ${count} exceeds ${MAX_RETENTION_COUNT}`)
    const keepAllWithinMs = r.u64('keepAllWithinMs')
    const rf = r.flags('retentionFlags', FLAG_HOURLY)
    retention = { count, keepAllWithinMs, hourlyBeyond: (rf & FLAG_HOURLY) !== 0 }
  }
  const count = r.u32('fileCount')
  if (count === 0) throw new ReplicationMalformedFrameError('hello: no files')
  if (count > limits.maxFiles) throw new ReplicationLimitExceededError(`hello: ${count} files exceeds ${limits.maxFiles}`)
  if (count * (HELLO_FILE_FIXED_BYTES + 1) > r.remaining) throw new ReplicationMalformedFrameError(`hello: ${count} files cannot fit in ${r.remaining} bytes`)
  const files: HelloFile[] = []
  const ids = new Set<number>()
  for (let i = 0; i < count; i++) {
    const fileId = r.u32('fileId')
    const kind = r.u8('kind')
    if (!isFileKind(kind)) throw new ReplicationBadEnumError(`hello: unknown file kind ${kind}`)
    const blockSize = r.u32('blockSize')
    if (blockSize < 1 || blockSize > MAX_BLOCK_LENGTH) throw new ReplicationLimitExceededError(`hello: block size ${blockSize} outside [1, ${MAX_BLOCK_LENGTH}]`)
    const size = r.u64('size')
    const path = r.string('path', limits.maxPathBytes)
    if (ids.has(fileId)) throw new ReplicationMalformedFrameError(`hello: file id ${fileId} repeats`)
    ids.add(fileId)
    files.push({ fileId, path, kind, size, blockSize })
  }
  r.end()
  const msg: HelloMessage = { type: 'hello', protocolVersion, vm, sourceNode, files, seedMode }
  if (epoch !== undefined) msg.epoch = epoch
  if (retention !== undefined) msg.retention = retention
  return msg
}

function decodeTargetState (r: Reader, limits: ControlLimits): TargetStateMessage {
  const vm = r.string('vm', limits.maxNameBytes)
  const appliedGeneration = r.u64('appliedGeneration')
  const appliedConsistentGeneration = r.u64('appliedConsistentGeneration')
  if (appliedConsistentGeneration > appliedGeneration) {
    throw new ReplicationMalformedFrameError(`targetState: consistent generation ${appliedConsistentGeneration} is newer than applied ${appliedGeneration}`)
  }
  const diskFree = r.u64('diskFree')
  const flags = r.flags('flags', FLAG_SEEDING)
  let seeding: TargetStateMessage['seeding'] = null
  if ((flags & FLAG_SEEDING) !== 0) {
    const generation = r.u64('seedGeneration')
    const count = r.u32('rangeCount')
    if (count > limits.maxDurableRanges) throw new ReplicationLimitExceededError(`targetState: ${count} ranges exceeds ${limits.maxDurableRanges}`)
    if (count * RANGE_BYTES !== r.remaining) throw new ReplicationMalformedFrameError(`targetState: ${count} ranges do not fill ${r.remaining} bytes`)
    const durableRanges: FileRange[] = []
    for (let i = 0; i < count; i++) {
      durableRanges.push({ fileId: r.u32('fileId'), offset: r.u64('offset'), length: r.u64('length') })
    }
    checkMergedRanges(durableRanges)
    seeding = { generation, durableRanges }
  }
  r.end()
  return { type: 'targetState', vm, appliedGeneration, appliedConsistentGeneration, seeding, diskFree }
}

function decodeAck (r: Reader): AckMessage {
  const generation = r.u64('generation')
  const flags = r.flags('flags', FLAG_DURABLE)
  const appliedAtMs = r.u64('appliedAtMs')
  r.end()
  return { type: 'ack', generation, durable: (flags & FLAG_DURABLE) !== 0, appliedAtMs }
}

function decodeRejection<T extends 'nack' | 'refuse'> (type: T, r: Reader, limits: ControlLimits): NackMessage | RefuseMessage {
  const generation = r.u64('generation')
  const code = r.u8('code')
  if (!isNackCode(code)) throw new ReplicationBadEnumError(`${type}: unknown code ${code}`)
  const flags = r.flags('flags', FLAG_RETRY)
  const retryAfterMs = (flags & FLAG_RETRY) !== 0 ? r.u64('retryAfterMs') : undefined
  const message = r.string('message', limits.maxMessageBytes, true)
  r.end()
  const msg: NackMessage | RefuseMessage = { type, generation, code, message }
  if (retryAfterMs !== undefined) msg.retryAfterMs = retryAfterMs
  return msg
}

function checkSpan (offset: number, length: number, what: string): void {
  if (offset + length > MAX_SAFE) throw new ReplicationLimitExceededError(`${what}: ${offset} + ${length} ends past 2^53 - 1`)
}

function decodeHashRequest (r: Reader): HashRequestMessage {
  const requestId = r.u32('requestId')
  const fileId = r.u32('fileId')
  const offset = r.u64('offset')
  const length = r.u64('length')
  const blockSize = r.u32('blockSize')
  r.end()
  if (length < 1) throw new ReplicationMalformedFrameError('hashRequest: empty range')
  checkSpan(offset, length, 'hashRequest')
  if (blockSize < 1 || blockSize > MAX_BLOCK_LENGTH) throw new ReplicationLimitExceededError(`hashRequest: block size ${blockSize} outside [1, ${MAX_BLOCK_LENGTH}]`)
  return { type: 'hashRequest', requestId, fileId, offset, length, blockSize }
}

function decodeHashResponse (r: Reader, limits: ControlLimits): HashResponseMessage {
  const requestId = r.u32('requestId')
  const fileId = r.u32('fileId')
  const offset = r.u64('offset')
  const blockSize = r.u32('blockSize')
  if (blockSize < 1 || blockSize > MAX_BLOCK_LENGTH) throw new ReplicationLimitExceededError(`hashResponse: block size ${blockSize} outside [1, ${MAX_BLOCK_LENGTH}]`)
  const flags = r.flags('flags', FLAG_LAST)
  const count = r.u32('count')
  if (count > limits.maxHashesPerFrame) throw new ReplicationLimitExceededError(`hashResponse: ${count} hashes exceeds ${limits.maxHashesPerFrame}`)
  if (count * HASH_LENGTH !== r.remaining) throw new ReplicationMalformedFrameError(`hashResponse: ${count} hashes do not fill ${r.remaining} bytes`)
  const last = (flags & FLAG_LAST) !== 0
  if (count === 0 && !last) throw new ReplicationMalformedFrameError('hashResponse: empty and not last')
  if (count > 0) checkSpan(offset, (count - 1) * blockSize + 1, 'hashResponse')
  const hashes: Uint8Array[] = []
  for (let i = 0; i < count; i++) hashes.push(r.bytes(HASH_LENGTH, 'hash'))
  r.end()
  return { type: 'hashResponse', requestId, fileId, offset, blockSize, hashes, last }
}

function decodeResend (r: Reader): ResendMessage {
  const generation = r.u64('generation')
  const fileId = r.u32('fileId')
  const offset = r.u64('offset')
  const length = r.u64('length')
  r.end()
  if (length < 1) throw new ReplicationMalformedFrameError('resend: empty range')
  checkSpan(offset, length, 'resend')
  return { type: 'resend', generation, fileId, offset, length }
}

function decodePing (r: Reader): PingMessage {
  const nonce = r.u32('nonce')
  const timestampMs = r.u64('timestampMs')
  r.end()
  return { type: 'ping', nonce, timestampMs }
}

function decodePong (r: Reader): PongMessage {
  const nonce = r.u32('nonce')
  const echoTimestampMs = r.u64('echoTimestampMs')
  const timestampMs = r.u64('timestampMs')
  r.end()
  return { type: 'pong', nonce, echoTimestampMs, timestampMs }
}

function decodeHaveQuery (r: Reader, limits: ControlLimits): HaveQueryMessage {
  const queryId = r.u32('queryId')
  const generation = r.u64('generation')
  const fileId = r.u32('fileId')
  const count = r.u32('count')
  if (count === 0) throw new ReplicationMalformedFrameError('haveQuery: no blocks')
  if (count > limits.maxHaveBlocks) throw new ReplicationLimitExceededError(`haveQuery: ${count} blocks exceeds ${limits.maxHaveBlocks}`)
  if (count * HAVE_BLOCK_BYTES !== r.remaining) throw new ReplicationMalformedFrameError(`haveQuery: ${count} blocks do not fill ${r.remaining} bytes`)
  const blocks: HaveBlock[] = []
  let prevEnd = 0
  for (let i = 0; i < count; i++) {
    const offset = r.u64('offset')
    const length = r.u32('length')
    const hash = r.bytes(HASH_LENGTH, 'hash')
    if (length < 1 || length > MAX_BLOCK_LENGTH) throw new ReplicationLimitExceededError(`haveQuery: block of ${length} bytes outside [1, ${MAX_BLOCK_LENGTH}]`)
    checkSpan(offset, length, 'haveQuery')
    if (offset < prevEnd) throw new ReplicationMalformedFrameError(`haveQuery: block at ${offset} overlaps or precedes the previous one`)
    prevEnd = offset + length
    blocks.push({ offset, length, hash })
  }
  r.end()
  return { type: 'haveQuery', queryId, generation, fileId, blocks }
}

function decodeHaveAnswer (r: Reader, limits: ControlLimits): HaveAnswerMessage {
  const queryId = r.u32('queryId')
  const count = r.u32('count')
  if (count === 0) throw new ReplicationMalformedFrameError('haveAnswer: no flags')
  if (count > limits.maxHaveBlocks) throw new ReplicationLimitExceededError(`haveAnswer: ${count} flags exceeds ${limits.maxHaveBlocks}`)
  if (Math.ceil(count / 8) !== r.remaining) throw new ReplicationMalformedFrameError(`haveAnswer: ${count} flags do not fill ${r.remaining} bytes`)
  const bitmap = r.bytes(r.remaining, 'bitmap')
  r.end()
  const held: boolean[] = []
  for (let i = 0; i < count; i++) held.push(((bitmap[i >> 3] as number) & (0x80 >> (i & 7))) !== 0)
  // one encoding per message: the unused bits of the last byte are zero
  const tail = count & 7
  if (tail !== 0 && ((bitmap[bitmap.length - 1] as number) & (0xff >> tail)) !== 0) throw new ReplicationMalformedFrameError('haveAnswer: bits set past the last flag')
  return { type: 'haveAnswer', queryId, held }
}

// ---------------------------------------------------------------- encode

/**
 * Encodes one control message as a whole frame, checking it against the rules the decoder
 * applies (ReplicationEncodeError otherwise), so we never send what a peer must refuse.
 */
export function encodeControl (msg: ControlMessage, options: ControlCodecOptions = {}): Uint8Array {
  const limits = resolveControlLimits(options.limits)
  const type = Object.hasOwn(CONTROL_TYPE_OF, msg.type) ? CONTROL_TYPE_OF[msg.type] : undefined
  if (type === undefined) throw new ReplicationEncodeError(`unknown control message type ${String((msg as { type: unknown }).type)}`)
  const w = new Writer(msg.type, FIXED_BODY_BYTES[type] !== undefined ? FRAME_HEADER_BYTES + (FIXED_BODY_BYTES[type] as number) : 256)
  w.u8(type, 'type')
  w.u32(0, 'bodyLength')
  ;(CODECS[msg.type] as ControlCodec<ControlMessage>).encode(w, msg, limits)
  const out = w.finish()
  const bodyLength = out.byteLength - FRAME_HEADER_BYTES
  if (bodyLength > maxBodyBytes(type, limits) || bodyLength > 0xffff_ffff) {
    throw new ReplicationEncodeError(`${msg.type}: body of ${bodyLength} bytes exceeds ${maxBodyBytes(type, limits)}`)
  }
  new DataView(out.buffer, out.byteOffset, out.byteLength).setUint32(1, bodyLength)
  return out
}

function encodeAck (w: Writer, msg: AckMessage): void {
  w.u64(msg.generation, 'generation')
  w.u8(msg.durable ? FLAG_DURABLE : 0, 'flags')
  w.u64(msg.appliedAtMs, 'appliedAtMs')
}

function encodeHashRequest (w: Writer, msg: HashRequestMessage): void {
  if (!(msg.length >= 1)) throw new ReplicationEncodeError('hashRequest: empty range')
  checkEncodeBlockSize(msg.blockSize, 'hashRequest')
  w.u32(msg.requestId, 'requestId')
  w.u32(msg.fileId, 'fileId')
  w.u64(msg.offset, 'offset')
  w.u64(msg.length, 'length')
  w.u32(msg.blockSize, 'blockSize')
  if (msg.offset + msg.length > MAX_SAFE) throw new ReplicationEncodeError('hashRequest: range ends past 2^53 - 1')
}

function encodeResend (w: Writer, msg: ResendMessage): void {
  if (!(msg.length >= 1)) throw new ReplicationEncodeError('resend: empty range')
  w.u64(msg.generation, 'generation')
  w.u32(msg.fileId, 'fileId')
  w.u64(msg.offset, 'offset')
  w.u64(msg.length, 'length')
  if (msg.offset + msg.length > MAX_SAFE) throw new ReplicationEncodeError('resend: range ends past 2^53 - 1')
}

function encodePing (w: Writer, msg: PingMessage): void {
  w.u32(msg.nonce, 'nonce')
  w.u64(msg.timestampMs, 'timestampMs')
}

function encodePong (w: Writer, msg: PongMessage): void {
  w.u32(msg.nonce, 'nonce')
  w.u64(msg.echoTimestampMs, 'echoTimestampMs')
  w.u64(msg.timestampMs, 'timestampMs')
}

function encodeHaveQuery (w: Writer, msg: HaveQueryMessage, limits: ControlLimits): void {
  const count = msg.blocks.length
  if (count === 0) throw new ReplicationEncodeError('haveQuery: no blocks')
  if (count > limits.maxHaveBlocks) throw new ReplicationEncodeError(`haveQuery: ${count} blocks exceeds ${limits.maxHaveBlocks}`)
  w.u32(msg.queryId, 'queryId')
  w.u64(msg.generation, 'generation')
  w.u32(msg.fileId, 'fileId')
  w.u32(count, 'count')
  let prevEnd = 0
  for (const b of msg.blocks) {
    checkEncodeBlockSize(b.length, 'haveQuery')
    if (b.hash.byteLength !== HASH_LENGTH) throw new ReplicationEncodeError(`haveQuery: hash of ${b.hash.byteLength} bytes, expected ${HASH_LENGTH}`)
    if (b.offset < prevEnd) throw new ReplicationEncodeError(`haveQuery: block at ${b.offset} overlaps or precedes the previous one`)
    w.u64(b.offset, 'offset')
    w.u32(b.length, 'length')
    w.raw(b.hash)
    if (b.offset + b.length > MAX_SAFE) throw new ReplicationEncodeError('haveQuery: block ends past 2^53 - 1')
    prevEnd = b.offset + b.length
  }
}

function encodeHaveAnswer (w: Writer, msg: HaveAnswerMessage, limits: ControlLimits): void {
  const count = msg.held.length
  if (count === 0) throw new ReplicationEncodeError('haveAnswer: no flags')
  if (count > limits.maxHaveBlocks) throw new ReplicationEncodeError(`haveAnswer: ${count} flags exceeds ${limits.maxHaveBlocks}`)
  w.u32(msg.queryId, 'queryId')
  w.u32(count, 'count')
  const bitmap = new Uint8Array(Math.ceil(count / 8))
  msg.held.forEach((h, i) => { if (h) bitmap[i >> 3] = (bitmap[i >> 3] as number) | (0x80 >> (i & 7)) })
  w.raw(bitmap)
}

function checkEncodeBlockSize (blockSize: number, what: string): void {
  if (!Number.isInteger(blockSize) || blockSize < 1 || blockSize > MAX_BLOCK_LENGTH) {
    throw new ReplicationEncodeError(`${what}: block size ${String(blockSize)} outside [1, ${MAX_BLOCK_LENGTH}]`)
  }
}

function encodeHello (w: Writer, msg: HelloMessage, limits: ControlLimits): void {
  if (!isSeedMode(msg.seedMode)) throw new ReplicationEncodeError(`hello: unknown seed mode ${String(msg.seedMode)}`)
  if (msg.files.length === 0) throw new ReplicationEncodeError('hello: no files')
  if (msg.files.length > limits.maxFiles) throw new ReplicationEncodeError(`hello: ${msg.files.length} files exceeds ${limits.maxFiles}`)
  const rt = msg.retention
  if (rt !== undefined) {
    if (!Number.isInteger(rt.count) || rt.count < 0 || rt.count > MAX_RETENTION_COUNT) throw new ReplicationEncodeError(`hello: retention count ${String(rt.count)} outside [0, ${MAX_RETENTION_COUNT}]`)
    if (typeof rt.hourlyBeyond !== 'boolean') throw new ReplicationEncodeError('hello: retention hourlyBeyond is not a boolean')
  }
  w.u16(msg.protocolVersion, 'protocolVersion')
  w.u8((msg.epoch !== undefined ? FLAG_EPOCH : 0) | (rt !== undefined ? FLAG_RETENTION : 0), 'flags')
  w.u8(msg.seedMode, 'seedMode')
  w.str(msg.vm, 'vm', limits.maxNameBytes)
  w.str(msg.sourceNode, 'sourceNode', limits.maxNameBytes)
  if (msg.epoch !== undefined) w.u64(msg.epoch, 'epoch')
  if (rt !== undefined) {
    w.u32(rt.count, 'retentionCount')
    w.u64(rt.keepAllWithinMs, 'keepAllWithinMs')
    w.u8(rt.hourlyBeyond ? FLAG_HOURLY : 0, 'retentionFlags')
  }
  w.u32(msg.files.length, 'fileCount')
  const ids = new Set<number>()
  for (const f of msg.files) {
    if (!isFileKind(f.kind)) throw new ReplicationEncodeError(`hello: unknown file kind ${String(f.kind)}`)
    checkEncodeBlockSize(f.blockSize, 'hello')
    if (ids.has(f.fileId)) throw new ReplicationEncodeError(`hello: file id ${f.fileId} repeats`)
    ids.add(f.fileId)
    w.u32(f.fileId, 'fileId')
    w.u8(f.kind, 'kind')
    w.u32(f.blockSize, 'blockSize')
    w.u64(f.size, 'size')
    w.str(f.path, 'path', limits.maxPathBytes)
  }
}

function encodeTargetState (w: Writer, msg: TargetStateMessage, limits: ControlLimits): void {
  if (msg.appliedConsistentGeneration > msg.appliedGeneration) throw new ReplicationEncodeError('targetState: consistent generation newer than applied')
  w.str(msg.vm, 'vm', limits.maxNameBytes)
  w.u64(msg.appliedGeneration, 'appliedGeneration')
  w.u64(msg.appliedConsistentGeneration, 'appliedConsistentGeneration')
  w.u64(msg.diskFree, 'diskFree')
  w.u8(msg.seeding !== null ? FLAG_SEEDING : 0, 'flags')
  if (msg.seeding === null) return
  const ranges = msg.seeding.durableRanges
  if (ranges.length > limits.maxDurableRanges) throw new ReplicationEncodeError(`targetState: ${ranges.length} ranges exceeds ${limits.maxDurableRanges} (see durableRanges())`)
  w.u64(msg.seeding.generation, 'seedGeneration')
  w.u32(ranges.length, 'rangeCount')
  for (const r of ranges) {
    w.u32(r.fileId, 'fileId')
    w.u64(r.offset, 'offset')
    w.u64(r.length, 'length')
  }
  try {
    checkMergedRanges(ranges)
  } catch (err) {
    throw new ReplicationEncodeError(`targetState: durable ranges not canonical (see mergeRanges()): ${(err as Error).message}`)
  }
}

function encodeRejection (w: Writer, msg: NackMessage | RefuseMessage, limits: ControlLimits): void {
  if (!isNackCode(msg.code)) throw new ReplicationEncodeError(`${msg.type}: unknown code ${String(msg.code)}`)
  w.u64(msg.generation, 'generation')
  w.u8(msg.code, 'code')
  w.u8(msg.retryAfterMs !== undefined ? FLAG_RETRY : 0, 'flags')
  if (msg.retryAfterMs !== undefined) w.u64(msg.retryAfterMs, 'retryAfterMs')
  w.str(msg.message, 'message', limits.maxMessageBytes, true)
}

function encodeHashResponse (w: Writer, msg: HashResponseMessage, limits: ControlLimits): void {
  checkEncodeBlockSize(msg.blockSize, 'hashResponse')
  const count = msg.hashes.length
  if (count > limits.maxHashesPerFrame) throw new ReplicationEncodeError(`hashResponse: ${count} hashes exceeds ${limits.maxHashesPerFrame} (see hashResponses())`)
  if (count === 0 && !msg.last) throw new ReplicationEncodeError('hashResponse: empty and not last')
  w.u32(msg.requestId, 'requestId')
  w.u32(msg.fileId, 'fileId')
  w.u64(msg.offset, 'offset')
  w.u32(msg.blockSize, 'blockSize')
  w.u8(msg.last ? FLAG_LAST : 0, 'flags')
  w.u32(count, 'count')
  if (count > 0 && msg.offset + (count - 1) * msg.blockSize + 1 > MAX_SAFE) throw new ReplicationEncodeError('hashResponse: blocks end past 2^53 - 1')
  for (const h of msg.hashes) {
    if (h.byteLength !== HASH_LENGTH) throw new ReplicationEncodeError(`hashResponse: hash of ${h.byteLength} bytes, expected ${HASH_LENGTH}`)
    w.raw(h)
  }
}

/**
 * Splits the hashes answering one request into frames of at most `maxPerFrame`, the final one
 * marked last (an empty request range still gets one empty last response).
 */
export function * hashResponses (
  request: Pick<HashRequestMessage, 'requestId' | 'fileId' | 'offset' | 'blockSize'>,
  hashes: ReadonlyArray<Uint8Array>,
  maxPerFrame: number = resolveControlLimits().maxHashesPerFrame
): Generator<HashResponseMessage, void, undefined> {
  const per = Math.max(1, Math.floor(maxPerFrame))
  let i = 0
  do {
    const part = hashes.slice(i, i + per)
    yield {
      type: 'hashResponse',
      requestId: request.requestId,
      fileId: request.fileId,
      offset: request.offset + i * request.blockSize,
      blockSize: request.blockSize,
      hashes: part,
      last: i + per >= hashes.length
    }
    i += per
  } while (i < hashes.length)
}

// ---------------------------------------------------------------- pairs

/** One control message's body: its encoder and decoder side by side. */
interface ControlCodec<M extends ControlMessage> {
  encode: (w: Writer, msg: M, limits: ControlLimits) => void
  decode: (r: Reader, limits: ControlLimits) => M
}

type ControlCodecs = { [K in ControlMessage['type']]: ControlCodec<Extract<ControlMessage, { type: K }>> }

const CODECS: ControlCodecs = {
  hello: { encode: encodeHello, decode: decodeHello },
  targetState: { encode: encodeTargetState, decode: decodeTargetState },
  ack: { encode: encodeAck, decode: decodeAck },
  nack: { encode: encodeRejection, decode: (r, limits) => decodeRejection('nack', r, limits) as NackMessage },
  refuse: { encode: encodeRejection, decode: (r, limits) => decodeRejection('refuse', r, limits) as RefuseMessage },
  hashRequest: { encode: encodeHashRequest, decode: decodeHashRequest },
  hashResponse: { encode: encodeHashResponse, decode: decodeHashResponse },
  resend: { encode: encodeResend, decode: decodeResend },
  ping: { encode: encodePing, decode: decodePing },
  pong: { encode: encodePong, decode: decodePong },
  haveQuery: { encode: encodeHaveQuery, decode: decodeHaveQuery },
  haveAnswer: { encode: encodeHaveAnswer, decode: decodeHaveAnswer }
}

const NAME_OF_TYPE = new Map<number, ControlMessage['type']>(
  (Object.entries(CONTROL_TYPE_OF) as Array<[ControlMessage['type'], ControlType]>).map(([name, type]) => [type, name])
)
