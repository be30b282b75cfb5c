/**
 * Block manifest: per file, block index → BLAKE3-128 of the block's content plus the generation
 * that last changed it; plus a meta record (block size, committed generation, the stat token of
 * the last consistent scan and, since `statAtMs` was added, when that stat was taken; a meta
 * without it is read as "not yet settled": the next scan reads the file once).
 *
 * Layout (binary sublevel), version 2:
 *   'M' + fileKey                    → meta JSON ({ v: 2, ... })
 *   'G' + u16 len + fileKey + u64 BE → one BlockGroup value (group.ts): GROUP_BLOCKS entries
 * A group whose blocks were all zero and never non-zero has no value, so sparse disks stay cheap.
 * Tombstones remember "this block turned to zeros at generation g" so a consumer holding an
 * older token still learns about it. Reads go through forward cursors and writes through batches
 * of bounded size: memory does not grow with the file.
 *
 * Version 1 stored one value per block under 'B' keys. A v1 manifest is not read: readers get
 * ManifestVersionError and the hash scan clears it and starts over (new epoch, full answer).
 */
import { randomBytes } from 'node:crypto'
import type { BinaryDb } from './db.ts'
import { concatBytes, decodeUtf8, encodeUtf8, lenPrefixed, prefixEnd, readU64be, u64be } from './db.ts'
import type { StatRecord } from './stat.ts'
import { ManifestCorruptError, ManifestVersionError } from './errors.ts'
import { BlockGroup, GROUP_BLOCKS, SLOT_ABSENT } from './group.ts'

export { HASH_BYTES } from './group.ts'
export { ManifestCorruptError, ManifestVersionError } from './errors.ts'

/** The layout this code writes and reads. */
export const MANIFEST_VERSION = 2

export interface FileMeta {
  /** Layout version; anything but MANIFEST_VERSION means the block entries are unreadable. */
  v: number
  /** Random per manifest incarnation: tokens from a wiped or different manifest are refused. */
  epoch: string
  blockSize: number
  /** Last committed generation (0: never scanned). */
  generation: number
  /** File size at the last commit. */
  fileSize: number
  /**
   * Stat at the start of the last scan, only if that scan was consistent and not racy. Two
   * readers: the sender's consistency check (the file is still what that quiet scan saw) and the
   * hash scan's skip-reading decision, which also needs `statAtMs`.
   */
  stat: StatRecord | null
  /**
   * Wall-clock ms at which `stat` was taken (the start of the pass that recorded it). The stat
   * lets a later scan skip reading only if this is at least the scan's settle margin after the
   * stat's mtime/ctime: one long write() moves mtime only as it begins, so a pass that started
   * soon after may have read part of that write and an unchanged stat would hide the rest.
   * Absent (meta written before this field existed, or no stat): the next scan reads the file
   * once. Added without a layout change: older code ignores it, this code reads older metas.
   */
  statAtMs?: number
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
const GROUP = 0x47 // 'G'
const LEGACY_BLOCK = 0x42 // 'B' (v1 per-block entries; only ever cleared)

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
  private readonly groupPrefix: Uint8Array

  constructor (readonly db: BinaryDb, readonly fileKey: string) {
    this.metaKey = concatBytes(new Uint8Array([META]), encodeUtf8(fileKey))
    this.groupPrefix = concatBytes(new Uint8Array([GROUP]), lenPrefixed(fileKey))
  }

  groupKey (group: number): Uint8Array { return concatBytes(this.groupPrefix, u64be(group)) }

  /** The meta record, of whatever layout version (check `v` before trusting entries). */
  async meta (): Promise<FileMeta | null> {
    const v = await this.db.get(this.metaKey)
    if (v === undefined) return null
    try {
      const m = JSON.parse(decodeUtf8(v)) as FileMeta
      if (typeof m.v !== 'number' || typeof m.generation !== 'number' || typeof m.blockSize !== 'number') throw new Error('unknown meta shape')
      return m
    } catch (err) {
      throw new ManifestCorruptError(`manifest meta of ${this.fileKey} unreadable`, { cause: err })
    }
  }

  /** A fresh meta record (new epoch) for `blockSize`. */
  static newMeta (blockSize: number): FileMeta {
    return { v: MANIFEST_VERSION, epoch: randomBytes(8).toString('hex'), blockSize, generation: 0, fileSize: 0, stat: null, scanning: false, consistent: true }
  }

  encodeMeta (m: FileMeta): { key: Uint8Array, value: Uint8Array } {
    return { key: this.metaKey, value: encodeUtf8(JSON.stringify(m)) }
  }

  async putMeta (m: FileMeta): Promise<void> {
    const { key, value } = this.encodeMeta(m)
    await this.db.put(key, value)
  }

  /** Throws ManifestVersionError when the entries were written in another layout. */
  async checkLayout (): Promise<void> {
    const m = await this.meta()
    if (m !== null && m.v !== MANIFEST_VERSION) throw new ManifestVersionError(`manifest of ${this.fileKey} has layout v${m.v}, expected v${MANIFEST_VERSION}`)
  }

  async getEntry (index: number): Promise<BlockEntry | null> {
    await this.checkLayout()
    const g = Math.floor(index / GROUP_BLOCKS)
    const v = await this.db.get(this.groupKey(g))
    if (v === undefined) return null
    const grp = BlockGroup.decode(g, v)
    const slot = index - g * GROUP_BLOCKS
    return grp.state(slot) === SLOT_ABSENT ? null : { index, hash: grp.hash(slot), generation: grp.generation(slot) }
  }

