/**
 * Block manifest: per file, block index → BLAKE3-128 of the block's content plus the generation
 * that last changed it; plus a meta record (block size, committed generation, the stat token of
 * the last consistent scan).
 *
 * Layout (binary sublevel):
 *   'M' + fileKey                    → meta JSON
 *   'B' + u16 len + fileKey + u64 BE → 16-byte hash + u32 BE generation  (a non-zero block)
 *                                    → u32 BE generation                 (tombstone: became zero)
 * All-zero blocks that were never non-zero have no entry, so sparse disks stay cheap. Tombstones
 * remember "this block turned to zeros at generation g" so a consumer holding an older token
 * still learns about it. Reads go through forward cursors and writes through chained batches of
 * bounded size: memory does not grow with the file.
 */
import { randomBytes } from 'node:crypto'
import type { BinaryDb } from './db.ts'
import { concatBytes, decodeUtf8, encodeUtf8, lenPrefixed, prefixEnd, readU32be, readU64be, u32be, u64be } from './db.ts'
import type { StatRecord } from '../changes/file-io.ts'
import { VmeshError } from '../../common/errors.ts'

export const HASH_BYTES = 16

export class ManifestCorruptError extends VmeshError {
  constructor (message: string, options?: { cause?: unknown }) { super('ERR_MANIFEST_CORRUPT', message, options) }
}

export interface FileMeta {
  v: 1
  /** Random per manifest incarnation: tokens from a wiped or different manifest are refused. */
  epoch: string
  blockSize: number
  /** Last committed generation (0: never scanned). */
  generation: number
  /** File size at the last commit. */
  fileSize: number
  /** Stat at the start of the last scan, only if that scan was consistent and not racy. */
  stat: StatRecord | null
  /** True while a scan is writing entries; an interrupted scan leaves it set. */
  scanning: boolean
  /** Whether the last committed scan was consistent. */
  consistent: boolean
}

export interface BlockEntry {
  index: number
  /** null for a tombstone (the block became all zeros). */
  hash: Uint8Array | null
  generation: number
}

const META = 0x4d // 'M'
const BLOCK = 0x42 // 'B'

export function encodeEntry (hash: Uint8Array | null, generation: number): Uint8Array {
  if (hash == null) return u32be(generation)
  const out = new Uint8Array(HASH_BYTES + 4)
  out.set(hash.subarray(0, HASH_BYTES), 0)
  new DataView(out.buffer).setUint32(HASH_BYTES, generation)
  return out
}

export function decodeEntry (index: number, v: Uint8Array): BlockEntry {
  if (v.length === 4) return { index, hash: null, generation: readU32be(v, 0) }
  if (v.length === HASH_BYTES + 4) return { index, hash: v.subarray(0, HASH_BYTES), generation: readU32be(v, HASH_BYTES) }
  throw new ManifestCorruptError(`manifest entry of ${v.length} bytes at block ${index}`)
}

/** All files' manifests in one (sub)level. */
export class Manifest {
  constructor (readonly db: BinaryDb) {}

  file (fileKey: string): FileManifest { return new FileManifest(this.db, fileKey) }

  /** Keys of every file with a meta record. */
  async files (): Promise<string[]> {
    const out: string[] = []
    const it = this.db.keys({ gte: new Uint8Array([META]), lt: new Uint8Array([META + 1]) })
    try {
      for await (const k of it) out.push(decodeUtf8(k.subarray(1)))
    } finally { await it.close() }
    return out
  }
}

export class FileManifest {
  private readonly metaKey: Uint8Array
  private readonly blockPrefix: Uint8Array

  constructor (readonly db: BinaryDb, readonly fileKey: string) {
    this.metaKey = concatBytes(new Uint8Array([META]), encodeUtf8(fileKey))
    this.blockPrefix = concatBytes(new Uint8Array([BLOCK]), lenPrefixed(fileKey))
  }

  blockKey (index: number): Uint8Array { return concatBytes(this.blockPrefix, u64be(index)) }

  async meta (): Promise<FileMeta | null> {
    const v = await this.db.get(this.metaKey)
    if (v === undefined) return null
    try {
      const m = JSON.parse(decodeUtf8(v)) as FileMeta
      if (m.v !== 1 || typeof m.generation !== 'number' || typeof m.blockSize !== 'number') throw new Error('unknown meta shape')
      return m
    } catch (err) {
      throw new ManifestCorruptError(`manifest meta of ${this.fileKey} unreadable`, { cause: err })
    }
  }

  /** A fresh meta record (new epoch) for `blockSize`. */
  static newMeta (blockSize: number): FileMeta {
    return { v: 1, epoch: randomBytes(8).toString('hex'), blockSize, generation: 0, fileSize: 0, stat: null, scanning: false, consistent: true }
  }

  encodeMeta (m: FileMeta): { key: Uint8Array, value: Uint8Array } {
    return { key: this.metaKey, value: encodeUtf8(JSON.stringify(m)) }
  }

  async putMeta (m: FileMeta): Promise<void> {
    const { key, value } = this.encodeMeta(m)
    await this.db.put(key, value)
  }

  async getEntry (index: number): Promise<BlockEntry | null> {
    const v = await this.db.get(this.blockKey(index))
    return v === undefined ? null : decodeEntry(index, v)
  }

