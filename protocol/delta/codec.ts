/**
 * Binary layout of delta frames. All integers are big-endian (network order).
 *
 *   frame   = type u8 | bodyLength u32 | body
 *   begin   = vm str | generation u64 | baseGeneration u64 | flags u8 (bit 0 consistent)
 *             | createdAtMs u64 | fileCount u32 | file*
 *   file    = fileId u32 | kind u8 | blockSize u32 | size u64 | path str
 *   blocks  = fileId u32 | entryCount u32 | entry*
 *   entry   = offset u64 | length u32 | encoding u8 | checksum [16] | payloadLength u32 | payload
 *   resize  = fileId u32 | size u64
 *   end     = generation u64 | blockCount u64 | byteCount u64 | flags u8 (bit 0 digest) | digest [16]?
 *   str     = byteLength u16 | UTF-8 bytes (non-empty, no NUL)
 *
 * Unused flag bits must be zero. u64 values above 2^53 - 1 are refused (DeltaLimitExceededError).
 * The header alone decides whether a body may be buffered (checkHeader), so a hostile length is
 * refused before any allocation. Decoded frames hold views into the input bytes (no copies).
 * This module checks each frame on its own; cross-frame rules live in generation.ts.
 */
import { FRAME_HEADER_BYTES, decodeWholeFrame } from '../common/frame-stream.ts'
import type { FrameProtocol } from '../common/frame-stream.ts'
import { BlockEncoding, CHECKSUM_LENGTH } from './block.ts'
import { FileKind, FrameType } from './messages.ts'
import type { BeginFrame, BlockEntry, BlocksFrame, EndFrame, Frame, ResizeFrame } from './messages.ts'
import { resolveLimits } from './limits.ts'
import type { DeltaLimits } from './limits.ts'
import { WireReader, FrameWriter, checkU32, checkU64, encodeString } from './wire.ts'
import {
  DeltaBadEncodingError,
  DeltaBlockTooLargeError,
  DeltaFrameTooLargeError,
  DeltaLimitExceededError,
  DeltaMalformedFrameError,
  DeltaProtocolError,
  DeltaTruncatedError,
  DeltaUnknownFrameError
} from './errors.ts'

export { FRAME_HEADER_BYTES }
const ENTRY_HEADER_BYTES = 8 + 4 + 1 + CHECKSUM_LENGTH + 4
const FILE_MIN_BYTES = 4 + 1 + 4 + 8 + 2 + 1
const BEGIN_MIN_BYTES = 2 + 1 + 8 + 8 + 1 + 8 + 4
const BLOCKS_MIN_BYTES = 4 + 4 + ENTRY_HEADER_BYTES
const RESIZE_BYTES = 4 + 8
const END_BYTES = 8 + 8 + 8 + 1
const END_DIGEST_BYTES = END_BYTES + CHECKSUM_LENGTH

const FLAG_CONSISTENT = 1
const FLAG_DIGEST = 1

export interface CodecOptions {
  /** Lower (or raise, up to the wire ceilings) the default limits. */
  limits?: Partial<DeltaLimits>
}

/** True for a frame type byte this version knows. */
export function isKnownFrameType (type: number): type is FrameType {
  return type === FrameType.Begin || type === FrameType.Blocks || type === FrameType.Resize || type === FrameType.End
}

/**
 * Decides from a header alone whether its body may be buffered: unknown types, impossible sizes
 * and sizes over the limit are refused here, before anything is allocated.
 */