  /** Forward cursor over stored groups holding blocks in [startBlock, endBlock). */
  groups (startBlock = 0, endBlock = Number.MAX_SAFE_INTEGER): GroupCursor {
    const endGroup = Math.ceil(endBlock / GROUP_BLOCKS)
    return new GroupCursor(this.db, this.groupKey(Math.floor(startBlock / GROUP_BLOCKS)), this.groupKey(endGroup), this.groupPrefix.length)
  }

  /** Async iteration over entries with start ≤ index < end, in index order, bounded memory. */
  async * entries (start = 0, end = Number.MAX_SAFE_INTEGER): AsyncGenerator<BlockEntry> {
    await this.checkLayout()
    const c = this.groups(start, end)
    try {
      for (let grp = await c.next(); grp !== null; grp = await c.next()) {
        const base = grp.firstBlock
        for (let s = Math.max(0, start - base); s < GROUP_BLOCKS && base + s < end; s++) {
          if (grp.state(s) !== SLOT_ABSENT) yield { index: base + s, hash: grp.hash(s), generation: grp.generation(s) }
        }
      }
    } finally { await c.close() }
  }

  /** A batch writer that hands a batch to LevelDB every `flushEvery` group operations. */
  writer (flushEvery = 256): ManifestWriter { return new ManifestWriter(this, flushEvery) }

  /** Deletes the meta record and every entry of this file (either layout). */
  async clear (): Promise<void> {
    await this.db.clear({ gte: this.groupPrefix, lt: prefixEnd(this.groupPrefix) })
    const legacy = concatBytes(new Uint8Array([LEGACY_BLOCK]), lenPrefixed(this.fileKey))
    await this.db.clear({ gte: legacy, lt: prefixEnd(legacy) })
    await this.db.del(this.metaKey)
  }
}

type Batch = Array<[Uint8Array, Uint8Array]>

/**
 * Reads stored groups in index order, `batch` values at a time, the next batch already being
 * read while this one is consumed: a scanner merging hashes never waits on LevelDB's thread pool
 * (which, on a loaded machine, can take long enough to leave the hashing workers idle).
 */
export class GroupCursor {
  private readonly it
  private buf: Batch = []
  private pos = 0
  private done = false
  private ahead: Promise<Batch> | null = null

  constructor (db: BinaryDb, gte: Uint8Array, lt: Uint8Array, private readonly prefixLength: number, private readonly batch = 64) {
    this.it = db.iterator({ gte, lt })
  }

  private async fill (): Promise<boolean> {
    if (this.pos < this.buf.length) return true
    if (this.done) return false
    const next = this.ahead ?? this.it.nextv(this.batch)
    this.ahead = null
    this.buf = await next
    this.pos = 0
    // Only an empty batch ends the iteration: LevelDB also cuts batches short by byte size.
    if (this.buf.length === 0) { this.done = true; return false }
    this.ahead = this.it.nextv(this.batch)
    this.ahead.catch(() => {}) // surfaced by the fill() that awaits it
    return true
  }

  /** Index of the next group, without consuming it. */
  async peekIndex (): Promise<number | null> {
    if (!await this.fill()) return null
    const [k] = this.buf[this.pos] as [Uint8Array, Uint8Array]
    return readU64be(k, this.prefixLength)
  }

  async next (): Promise<BlockGroup | null> {
    if (!await this.fill()) return null
    const [k, v] = this.buf[this.pos++] as [Uint8Array, Uint8Array]
    return BlockGroup.decode(readU64be(k, this.prefixLength), v)
  }

  async close (): Promise<void> {
    await this.ahead?.catch(() => {})
    this.ahead = null
    await this.it.close()
  }
}

/**
 * Batched writes with bounded size. A full batch is written in the background while the next
 * one fills (one write outstanding at a time, so batches land in order); `flush()` makes
 * everything so far durable and visible, `commit()` adds the meta record to the last batch.
 */
export class ManifestWriter {
  private ops: Array<{ type: 'put', key: Uint8Array, value: Uint8Array } | { type: 'del', key: Uint8Array }> = []
  private writing: Promise<void> = Promise.resolve()
  private failed: unknown = null
  /** Group operations written so far (puts and deletes). */
  written = 0

  constructor (private readonly fm: FileManifest, private readonly flushEvery: number) {}

  get pending (): number { return this.ops.length }

  /** Writes the group back (deletes it when no slot is left). */
  async putGroup (g: BlockGroup): Promise<void> {
    if (g.isEmpty()) return await this.delGroup(g.index)
    this.ops.push({ type: 'put', key: this.fm.groupKey(g.index), value: g.encode() })
    await this.bump()
  }

  async delGroup (index: number): Promise<void> {
    this.ops.push({ type: 'del', key: this.fm.groupKey(index) })
    await this.bump()
  }

  /** Adds a meta write to the current batch (atomic with the entries in it). */
  async putMeta (m: FileMeta): Promise<void> {
    if (this.failed != null) throw this.failed
    const { key, value } = this.fm.encodeMeta(m)
    this.ops.push({ type: 'put', key, value })
  }

  private async bump (): Promise<void> {
    if (this.failed != null) throw this.failed
    this.written++
    if (this.ops.length >= this.flushEvery) await this.send()
  }

  /** Hands the current batch to LevelDB after the previous one is written; does not wait for it. */
  private async send (): Promise<void> {
    const ops = this.ops
    this.ops = []
    await this.writing
    if (this.failed != null) throw this.failed
    if (ops.length === 0) return
    this.writing = this.fm.db.batch(ops).catch((err: unknown) => { this.failed = err })
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

  /** Drops what is not yet handed to LevelDB (after the write in progress, if any, lands). */
  async abort (): Promise<void> {
    this.ops = []
    await this.writing
  }
}
