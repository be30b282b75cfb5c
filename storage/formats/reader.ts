/**
 * The byte source the parsers read from: a size and positional reads. Parsers bounds-check every
 * offset against `size` before reading, so the same parser runs over a file (FileReader) or over a
 * buffer (BufferReader, used by the fuzz tests to run 100k inputs quickly).
 */
import { open } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { AbortedError } from '../../common/errors.ts'
import { DiskIoError, ReadOutOfRangeError } from './errors.ts'

/** The largest single read a reader accepts; parsers read at most 1 MiB at a time. */
export const MAX_READ_LENGTH = 16 * 1024 * 1024

export interface ByteReader {
  /** Total size in bytes. */
  readonly size: number
  /**
   * Exactly `length` bytes at `offset`. Rejects with ReadOutOfRangeError when the span is not
   * inside [0, size) or longer than MAX_READ_LENGTH. The result may share memory with the source:
   * callers must not modify it.
   */
  read: (offset: number, length: number) => Promise<Uint8Array>
}

/** Throws ReadOutOfRangeError unless [offset, offset+length) is a valid span of `size` bytes. */
export function checkSpan (offset: number, length: number, size: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
      length > MAX_READ_LENGTH || offset + length > size) {
    throw new ReadOutOfRangeError(offset, length, size)
  }
}

/** A reader over bytes already in memory. Reads return views, not copies. */
export class BufferReader implements ByteReader {
  readonly size: number
  constructor (private readonly bytes: Uint8Array) {
    this.size = bytes.length
  }

  async read (offset: number, length: number): Promise<Uint8Array> {
    checkSpan(offset, length, this.size)
    return this.bytes.subarray(offset, offset + length)
  }
}

/** A reader over an open file; `size` is the size at open time. Call close() when done. */
export class FileReader implements ByteReader {
  private constructor (readonly path: string, private readonly handle: FileHandle, readonly size: number) {}

  /** Opens `path` read-only. Rejects with DiskIoError (cause: the fs error) on failure. */
  static async open (path: string): Promise<FileReader> {
    let handle: FileHandle
    try {
      handle = await open(path, 'r')
    } catch (err) {
      throw new DiskIoError(`${path}: cannot open`, { cause: err })
    }
    try {
      const st = await handle.stat()
      if (!st.isFile()) throw new DiskIoError(`${path}: not a regular file`)
      return new FileReader(path, handle, st.size)
    } catch (err) {
      await handle.close().catch(() => {})
      if (err instanceof DiskIoError) throw err
      throw new DiskIoError(`${path}: cannot stat`, { cause: err })
    }
  }

  async read (offset: number, length: number): Promise<Uint8Array> {
    checkSpan(offset, length, this.size)
    const buf = new Uint8Array(length)
    let done = 0
    // Bounded: each pass either advances or stops (a zero-byte read means the file shrank).
    while (done < length) {
      let n: number
      try {
        ({ bytesRead: n } = await this.handle.read(buf, done, length - done, offset + done))
      } catch (err) {
        throw new DiskIoError(`${this.path}: read failed at ${offset + done}`, { cause: err })
      }
      if (n <= 0) throw new ReadOutOfRangeError(offset + done, length - done, offset + done)
      done += n
    }
    return buf
  }

  async close (): Promise<void> {
    await this.handle.close()
  }
}

/** Reads through `reader`, failing fast with AbortedError once `signal` fires. */
export async function readChecked (reader: ByteReader, offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
  if (signal?.aborted === true) throw new AbortedError('disk parse aborted', { cause: signal.reason })
  return await reader.read(offset, length)
}
