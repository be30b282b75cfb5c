/**
 * The on-disk record format shared by redo journals and undo logs.
 *
 *   file    := prelude record*
 *   prelude := magic[4] version:u16 reserved:u16 salt[16]                       (24 bytes)
 *   record  := type:u8 reserved[3] length:u32 payload[length] checksum[16]
 *   checksum = BLAKE3-128(salt ‖ type..length ‖ payload)
 *
 * The salt is fresh for every file, so a record left over from an earlier file that once had
 * the same name can never verify in the new one. A reader stops at the first record that is
 * short or fails its checksum: everything before it is trustworthy, nothing after it is used.
 * Records are written through a bounded append buffer and read through a bounded window, so
 * memory does not depend on journal size. All integers little-endian; u64 values are JS numbers
 * and refused above 2^53 − 1.
 */
import { createBlake3 } from '../../common/blake3.ts'
import { randomBytes } from 'node:crypto'
import type { ReplicaFileHandle, ReplicaFs } from './fs.ts'
import { ReplicaJournalCorruptError } from './errors.ts'

/** Record type byte. Disk values; append-only. */
export enum RecordType {
  /** JSON description of the file (generation, file table) */
  Header = 1,
  /** fileIdx:u32 offset:u64 data */
  Block = 2,
  /** fileIdx:u32 size:u64 */
  Size = 3,
  /** records:u64 dataBytes:u64 — the redo commit record / the undo seal record */
  Commit = 4
}

export const PRELUDE_BYTES = 24
export const RECORD_HEAD_BYTES = 8
export const CHECKSUM_BYTES = 16
/** Largest data length of one block record; writers split longer blocks. */
export const MAX_RECORD_DATA = 4 * 1024 * 1024
/** Largest header JSON. */
export const MAX_HEADER_BYTES = 8 * 1024 * 1024
const MAX_PAYLOAD = Math.max(MAX_RECORD_DATA + 12, MAX_HEADER_BYTES)
const VERSION = 1
const TWO32 = 0x1_0000_0000

export type JournalKind = 'redo' | 'undo'
const MAGIC: Record<JournalKind, string> = { redo: 'VMRJ', undo: 'VMUL' }

export function newSalt (): Buffer { return randomBytes(16) }

function checksum (salt: Uint8Array, head: Uint8Array, payload: readonly Uint8Array[]): Buffer {
  const h = createBlake3()
  h.update(salt)
  h.update(head)
  for (const p of payload) h.update(p)
  const d = h.digest(CHECKSUM_BYTES)
  h.dispose()
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength)
}

function writeU64 (buf: Buffer, value: number, at: number): void {
  buf.writeUInt32LE(value % TWO32, at)
  buf.writeUInt32LE(Math.floor(value / TWO32), at + 4)
}

function readU64 (buf: Buffer, at: number): number | undefined {
  const lo = buf.readUInt32LE(at)
  const hi = buf.readUInt32LE(at + 4)
  if (hi > 0x1f_ffff) return undefined
  return hi * TWO32 + lo
}

export type JournalRecord =
  | { type: 'header', json: unknown }
  /** `data` aliases the reader's buffer: valid until the next read (with freshWindows: for good). `dataPos` is its file offset. */
  | { type: 'block', fileIdx: number, offset: number, data: Buffer, dataPos: number }
  | { type: 'size', fileIdx: number, size: number }
  | { type: 'commit', records: number, dataBytes: number }

/** Appends records to a new journal file through a bounded buffer. */
export class JournalAppender {
  /** Logical end of the journal (bytes appended, flushed or not). */
  private pos: number
  private flushed: number
  private readonly buf: Buffer
  private used = 0
  /** Records appended after the header (the commit record counts them). */
  records = 0
  dataBytes = 0

  private constructor (private readonly fh: ReplicaFileHandle, private readonly salt: Buffer, bufferBytes: number) {
    this.buf = Buffer.allocUnsafe(bufferBytes)
    this.pos = PRELUDE_BYTES
    this.flushed = PRELUDE_BYTES
  }

  /** Creates (or truncates) `path` and writes the prelude and the header record. */
  static async create (fs: ReplicaFs, path: string, kind: JournalKind, header: unknown, bufferBytes = 1024 * 1024): Promise<JournalAppender> {
    const salt = newSalt()
    const fh = await fs.open(path, 'create')
    try {
      const prelude = Buffer.alloc(PRELUDE_BYTES)
      prelude.write(MAGIC[kind], 0, 'latin1')
      prelude.writeUInt16LE(VERSION, 4)
      salt.copy(prelude, 8)
      await fh.write(prelude, 0, prelude.length, 0)
      const a = new JournalAppender(fh, salt, bufferBytes)
      const json = Buffer.from(JSON.stringify(header), 'utf8')
      if (json.length > MAX_HEADER_BYTES) throw new RangeError('journal header too large')
      await a.append(RecordType.Header, [json])
      a.records = 0
      return a
    } catch (err) {
      await fh.close().catch(() => {})
      throw err
    }
  }