  /** Forward cursor over entries with start ≤ index < end (an implicit LevelDB snapshot). */
  cursor (start = 0, end = Number.MAX_SAFE_INTEGER): ManifestCursor {
    return new ManifestCursor(this.db, this.blockKey(start), this.blockKey(end), this.blockPrefix.length)
  }

  /** Async iteration over entries in [start, end), in index order, bounded memory. */
  async * entries (start = 0, end = Number.MAX_SAFE_INTEGER): AsyncGenerator<BlockEntry> {
    const c = this.cursor(start, end)
    try {
      for (;;) {
        const e = await c.next()
        if (e === null) return
        yield e
      }
    } finally { await c.close() }
  }

  /** A batch writer that flushes every `flushEvery` operations. */
  writer (flushEvery = 2048): ManifestWriter { return new ManifestWriter(this, flushEvery) }

  /** Deletes the meta record and every entry of this file. */
  async clear (): Promise<void> {
    await this.db.clear({ gte: this.blockPrefix, lt: prefixEnd(this.blockPrefix) })
    await this.db.del(this.metaKey)
  }
}

/** Reads entries in key order, `batch` at a time; `takeBelow(i)` consumes entries with index < i. */
export class ManifestCursor {
  private readonly it
  private buf: Array<[Uint8Array, Uint8Array]> = []
  private pos = 0
  private done = false

  constructor (db: BinaryDb, gte: Uint8Array, lt: Uint8Array, private readonly prefixLength: number, private readonly batch = 512) {
    this.it = db.iterator({ gte, lt })
  }

  private async fill (): Promise<boolean> {
    if (this.pos < this.buf.length) return true
    if (this.done) return false
    this.buf = await this.it.nextv(this.batch)
    this.pos = 0
    if (this.buf.length === 0) { this.done = true; return false }
    return true
  }

  private decodeAt (i: number): BlockEntry {
    const [k, v] = this.buf[i] as [Uint8Array, Uint8Array]
    return decodeEntry(readU64be(k, this.prefixLength), v)
  }

  async peekIndex (): Promise<number | null> {
    if (!await this.fill()) return null
    const [k] = this.buf[this.pos] as [Uint8Array, Uint8Array]
    return readU64be(k, this.prefixLength)
  }

  async next (): Promise<BlockEntry | null> {
    if (!await this.fill()) return null
    return this.decodeAt(this.pos++)
  }

  /** Entries with index < `end`, consumed. */
  async takeBelow (end: number): Promise<BlockEntry[]> {
    const out: BlockEntry[] = []
    for (;;) {
      const idx = await this.peekIndex()
      if (idx === null || idx >= end) return out
      out.push(this.decodeAt(this.pos++))
    }
  }

  async close (): Promise<void> { await this.it.close() }
}

/**
 * Chained-batch writes with bounded size. A full batch is written in the background while the
 * next one fills (one write outstanding at a time, so batches land in order); `flush()` makes
 * everything so far durable and visible, `commit()` adds the meta record to the last batch.
 */
export class ManifestWriter {
  private batch: ReturnType<BinaryDb['batch']> | null = null
  private ops = 0
  private writing: Promise<void> = Promise.resolve()
  private failed: unknown = null
  /** Operations written so far (entries put or deleted). */
  written = 0

  constructor (private readonly fm: FileManifest, private readonly flushEvery: number) {}

  get pending (): number { return this.ops }

  /** The current chained batch; a fresh sublevel finishes opening first. */
  private async current (): Promise<ReturnType<BinaryDb['batch']>> {
    if (this.failed != null) throw this.failed
    if (this.batch == null) {
      await this.fm.db.open()
      this.batch = this.fm.db.batch()
    }
    return this.batch
  }

  async put (index: number, hash: Uint8Array | null, generation: number): Promise<void> {
    (await this.current()).put(this.fm.blockKey(index), encodeEntry(hash, generation))
    await this.bump()
  }

  async del (index: number): Promise<void> {
    (await this.current()).del(this.fm.blockKey(index))
    await this.bump()
  }

  /** Adds a meta write to the current batch (atomic with the entries in it). */
  async putMeta (m: FileMeta): Promise<void> {
    const { key, value } = this.fm.encodeMeta(m)
    ;(await this.current()).put(key, value)
  }

  private async bump (): Promise<void> {
    this.ops++
    this.written++
    if (this.ops >= this.flushEvery) await this.send()
  }

  /** Hands the current batch to LevelDB after the previous one is written; does not wait for it. */
  private async send (): Promise<void> {
    const b = this.batch
    if (b == null) return
    this.batch = null
    this.ops = 0
    await this.writing
    if (this.failed != null) { await b.close(); throw this.failed }
    this.writing = (b.length === 0 ? b.close() : b.write()).catch((err: unknown) => { this.failed = err })
  }

  /** Everything put so far is written and visible to new iterators. */
  async flush (): Promise<void> {
    await this.send()
    await this.writing
    if (this.failed != null) throw this.failed
  }

  async commit (meta?: FileMeta): Promise<void> {
    if (meta !== undefined) await this.putMeta(meta)
    await this.flush()
  }

  async abort (): Promise<void> {
    const b = this.batch
    this.batch = null
    await this.writing
    await b?.close()
  }
}
