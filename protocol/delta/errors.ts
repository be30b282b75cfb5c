/**
 * Typed errors of the delta codec. Every condition has its own class and stable code; all of them
 * extend DeltaProtocolError, so a receiver can cut off a peer on `instanceof DeltaProtocolError`
 * and anything else is a bug on our side.
 */
import { VmeshError } from '../../common/errors.ts'

/** Base of every delta codec error; never thrown itself. */
export class DeltaProtocolError extends VmeshError {}

/** A frame header declares a body longer than the limit (refused before buffering it). */
export class DeltaFrameTooLargeError extends DeltaProtocolError {
  constructor (message: string) { super('ERR_DELTA_FRAME_TOO_LARGE', message) }
}

/** Input ended in the middle of a frame. */
export class DeltaTruncatedError extends DeltaProtocolError {
  constructor (message: string) { super('ERR_DELTA_TRUNCATED', message) }
}

/** A frame type byte this version does not know. */
export class DeltaUnknownFrameError extends DeltaProtocolError {
  constructor (message: string) { super('ERR_DELTA_UNKNOWN_FRAME', message) }
}

/** A frame body is inconsistent with its own layout (short fields, trailing bytes, bad UTF-8, ...). */
export class DeltaMalformedFrameError extends DeltaProtocolError {
  constructor (message: string, options?: { cause?: unknown }) { super('ERR_DELTA_MALFORMED_FRAME', message, options) }
}

/** A count, string or value exceeds a codec limit (files, entries, path bytes, u64 above 2^53, ...). */
export class DeltaLimitExceededError extends DeltaProtocolError {
  constructor (message: string) { super('ERR_DELTA_LIMIT_EXCEEDED', message) }
}

/** Unknown block encoding, or a payload whose size does not fit its encoding. */
export class DeltaBadEncodingError extends DeltaProtocolError {
  constructor (message: string) { super('ERR_DELTA_BAD_ENCODING', message) }
}

/** A block longer than allowed (its file's block size or the codec maximum), or empty. */
export class DeltaBlockTooLargeError extends DeltaProtocolError {
  constructor (message: string) { super('ERR_DELTA_BLOCK_TOO_LARGE', message) }
}

/** A block's content does not match its BLAKE3 checksum. */
export class DeltaChecksumMismatchError extends DeltaProtocolError {
  constructor (message: string) { super('ERR_DELTA_CHECKSUM_MISMATCH', message) }
}

/** An lz4 payload failed to decompress to exactly the declared length. */
export class DeltaDecompressError extends DeltaProtocolError {
  constructor (message: string) { super('ERR_DELTA_DECOMPRESS', message) }
}

/** A frame arrived out of order (no begin first, a second begin, anything after end, ...). */
export class DeltaSequenceError extends DeltaProtocolError {
  constructor (message: string) { super('ERR_DELTA_SEQUENCE', message) }
}

/** A begin frame that cannot start a generation (duplicate file IDs or paths, bad block size, ...). */
export class DeltaBadBeginError extends DeltaProtocolError {
  constructor (message: string) { super('ERR_DELTA_BAD_BEGIN', message) }
}

/** A frame names a fileId the begin frame did not declare. */
export class DeltaUnknownFileError extends DeltaProtocolError {
  constructor (message: string) { super('ERR_DELTA_UNKNOWN_FILE', message) }
}

/** A block reaches past its file's declared size. */
export class DeltaOutOfRangeError extends DeltaProtocolError {
  constructor (message: string) { super('ERR_DELTA_OUT_OF_RANGE', message) }
}

/** Entries of one blocks frame overlap, repeat, or are not in ascending offset order. */
export class DeltaOverlapError extends DeltaProtocolError {
  constructor (message: string) { super('ERR_DELTA_OVERLAP', message) }
}

/** A resize frame disagrees with the size declared in begin, or repeats for a file. */
export class DeltaResizeMismatchError extends DeltaProtocolError {
  constructor (message: string) { super('ERR_DELTA_RESIZE_MISMATCH', message) }
}

/** The end frame's generation differs from the begin frame's. */
export class DeltaGenerationMismatchError extends DeltaProtocolError {
  constructor (message: string) { super('ERR_DELTA_GENERATION_MISMATCH', message) }
}

/** The end frame's block or byte count differs from what was received. */
export class DeltaCountMismatchError extends DeltaProtocolError {
  constructor (message: string) { super('ERR_DELTA_COUNT_MISMATCH', message) }
}

/** The end frame's digest differs from the digest of what was received. */
export class DeltaDigestMismatchError extends DeltaProtocolError {
  constructor (message: string) { super('ERR_DELTA_DIGEST_MISMATCH', message) }
}

/** The stream ended (or a summary was asked for) before the generation's end frame. */
export class DeltaIncompleteError extends DeltaProtocolError {
  constructor (message: string) { super('ERR_DELTA_INCOMPLETE', message) }
}