  /** `data`: the block's bytes, or parts of them back to back (gathered, not concatenated). */
  async appendBlock (fileIdx: number, offset: number, data: Uint8Array | readonly Uint8Array[]): Promise<void> {
    const head = Buffer.allocUnsafe(12)
    head.writeUInt32LE(fileIdx, 0)
    writeU64(head, offset, 4)
    const parts = data instanceof Uint8Array ? [data] : data
    await this.append(RecordType.Block, [head, ...parts])
    for (const p of parts) this.dataBytes += p.byteLength
  }

  async appendSize (fileIdx: number, size: number): Promise<void> {
    const p = Buffer.allocUnsafe(12)
    p.writeUInt32LE(fileIdx, 0)
    writeU64(p, size, 4)
    await this.append(RecordType.Size, [p])
  }

  /** Appends the commit (seal) record and flushes; the caller decides when to sync. */
  async appendCommit (): Promise<void> {
    const p = Buffer.allocUnsafe(16)
    writeU64(p, this.records, 0)
    writeU64(p, this.dataBytes, 8)
    await this.append(RecordType.Commit, [p])
    await this.flush()
  }

  private async append (type: RecordType, payload: readonly Uint8Array[]): Promise<void> {
    let len = 0
    for (const p of payload) len += p.length
    const head = Buffer.alloc(RECORD_HEAD_BYTES)
    head.writeUInt8(type, 0)
    head.writeUInt32LE(len, 4)
    const sum = checksum(this.salt, head, payload)
    const parts = [head, ...payload, sum]
    const total = RECORD_HEAD_BYTES + len + CHECKSUM_BYTES
    if (this.used + total > this.buf.length) await this.flush()
    if (total > this.buf.length) {
      // too big for the buffer: straight through, in one gathered write
      await this.fh.writev(parts, this.flushed)
      this.flushed += total
    } else {
      for (const p of parts) { this.buf.set(p, this.used); this.used += p.length }
    }
    this.pos += total
    this.records++
  }

  async flush (): Promise<void> {
    if (this.used === 0) return
    await this.fh.write(this.buf, 0, this.used, this.flushed)
    this.flushed += this.used
    this.used = 0
  }

  async sync (): Promise<void> { await this.fh.sync() }
  async close (): Promise<void> { await this.fh.close() }
  get size (): number { return this.pos }
}

/** How a scan of a journal ended. */
export type ReadEnd =
  | { kind: 'end' }
  /** a short or mismatching record: the crash tail of an unfinished file, or corruption */
  | { kind: 'torn', error: ReplicaJournalCorruptError }

/** Reads records in order through a bounded window; stops at the first bad record. */
export class JournalReader {
  private buf: Buffer
  private bufStart = 0
  private bufLen = 0
  private pos = PRELUDE_BYTES
  private ended: ReadEnd | undefined
  /** Records returned after the header. */
  records = 0
  dataBytes = 0

  private constructor (private readonly fh: ReplicaFileHandle, private readonly fileSize: number, readonly salt: Buffer, windowBytes: number, private readonly freshWindows: boolean) {
    this.buf = Buffer.allocUnsafe(windowBytes)
  }

  /**
   * Opens a journal; a missing, short or foreign prelude yields `torn` on the first next().
   * The caller must close() the reader.
   */
  /** `freshWindows`: each refill reads into a new buffer, so records returned earlier stay valid. */
  static async open (fs: ReplicaFs, path: string, kind: JournalKind, windowBytes = 1024 * 1024, opts: { freshWindows?: boolean } = {}): Promise<JournalReader> {
    const fh = await fs.open(path, 'read')
    try {
      const size = await fh.size()
      const prelude = Buffer.alloc(PRELUDE_BYTES)
      const n = await fh.read(prelude, 0, PRELUDE_BYTES, 0)
      const r = new JournalReader(fh, size, prelude.subarray(8, 24), windowBytes, opts.freshWindows === true)
      if (n < PRELUDE_BYTES) {
        r.ended = { kind: 'torn', error: new ReplicaJournalCorruptError(`${path}: short prelude`) }
      } else if (prelude.toString('latin1', 0, 4) !== MAGIC[kind] || prelude.readUInt16LE(4) !== VERSION || prelude.readUInt16LE(6) !== 0) {
        r.ended = { kind: 'torn', error: new ReplicaJournalCorruptError(`${path}: not a ${kind} journal of version ${VERSION}`) }
      }
      return r
    } catch (err) {
      await fh.close().catch(() => {})
      throw err
    }
  }

