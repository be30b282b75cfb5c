/**
 * The shared bounded reader and writer (protocol/common) with this codec's errors: a short body
 * is ReplicationMalformedFrameError — the frame arrived whole but lies about itself — and a
 * value the wire cannot carry is ReplicationEncodeError, so we never emit what a peer must refuse.
 */
import { BoundedReader, type WireReaderErrors } from '../common/wire-reader.ts'
import { WireWriter } from '../common/wire-writer.ts'
import { ReplicationEncodeError, ReplicationLimitExceededError, ReplicationMalformedFrameError } from './errors.ts'

const ERRORS: WireReaderErrors = {
  malformed: (message, options) => new ReplicationMalformedFrameError(message, options),
  limit: (message) => new ReplicationLimitExceededError(message)
}

/** The shared bounded reader, throwing the replication codec's errors. */
export class Reader extends BoundedReader {
  constructor (buf: Uint8Array, what: string) { super(buf, what, ERRORS) }
}

/** The shared growable writer, throwing ReplicationEncodeError; strings are u16-prefixed. */
export class Writer extends WireWriter {
  constructor (what: string, initialBytes = 64) {
    super(what, { error: (message) => new ReplicationEncodeError(message), initialBytes })
  }

  /** Checked like Reader.string checks it; empty only when `allowEmpty`. */
  str (s: string, field: string, maxBytes: number, allowEmpty = false): void {
    this.string(s, field, { maxBytes, minBytes: allowEmpty ? 0 : 1 })
  }
}
