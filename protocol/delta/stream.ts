/**
 * Streaming delta frames: the shared frame assembler (protocol/common/frame-stream.ts) with the
 * delta codec's header check, body decoder and errors.
 */
import type { Uint8ArrayList } from 'uint8arraylist'
import { FrameAssembler, decodeFramed } from '../common/frame-stream.ts'
import { deltaFrameProtocol, encodeFrame } from './codec.ts'
import type { CodecOptions } from './codec.ts'
import { resolveLimits } from './limits.ts'
import type { Frame } from './messages.ts'

/** Chunks split anywhere in, whole delta frames out (see FrameAssembler). */
export class FrameDecoder extends FrameAssembler<Frame> {
  constructor (options: CodecOptions = {}) { super(deltaFrameProtocol(resolveLimits(options.limits))) }
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