  /** Ensures bytes [pos, pos+n) are in the window; returns false when the file is shorter. */
  private async fill (n: number): Promise<boolean> {
    if (this.pos + n > this.fileSize) return false
    if (this.pos >= this.bufStart && this.pos + n <= this.bufStart + this.bufLen) return true
    if (n > this.buf.length || this.freshWindows) this.buf = Buffer.allocUnsafe(Math.max(n, this.buf.length))
    const want = Math.min(this.buf.length, this.fileSize - this.pos)
    const got = await this.fh.read(this.buf, 0, want, this.pos)
    this.bufStart = this.pos
    this.bufLen = got
    return got >= n
  }

  private view (n: number): Buffer {
    const at = this.pos - this.bufStart
    return this.buf.subarray(at, at + n)
  }

  private torn (why: string): ReadEnd {
    this.ended = { kind: 'torn', error: new ReplicaJournalCorruptError(`record at byte ${this.pos}: ${why}`) }
    return this.ended
  }

  /** The next record, or how the journal ended. */
  async next (): Promise<JournalRecord | ReadEnd> {
    if (this.ended !== undefined) return this.ended
    if (this.pos === this.fileSize) { this.ended = { kind: 'end' }; return this.ended }
    if (!await this.fill(RECORD_HEAD_BYTES)) return this.torn('short record head')
    const head = this.view(RECORD_HEAD_BYTES)
    const type = head.readUInt8(0)
    const len = head.readUInt32LE(4)
    if (len > MAX_PAYLOAD) return this.torn(`length ${len} over the limit`)
    const total = RECORD_HEAD_BYTES + len + CHECKSUM_BYTES
    if (!await this.fill(total)) return this.torn('short record')
    const rec = this.view(total)
    const payload = rec.subarray(RECORD_HEAD_BYTES, RECORD_HEAD_BYTES + len)
    const sum = checksum(this.salt, rec.subarray(0, RECORD_HEAD_BYTES), [payload])
    if (!sum.equals(rec.subarray(RECORD_HEAD_BYTES + len))) return this.torn('checksum mismatch')
    const payloadPos = this.pos + RECORD_HEAD_BYTES
    const isFirst = this.pos === PRELUDE_BYTES
    let out: JournalRecord | undefined
    switch (type) {
      case RecordType.Header:
        if (!isFirst) return this.torn('header record not first')
        try { out = { type: 'header', json: JSON.parse(payload.toString('utf8')) } } catch { return this.torn('header is not JSON') }
        break
      case RecordType.Block: {
        if (len < 13) return this.torn('short block record')
        const offset = readU64(payload, 4)
        if (offset === undefined) return this.torn('offset above 2^53')
        out = { type: 'block', fileIdx: payload.readUInt32LE(0), offset, data: payload.subarray(12), dataPos: payloadPos + 12 }
        break
      }
      case RecordType.Size: {
        if (len !== 12) return this.torn('bad size record')
        const size = readU64(payload, 4)
        if (size === undefined) return this.torn('size above 2^53')
        out = { type: 'size', fileIdx: payload.readUInt32LE(0), size }
        break
      }
      case RecordType.Commit: {
        if (len !== 16) return this.torn('bad commit record')
        const records = readU64(payload, 0)
        const dataBytes = readU64(payload, 8)
        if (records === undefined || dataBytes === undefined) return this.torn('bad commit counters')
        out = { type: 'commit', records, dataBytes }
        break
      }
      default:
        return this.torn(`unknown record type ${type}`)
    }
    if (isFirst !== (out.type === 'header')) return this.torn('journal does not start with a header')
    this.pos += total
    if (out.type === 'commit') {
      if (out.records !== this.records || out.dataBytes !== this.dataBytes) return this.torn('commit counters do not match the records')
    } else if (out.type !== 'header') {
      this.records++
      if (out.type === 'block') this.dataBytes += out.data.length
    }
    return out
  }

  async close (): Promise<void> { await this.fh.close() }
}

/** Reads exactly `length` bytes of a file at `position` (zeros past its end). */
export async function readAt (fh: ReplicaFileHandle, buf: Buffer, length: number, position: number): Promise<Buffer> {
  const n = await fh.read(buf, 0, length, position)
  if (n < length) buf.fill(0, n, length)
  return buf.subarray(0, length)
}
