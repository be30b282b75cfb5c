/**
 * Reads the blocks of one file that a generation carries, in order, for the delta encoder.
 *
 * Ranges are cut into block-aligned chunks of at most 1 MiB, and several chunks are read ahead
 * (up to 16 reads or 4 MiB): an incremental generation's scattered 64 KiB blocks then cost
 * about one read latency per batch, a seed's 1 MiB chunks keep the disk and the stream busy.
 * Blocks the target already holds (`skip`, seed resume) are not passed on.
 *
 * Encoding stays on the sending thread. Measured on the 2-core bench machine, handing each
 * 1 MiB chunk to the worker pool (`encodeBlocks`) moved BLAKE3 off this thread but raised the
 * source's total CPU by ~60 % (buffers crossing threads, GC on both sides), and with both
 * daemons on two cores total CPU is what bounds throughput.
 */
import { open as openFile } from 'node:fs/promises'
import { AbortedError } from '../../common/errors.ts'
import type { ChangedBlock } from '../../protocol/delta/index.ts'

const READ_CHUNK = 1024 * 1024
/** Reads in flight ahead of the encoder: at most this many, and this many bytes. */
const READ_AHEAD_COUNT = 16
const READ_AHEAD_BYTES = 4 * 1024 * 1024

export interface BlockReadInit {
  path: string
  ranges: Array<{ offset: number, length: number }>
  blockSize: number
  /** Block indexes not to send (the target holds them). */
  skip?: Set<number>
  signal: AbortSignal
  /**
   * Reads the file from here instead of `path` (a fleecing point: the file at one instant, of
   * `size` bytes; reads past it are zeros, as past a file's end).
   */
  from?: { size: number, read: (offset: number, length: number) => Promise<Buffer> }
}

interface Chunk { at: number, len: number }
interface ReadChunk extends Chunk { buf: Buffer, blocks: Array<{ offset: number, length: number }> }

export async function * readChangedBlocks (init: BlockReadInit): AsyncGenerator<ChangedBlock> {
  const { blockSize: bs, skip, signal, from } = init
  const fh = from === undefined ? await openFile(init.path, 'r') : undefined
  const chunks = function * (): Generator<Chunk> {
    for (const r of init.ranges) {
      const end = r.offset + r.length
      for (let at = r.offset; at < end;) {
        const len = Math.min(READ_CHUNK - (at % bs), end - at)
        yield { at, len }
        at += len
      }
    }
  }
  const read = async (c: Chunk): Promise<ReadChunk> => {
    // a fresh buffer per chunk: its blocks travel as they are (no copy into a frame), and the
    // transport may hold on to them until they are encrypted
    let buf: Buffer
    let got = 0
    if (fh === undefined) {
      const n = Math.max(0, Math.min(c.len, (from as NonNullable<typeof from>).size - c.at))
      buf = n > 0 ? await (from as NonNullable<typeof from>).read(c.at, n) : Buffer.alloc(0)
      got = buf.length
      if (got < c.len) buf = Buffer.concat([buf, Buffer.alloc(c.len - got)])
    } else {
      buf = Buffer.allocUnsafe(c.len)
      for (let guard = 0; got < c.len && guard < 1024; guard++) {
        const { bytesRead } = await fh.read(buf, got, c.len - got, c.at + got)
        if (bytesRead <= 0) break
        got += bytesRead
      }
      if (got < c.len) buf.fill(0, got)
    }
    // offsets within the chunk of the blocks to send
    const blocks: Array<{ offset: number, length: number }> = []
    for (let o = 0; o < c.len;) {
      const off = c.at + o
      const blen = Math.min(bs - (off % bs), c.len - o)
      if (skip === undefined || blen !== bs || !skip.has(Math.floor(off / bs))) blocks.push({ offset: o, length: blen })
      o += blen
    }
    return { ...c, buf, blocks }
  }
  const it = chunks()
  const ahead: Array<{ len: number, p: Promise<ReadChunk> }> = []
  let aheadBytes = 0
  let exhausted = false
  const fill = (): void => {
    while (!exhausted && ahead.length < READ_AHEAD_COUNT && aheadBytes < READ_AHEAD_BYTES) {
      const c = it.next()
      if (c.done === true) { exhausted = true; break }
      const p = read(c.value)
      p.catch(() => {})
      ahead.push({ len: c.value.len, p })
      aheadBytes += c.value.len
    }
  }
  try {
    fill()
    // bounded: each pass consumes one chunk of a finite list
    for (let next = ahead.shift(); next !== undefined; next = ahead.shift()) {
      if (signal.aborted) throw new AbortedError('generation aborted')
      const { at, buf, blocks } = await next.p
      aheadBytes -= next.len
      fill()
      for (const b of blocks) yield { offset: at + b.offset, data: buf.subarray(b.offset, b.offset + b.length) }
    }
  } finally {
    // no read may still use the handle when it closes
    for (const a of ahead.splice(0)) await a.p.catch(() => {})
    await fh?.close()
  }
}
