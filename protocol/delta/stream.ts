/**
 * Streaming delta frames: the shared frame assembler (protocol/common/frame-stream.ts) with the
 * delta codec's header check, body decoder and errors.
 */
import type { Uint8ArrayList } from 'uint8arraylist'
import { FrameAssembler, decodeFramed } from '../common/frame-stream.ts'
import type { FrameProtocol } from '../common/frame-stream.ts'
import { checkHeader, decodeFrameBody, encodeFrame, isKnownFrameType } from './codec.ts'
import type { CodecOptions } from './codec.ts'
import { resolveLimits } from './limits.ts'
import type { Frame, FrameType } from './messages.ts'
import { DeltaProtocolError, DeltaTruncatedError, DeltaUnknownFrameError } from './errors.ts'

function deltaFrames (options: CodecOptions): FrameProtocol<Frame> {
  const limits = resolveLimits(options.limits)
  return {
    checkType: (type) => { if (!isKnownFrameType(type)) throw new DeltaUnknownFrameError(`unknown frame type ${type}`) },
    checkHeader: (type, bodyLength) => { checkHeader(type, bodyLength, limits) },
    decodeBody: (type, body) => decodeFrameBody(type as FrameType, body, limits),
    truncated: (message) => new DeltaTruncatedError(message),
    isProtocolError: (err): err is Error => err instanceof DeltaProtocolError
  }
}

/** Chunks split anywhere in, whole delta frames out (see FrameAssembler). */
export class FrameDecoder extends FrameAssembler<Frame> {
  constructor (options: CodecOptions = {}) { super(deltaFrames(options)) }
}

export interface DecodeFramesOptions extends CodecOptions {
  signal?: AbortSignal
}

/**
 * Frames from a byte stream. Throws the decoder's typed errors, DeltaTruncatedError when the
 * source ends inside a frame, and AbortedError when `signal` fires (also while waiting on the
 * source, which is then told to return).
 */
export async function * decodeFrames (source: AsyncIterable<Uint8Array | Uint8ArrayList> | Iterable<Uint8Array | Uint8ArrayList>, options: DecodeFramesOptions = {}): AsyncGenerator<Frame, void, undefined> {
  yield * decodeFramed(source, new FrameDecoder(options), options.signal, 'delta stream')
}

/** Bytes for a stream of frames, one buffer per frame. */
export async function * encodeFrames (source: AsyncIterable<Frame> | Iterable<Frame>, options: CodecOptions = {}): AsyncGenerator<Uint8Array, void, undefined> {
  for await (const frame of source) yield encodeFrame(frame, options)
}
