/**
 * The replication stream: delta frames and control messages interleaved, one frame header.
 *
 * ReplicationDecoder is the shared frame assembler (protocol/common/frame-stream.ts) whose header
 * check picks the codec by type (1–15 delta, 64–127 control); that codec's check refuses an
 * impossible or over-limit length before anything is buffered.
 */
import type { Uint8ArrayList } from 'uint8arraylist'
import { FrameAssembler, decodeFramed } from '../common/frame-stream.ts'
import type { FrameProtocol } from '../common/frame-stream.ts'
import { checkHeader, decodeFrameBody, encodeFrame, isKnownFrameType } from '../delta/codec.ts'
import { resolveLimits } from '../delta/limits.ts'
import type { DeltaLimits } from '../delta/limits.ts'
import type { Frame } from '../delta/messages.ts'
import { checkControlHeader, decodeControlBody, encodeControl } from './codec.ts'
import { isPeerProtocolError, ReplicationMalformedFrameError, ReplicationTruncatedError, ReplicationUnknownFrameError } from './errors.ts'
import { resolveControlLimits } from './limits.ts'
import type { ControlLimits } from './limits.ts'
import { isControlMessage, isControlType } from './messages.ts'
import type { ControlMessage, ControlType } from './messages.ts'

/** One decoded item of a replication stream: a delta frame or a control message (tell by `type`). */
export type ReplicationItem = Frame | ControlMessage

export interface ReplicationCodecOptions {
  /** Limits of the control codec. */
  controlLimits?: Partial<ControlLimits>
  /** Limits of the delta codec. */
  deltaLimits?: Partial<DeltaLimits>
}

function replicationFrames (options: ReplicationCodecOptions): FrameProtocol<ReplicationItem> {
  const control = resolveControlLimits(options.controlLimits)
  const delta = resolveLimits(options.deltaLimits)
  return {
    checkType: (type) => {
      if (!isKnownFrameType(type) && !isControlType(type)) throw new ReplicationUnknownFrameError(`unknown frame type ${type}`)
    },
    checkHeader: (type, bodyLength) => {
      if (isKnownFrameType(type)) checkHeader(type, bodyLength, delta)
      else checkControlHeader(type, bodyLength, control)
    },
    decodeBody: (type, body) => isKnownFrameType(type)
      ? decodeFrameBody(type, body, delta)
      : decodeControlBody(type as ControlType, body, control),
    truncated: (message) => new ReplicationTruncatedError(message),
    malformed: (message) => new ReplicationMalformedFrameError(message),
    isProtocolError: isPeerProtocolError
  }
}

/** Chunks split anywhere in, whole delta frames and control messages out (see FrameAssembler). */
export class ReplicationDecoder extends FrameAssembler<ReplicationItem> {
  constructor (options: ReplicationCodecOptions = {}) { super(replicationFrames(options)) }
}

/** Encodes a delta frame or a control message as one frame. */
export function encodeReplicationItem (item: ReplicationItem, options: ReplicationCodecOptions = {}): Uint8Array {
  return isControlMessage(item)
    ? encodeControl(item, options.controlLimits !== undefined ? { limits: options.controlLimits } : {})
    : encodeFrame(item, options.deltaLimits !== undefined ? { limits: options.deltaLimits } : {})
}

export interface DecodeReplicationOptions extends ReplicationCodecOptions {
  signal?: AbortSignal
}

/**
 * Items from a byte stream (e.g. a libp2p stream's source). Throws the codecs' typed errors,
 * ReplicationTruncatedError when the source ends inside a frame, and AbortedError when `signal`
 * fires (also while waiting on the source, which is then told to return).
 */
export async function * decodeReplicationStream (
  source: AsyncIterable<Uint8Array | Uint8ArrayList> | Iterable<Uint8Array | Uint8ArrayList>,
  options: DecodeReplicationOptions = {}
): AsyncGenerator<ReplicationItem, void, undefined> {
  yield * decodeFramed(source, new ReplicationDecoder(options), options.signal, 'replication stream')
}

/** Bytes for a stream of items, one buffer per frame. */
export async function * encodeReplicationStream (
  source: AsyncIterable<ReplicationItem> | Iterable<ReplicationItem>,
  options: ReplicationCodecOptions = {}
): AsyncGenerator<Uint8Array, void, undefined> {
  for await (const item of source) yield encodeReplicationItem(item, options)
}