export function checkHeader (type: number, bodyLength: number, limits: DeltaLimits): FrameType {
  if (!isKnownFrameType(type)) throw new DeltaUnknownFrameError(`unknown frame type ${type}`)
  switch (type) {
    case FrameType.Resize:
      if (bodyLength !== RESIZE_BYTES) throw new DeltaMalformedFrameError(`resize body of ${bodyLength} bytes, expected ${RESIZE_BYTES}`)
      return type
    case FrameType.End:
      if (bodyLength !== END_BYTES && bodyLength !== END_DIGEST_BYTES) {
        throw new DeltaMalformedFrameError(`end body of ${bodyLength} bytes, expected ${END_BYTES} or ${END_DIGEST_BYTES}`)
      }
      return type
    case FrameType.Begin:
    case FrameType.Blocks: {
      if (bodyLength > limits.maxFrameBodyBytes) {
        throw new DeltaFrameTooLargeError(`frame body of ${bodyLength} bytes exceeds ${limits.maxFrameBodyBytes}`)
      }
      const min = type === FrameType.Begin ? BEGIN_MIN_BYTES : BLOCKS_MIN_BYTES
      if (bodyLength < min) throw new DeltaMalformedFrameError(`frame type ${type} body of ${bodyLength} bytes, at least ${min} needed`)
      return type
    }
  }
}

/** The delta codec as the shared frame assembler sees it (protocol/common/frame-stream.ts). */
export function deltaFrameProtocol (limits: DeltaLimits): FrameProtocol<Frame> {
  return {
    checkType: (type) => { if (!isKnownFrameType(type)) throw new DeltaUnknownFrameError(`unknown frame type ${type}`) },
    checkHeader: (type, bodyLength) => { checkHeader(type, bodyLength, limits) },
    decodeBody: (type, body) => decodeFrameBody(type as FrameType, body, limits),
    truncated: (message) => new DeltaTruncatedError(message),
    malformed: (message) => new DeltaMalformedFrameError(message),
    isProtocolError: (err): err is Error => err instanceof DeltaProtocolError
  }
}

/** Decodes one complete frame (header and body, nothing more). */
export function decodeFrame (bytes: Uint8Array, options: CodecOptions = {}): Frame {
  return decodeWholeFrame(bytes, deltaFrameProtocol(resolveLimits(options.limits)))
}

/** Decodes a body whose header already passed checkHeader. */
export function decodeFrameBody (type: FrameType, body: Uint8Array, limits: DeltaLimits): Frame {
  const codec = CODECS_BY_TYPE.get(type)
  if (codec === undefined) throw new DeltaUnknownFrameError(`unknown frame type ${type}`)
  return codec.decode(new WireReader(body, codec.name), limits)
}

function decodeBegin (r: WireReader, limits: DeltaLimits): BeginFrame {
  const vm = r.string('vm', limits.maxVmNameBytes)
  const generation = r.u64('generation')
  const baseGeneration = r.u64('baseGeneration')
  const flags = r.u8('flags')
  if ((flags & ~FLAG_CONSISTENT) !== 0) throw new DeltaMalformedFrameError(`begin: unknown flags ${flags}`)
  const createdAtMs = r.u64('createdAtMs')
  const count = r.u32('fileCount')
  if (count > limits.maxFilesPerGeneration) throw new DeltaLimitExceededError(`begin: ${count} files exceeds ${limits.maxFilesPerGeneration}`)
  if (count * FILE_MIN_BYTES > r.remaining) throw new DeltaMalformedFrameError(`begin: ${count} files cannot fit in ${r.remaining} bytes`)
  const files: BeginFrame['files'] = []
  for (let i = 0; i < count; i++) {
    const fileId = r.u32('fileId')
    const kind = r.u8('kind')
    if (kind !== FileKind.Disk && kind !== FileKind.WholeFile) throw new DeltaMalformedFrameError(`begin: unknown file kind ${kind}`)
    const blockSize = r.u32('blockSize')
    const size = r.u64('size')
    const path = r.string('path', limits.maxPathBytes)
    files.push({ fileId, path, size, blockSize, kind })
  }
  r.end()
  return { type: 'begin', vm, generation, baseGeneration, consistent: (flags & FLAG_CONSISTENT) !== 0, createdAtMs, files }
}

function decodeBlocks (r: WireReader, limits: DeltaLimits): BlocksFrame {
  const fileId = r.u32('fileId')
  const count = r.u32('entryCount')
  if (count === 0) throw new DeltaMalformedFrameError('blocks: no entries')
  if (count > limits.maxEntriesPerFrame) throw new DeltaLimitExceededError(`blocks: ${count} entries exceeds ${limits.maxEntriesPerFrame}`)
  if (count * ENTRY_HEADER_BYTES > r.remaining) throw new DeltaMalformedFrameError(`blocks: ${count} entries cannot fit in ${r.remaining} bytes`)
  const entries: BlockEntry[] = []
  let rawTotal = 0
  for (let i = 0; i < count; i++) {
    const offset = r.u64('offset')
    const length = r.u32('length')
    const encoding = r.u8('encoding')
    const checksum = r.bytes(CHECKSUM_LENGTH, 'checksum')
    const payloadLength = r.u32('payloadLength')
    checkEntryShape(offset, length, encoding, payloadLength, limits)
    rawTotal += length
    if (rawTotal > limits.maxFrameRawBytes) throw new DeltaLimitExceededError(`blocks: more than ${limits.maxFrameRawBytes} raw bytes in one frame`)
    const payload = r.bytes(payloadLength, 'payload')
    entries.push({ offset, length, encoding, checksum, payload })
  }
  r.end()
  return { type: 'blocks', fileId, entries }
}

function decodeResize (r: WireReader): ResizeFrame {
  const fileId = r.u32('fileId')
  const size = r.u64('size')
  r.end()
  return { type: 'resize', fileId, size }
}

function decodeEnd (r: WireReader): EndFrame {
  const generation = r.u64('generation')
  const blockCount = r.u64('blockCount')
  const byteCount = r.u64('byteCount')
  const flags = r.u8('flags')
  if ((flags & ~FLAG_DIGEST) !== 0) throw new DeltaMalformedFrameError(`end: unknown flags ${flags}`)
  const frame: EndFrame = { type: 'end', generation, blockCount, byteCount }
  if ((flags & FLAG_DIGEST) !== 0) frame.digest = r.bytes(CHECKSUM_LENGTH, 'digest')
  r.end()
  return frame
}

/** Frame-local rules for one entry, shared by encoder and decoder. */
function checkEntryShape (offset: number, length: number, encoding: number, payloadLength: number, limits: DeltaLimits): void {
  checkU64(offset, 'offset')
  if (!Number.isInteger(length) || length < 1 || length > limits.maxBlockLength) {
    throw new DeltaBlockTooLargeError(`block length ${length} outside [1, ${limits.maxBlockLength}]`)
  }
  if (offset + length > Number.MAX_SAFE_INTEGER) throw new DeltaLimitExceededError(`block end ${offset} + ${length} exceeds 2^53 - 1`)
  switch (encoding) {
    case BlockEncoding.Raw:
      if (payloadLength !== length) throw new DeltaBadEncodingError(`raw block of ${length} bytes with a ${payloadLength}-byte payload`)
      return
    case BlockEncoding.Lz4:
      if (payloadLength < 1 || payloadLength > length) throw new DeltaBadEncodingError(`lz4 block of ${length} bytes with a ${payloadLength}-byte payload`)
      return
    case BlockEncoding.Zero:
      if (payloadLength !== 0) throw new DeltaBadEncodingError(`zero block with a ${payloadLength}-byte payload`)
      return
    default:
      throw new DeltaBadEncodingError(`unknown block encoding ${encoding}`)
  }
}

/**
 * Encodes one frame, checking it against the same frame-local rules the decoder applies, so we
 * never send what a peer must refuse. Payloads are copied into the one output buffer.
 */
export function encodeFrame (frame: Frame, options: CodecOptions = {}): Uint8Array {
  const limits = resolveLimits(options.limits)
  const codec = Object.hasOwn(CODECS, frame.type) ? CODECS[frame.type] as FrameCodec<Frame> : undefined
  if (codec === undefined) throw new DeltaUnknownFrameError(`unknown frame type ${String((frame as { type: unknown }).type)}`)
  return codec.encode(frame, limits)
}

function encodeResize (frame: ResizeFrame): Uint8Array {
  checkU32(frame.fileId, 'fileId')
  checkU64(frame.size, 'size')
  const w = header(FrameType.Resize, RESIZE_BYTES)
  w.u32(frame.fileId)
  w.u64(frame.size)
  return w.finish()
}

function encodeEnd (frame: EndFrame): Uint8Array {
  checkU64(frame.generation, 'generation')
  checkU64(frame.blockCount, 'blockCount')
  checkU64(frame.byteCount, 'byteCount')
  const digest = frame.digest
  if (digest != null && digest.byteLength !== CHECKSUM_LENGTH) throw new DeltaMalformedFrameError(`end digest of ${digest.byteLength} bytes`)
  const w = header(FrameType.End, digest == null ? END_BYTES : END_DIGEST_BYTES)
  w.u64(frame.generation)
  w.u64(frame.blockCount)
  w.u64(frame.byteCount)
  w.u8(digest == null ? 0 : FLAG_DIGEST)
  if (digest != null) w.raw(digest)
  return w.finish()
}

function header (type: FrameType, bodyLength: number): FrameWriter {
  const w = new FrameWriter(FRAME_HEADER_BYTES + bodyLength)
  w.u8(type)
  w.u32(bodyLength)
  return w
}

function checkBodySize (bodyLength: number, limits: DeltaLimits): void {
  if (bodyLength > limits.maxFrameBodyBytes) throw new DeltaFrameTooLargeError(`frame body of ${bodyLength} bytes exceeds ${limits.maxFrameBodyBytes}`)
}

function encodeBegin (frame: BeginFrame, limits: DeltaLimits): Uint8Array {
  const vm = encodeString(frame.vm, 'vm', limits.maxVmNameBytes)
  checkU64(frame.generation, 'generation')
  checkU64(frame.baseGeneration, 'baseGeneration')
  checkU64(frame.createdAtMs, 'createdAtMs')
  if (frame.files.length > limits.maxFilesPerGeneration) {
    throw new DeltaLimitExceededError(`begin: ${frame.files.length} files exceeds ${limits.maxFilesPerGeneration}`)
  }
  const paths = frame.files.map(f => {
    checkU32(f.fileId, 'fileId')
    checkU32(f.blockSize, 'blockSize')
    checkU64(f.size, 'size')
    if (f.kind !== FileKind.Disk && f.kind !== FileKind.WholeFile) throw new DeltaMalformedFrameError(`unknown file kind ${String(f.kind)}`)
    return encodeString(f.path, 'path', limits.maxPathBytes)
  })
  let bodyLength = 2 + vm.byteLength + 8 + 8 + 1 + 8 + 4
  for (const p of paths) bodyLength += FILE_MIN_BYTES - 1 + p.byteLength
  checkBodySize(bodyLength, limits)
  const w = header(FrameType.Begin, bodyLength)
  w.u16(vm.byteLength)
  w.raw(vm)
  w.u64(frame.generation)
  w.u64(frame.baseGeneration)
  w.u8(frame.consistent ? FLAG_CONSISTENT : 0)
  w.u64(frame.createdAtMs)
  w.u32(frame.files.length)
  frame.files.forEach((f, i) => {
    const p = paths[i] as Uint8Array
    w.u32(f.fileId)
    w.u8(f.kind)
    w.u32(f.blockSize)
    w.u64(f.size)
    w.u16(p.byteLength)
    w.raw(p)
  })
  return w.finish()
}

function encodeBlocks (frame: BlocksFrame, limits: DeltaLimits): Uint8Array {
  const bodyLength = checkBlocks(frame, limits)
  const w = header(FrameType.Blocks, bodyLength)
  w.u32(frame.fileId)
  w.u32(frame.entries.length)
  for (const e of frame.entries) {
    writeEntryHeader(w, e)
    w.raw(e.payload)
  }
  return w.finish()
}

/** offset | length | encoding | checksum | payload length: what precedes each entry's payload. */
function writeEntryHeader (w: FrameWriter, e: BlocksFrame['entries'][number]): void {
  w.u64(e.offset)
  w.u32(e.length)
  w.u8(e.encoding)
  w.raw(e.checksum)
  w.u32(e.payload.byteLength)
}

/**
 * A blocks frame as the parts to send back to back: the frame and entry headers live in one
 * small buffer and each payload is passed as it is (no copy), for a transport that takes a
 * list of buffers. Same checks and bytes as encodeFrame.
 */
export function encodeBlocksFrameParts (frame: BlocksFrame, options: CodecOptions = {}): Uint8Array[] {
  const limits = resolveLimits(options.limits)
  const bodyLength = checkBlocks(frame, limits)
  const count = frame.entries.length
  const w = new FrameWriter(FRAME_HEADER_BYTES + 8 + count * ENTRY_HEADER_BYTES)
  w.u8(FrameType.Blocks)
  w.u32(bodyLength)
  w.u32(frame.fileId)
  w.u32(count)
  const heads = w.bytes
  const parts: Uint8Array[] = []
  let start = 0
  for (const e of frame.entries) {
    writeEntryHeader(w, e)
    if (e.payload.byteLength > 0) {
      parts.push(heads.subarray(start, w.position), e.payload)
      start = w.position
    }
  }
  if (start < w.position) parts.push(heads.subarray(start, w.position))
  w.finish()
  return parts
}

/** Checks a blocks frame against the frame-local rules; returns its body length. */
function checkBlocks (frame: BlocksFrame, limits: DeltaLimits): number {
  checkU32(frame.fileId, 'fileId')
  const count = frame.entries.length
  if (count === 0) throw new DeltaMalformedFrameError('blocks: no entries')
  if (count > limits.maxEntriesPerFrame) throw new DeltaLimitExceededError(`blocks: ${count} entries exceeds ${limits.maxEntriesPerFrame}`)
  let bodyLength = 8
  let rawTotal = 0
  for (const e of frame.entries) {
    checkEntryShape(e.offset, e.length, e.encoding, e.payload.byteLength, limits)
    if (e.checksum.byteLength !== CHECKSUM_LENGTH) throw new DeltaBadEncodingError(`checksum of ${e.checksum.byteLength} bytes`)
    rawTotal += e.length
    bodyLength += ENTRY_HEADER_BYTES + e.payload.byteLength
  }
  if (rawTotal > limits.maxFrameRawBytes) throw new DeltaLimitExceededError(`blocks: ${rawTotal} raw bytes exceeds ${limits.maxFrameRawBytes}`)
  checkBodySize(bodyLength, limits)
  return bodyLength
}

/** Wire size of a blocks frame body holding these payload sizes (for batching). */
export function blocksBodyBytes (entryCount: number, payloadBytes: number): number {
  return 8 + entryCount * ENTRY_HEADER_BYTES + payloadBytes
}

// ---------------------------------------------------------------- pairs

/** One frame type: its encoder (whole frame) and body decoder side by side. */
interface FrameCodec<F extends Frame> {
  type: FrameType
  name: F['type']
  encode: (frame: F, limits: DeltaLimits) => Uint8Array
  decode: (r: WireReader, limits: DeltaLimits) => F
}

type FrameCodecs = { [K in Frame['type']]: FrameCodec<Extract<Frame, { type: K }>> }

const CODECS: FrameCodecs = {
  begin: { type: FrameType.Begin, name: 'begin', encode: encodeBegin, decode: decodeBegin },
  blocks: { type: FrameType.Blocks, name: 'blocks', encode: encodeBlocks, decode: decodeBlocks },
  resize: { type: FrameType.Resize, name: 'resize', encode: encodeResize, decode: decodeResize },
  end: { type: FrameType.End, name: 'end', encode: encodeEnd, decode: decodeEnd }
}

const CODECS_BY_TYPE = new Map<number, FrameCodec<Frame>>(
  Object.values(CODECS).map(c => [c.type, c as FrameCodec<Frame>])
)
