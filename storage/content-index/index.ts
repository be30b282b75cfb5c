/**
 * The target's content index: block hash → one place on this node where a block with that
 * content was written (a replica file, offset, length), across every VM and generation held here.
 * A replication session asks it for blocks a source is about to send (haveQuery) and copies the
 * ones found instead of receiving them.
 *
 * It is a hint, never the truth: fetch() reads the candidate block and re-hashes it before
 * handing it out, so an entry whose block was overwritten since (a later generation, a rollback,
 * a removed replica) is "not held" — and is deleted — rather than wrong data. That is also why
 * entries need not be removed when blocks change, and why updates may be dropped under load.
 *
 * Flow: add() queues an entry (bounded queue; beyond it entries are dropped and counted) → one
 * background loop writes queued entries in batches, evicting the oldest first so at most
 * `maxEntries` stay (FIFO by insertion: a block written again, or copied again, is re-added and
 * so moves to the back) → fetchMany() looks hashes up (LevelDB gets), reads and verifies the
 * candidates with a few reads in flight, and deletes the stale ones through the same loop.
 *
 * On disk (one LevelDB, `<dataDir>/content-index/`): sublevel `h`: hash (16) → seq u64 | offset
 * u64 | length u32 | path (UTF-8, relative to the replicas folder); sublevel `s`: seq u64 → hash,
 * the insertion order. Seqs are contiguous from the oldest kept to the newest, so the number of
 * `s` entries is `nextSeq - firstSeq` and bounds the `h` entries (a hash added twice leaves its
 * older `s` entry behind until eviction reaches it). Memory is LevelDB's write buffer and block
 * cache (fixed below) plus the bounded queue; nothing grows with the index.
 */
import { isAbsolute, join, relative, sep } from 'node:path'
import { open as openFile, type FileHandle } from 'node:fs/promises'
import { Level } from 'level'
import type { AbstractSublevel } from 'abstract-level'
import { blake3 } from '../../common/blake3.ts'
import { errorMessage } from '../../common/errors.ts'
import { decodeUtf8, encodeUtf8, levelMemoryBytes, readU32be, readU64be, u64be } from '../manifest/db.ts'

/** Bytes of a content hash (BLAKE3 truncated: the delta checksum; see protocol/replication HASH_LENGTH). */
export const CONTENT_HASH_BYTES = 16

/** Entries kept by default: 2 Mi entries ≈ 128 GiB of distinct 64 KiB blocks, ≈ 140 MB of LevelDB (66 bytes an entry, measured). */
export const DEFAULT_CONTENT_INDEX_MAX_ENTRIES = 2 * 1024 * 1024

export interface ContentIndexInit {
  /** The LevelDB folder. */
  dir: string
  /** Folder every indexed file lies under (the replicas folder); paths are stored relative to it. */
  root: string
  /** Entries kept; the oldest are evicted beyond it. @default DEFAULT_CONTENT_INDEX_MAX_ENTRIES */
  maxEntries?: number
  /** Entries waiting to be written; add() drops (and counts) entries beyond it. @default 65536 */
  maxQueuedEntries?: number
  /** Candidate reads in flight in one fetchMany(). @default 8 */
  readsInFlight?: number
}

export interface ContentIndexLog {
  warn: (obj: object, msg: string) => void
}

export interface ContentIndexComponents {
  log?: ContentIndexLog
}

/** Where a block lies: an absolute path under the root, its offset and length. */
export interface ContentLocation {
  path: string
  offset: number
  length: number
}

export interface ContentIndexStats {
  /** Entries in the index (an upper bound: see the file comment). */
  entries: number
  maxEntries: number
  /** fetch results: verified and handed out / no entry / an entry whose block no longer matched */
  hits: number
  misses: number
  stale: number
  /** add() calls dropped because the queue was full */
  dropped: number
  evicted: number
}

type Db = Level<Uint8Array, Uint8Array>
type Sub = AbstractSublevel<Db, Uint8Array | string | Buffer, Uint8Array, Uint8Array>

interface Pending { hash: Uint8Array, rel: string, offset: number, length: number }

/** LevelDB memory: write buffer and block cache, fixed whatever the index size. */
const WRITE_BUFFER_BYTES = 4 * 1024 * 1024
const CACHE_BYTES = 8 * 1024 * 1024
const BATCH = 1024

export class ContentIndex {
  private readonly h: Sub
  private readonly s: Sub
  private firstSeq = 0
  private nextSeq = 0
  private queue: Pending[] = []
  /** every mutation runs on this chain, one after another */
  private chain: Promise<void> = Promise.resolve()
  private pumping = false
  private closed = false
  private readonly maxEntries: number
  private readonly maxQueued: number
  private readonly readsInFlight: number
  private readonly counters = { hits: 0, misses: 0, stale: 0, dropped: 0, evicted: 0 }

  private constructor (private readonly components: ContentIndexComponents, private readonly db: Level<Uint8Array, Uint8Array>, private readonly init: ContentIndexInit) {
    this.h = db.sublevel<Uint8Array, Uint8Array>('h', { keyEncoding: 'view', valueEncoding: 'view' })
    this.s = db.sublevel<Uint8Array, Uint8Array>('s', { keyEncoding: 'view', valueEncoding: 'view' })
    this.maxEntries = Math.max(1, Math.floor(init.maxEntries ?? DEFAULT_CONTENT_INDEX_MAX_ENTRIES))
    this.maxQueued = Math.max(1, Math.floor(init.maxQueuedEntries ?? 65536))
    this.readsInFlight = Math.max(1, Math.floor(init.readsInFlight ?? 8))
  }

  /** LevelDB's memory for the index (memtables + block cache; undefined once closed). */
  memoryBytes (): number | undefined { return levelMemoryBytes(this.db) }

  static async open (components: ContentIndexComponents, init: ContentIndexInit): Promise<ContentIndex> {
    const db = new Level<Uint8Array, Uint8Array>(init.dir, { keyEncoding: 'view', valueEncoding: 'view', writeBufferSize: WRITE_BUFFER_BYTES, cacheSize: CACHE_BYTES })
    await db.open()
    const index = new ContentIndex(components, db, init)
    for await (const k of index.s.keys({ limit: 1 })) index.firstSeq = readU64be(k, 0)
    for await (const k of index.s.keys({ limit: 1, reverse: true })) index.nextSeq = readU64be(k, 0) + 1
    if (index.nextSeq < index.firstSeq) index.nextSeq = index.firstSeq
    // a smaller maxEntries than last time: evict now
    if (index.count > index.maxEntries) await index.serial(async () => { await index.evict(0) })
    return index
  }

  private get count (): number { return this.nextSeq - this.firstSeq }

  /**
   * Records that `loc` holds a block whose hash is `hash` (written there, or about to be: the
   * entry is verified on use). Returns at once; false when the queue was full and it was dropped.
   */
  add (hash: Uint8Array, loc: ContentLocation): boolean {
    if (this.closed || hash.byteLength !== CONTENT_HASH_BYTES || !(loc.length >= 1)) return false
    const rel = this.relativeOf(loc.path)
    if (rel === undefined) return false
    if (this.queue.length >= this.maxQueued) { this.counters.dropped++; return false }
    this.queue.push({ hash: Uint8Array.from(hash), rel, offset: loc.offset, length: loc.length })
    this.pump()
    return true
  }

  /** Waits until every entry queued so far is written (tests, shutdown). */
  async flush (): Promise<void> {
    while (this.queue.length > 0 || this.pumping) await this.chain
    await this.chain
  }

  /** The recorded place of `hash`, unverified (tests and diagnostics). */
  async lookup (hash: Uint8Array): Promise<ContentLocation | undefined> {
    const v = await this.h.get(hash)
    return v === undefined ? undefined : this.decode(v)?.loc
  }

  /**
   * For each wanted block: its bytes, read from the place the index records and verified against
   * the hash and length — or undefined (no entry, a file gone, a block that changed since; such
   * an entry is deleted). Results in the order asked.
   */
  async fetchMany (wanted: ReadonlyArray<{ hash: Uint8Array, length: number }>, signal?: AbortSignal): Promise<Array<Uint8Array | undefined>> {
    const out: Array<Uint8Array | undefined> = new Array(wanted.length).fill(undefined)
    if (this.closed || wanted.length === 0) return out
    const handles = new Map<string, Promise<FileHandle | null>>()
    let next = 0
    const worker = async (): Promise<void> => {
      // bounded: each pass takes one wanted block
      while (next < wanted.length) {
        signal?.throwIfAborted()
        const i = next++
        const w = wanted[i] as { hash: Uint8Array, length: number }
        out[i] = await this.fetchOne(w.hash, w.length, handles)
      }
    }
    try {
      await Promise.all(Array.from({ length: Math.min(this.readsInFlight, wanted.length) }, worker))
    } finally {
      for (const p of handles.values()) { const fh = await p; await fh?.close().catch(() => {}) }
    }
    return out
  }

  stats (): ContentIndexStats {
    return { entries: this.count, maxEntries: this.maxEntries, ...this.counters }
  }

  async close (): Promise<void> {
    if (this.closed) return
    await this.flush()
    this.closed = true
    this.queue = []
    await this.chain
    await this.db.close()
  }

  private async fetchOne (hash: Uint8Array, length: number, handles: Map<string, Promise<FileHandle | null>>): Promise<Uint8Array | undefined> {
    if (hash.byteLength !== CONTENT_HASH_BYTES) return undefined
    const v = await this.h.get(hash).catch(() => undefined)
    const entry = v === undefined ? undefined : this.decode(v)
    if (entry === undefined || entry.loc.length !== length) { this.counters.misses++; return undefined }
    const { loc, seq } = entry
    let fh = handles.get(loc.path)
    if (fh === undefined) {
      fh = openFile(loc.path, 'r').catch(() => null)
      handles.set(loc.path, fh)
    }
    const handle = await fh
    let data: Uint8Array | undefined
    if (handle !== null) {
      const buf = Buffer.allocUnsafe(length)
      try {
        const { bytesRead } = await handle.read(buf, 0, length, loc.offset)
        if (bytesRead === length && Buffer.compare(blake3(buf, CONTENT_HASH_BYTES), hash) === 0) data = buf
      } catch {}
    }
    if (data !== undefined) { this.counters.hits++; return data }
    this.counters.stale++
    void this.serial(async () => {
      // only if nothing re-added the hash meanwhile
      const now = await this.h.get(hash)
      if (now !== undefined && this.decode(now)?.seq === seq) await this.h.del(hash)
    })
    return undefined
  }

  private pump (): void {
    if (this.pumping) return
    this.pumping = true
    void this.serial(async () => {
      try {
        // bounded: each pass removes up to BATCH queued entries
        while (this.queue.length > 0 && !this.closed) {
          const batch = this.queue.splice(0, BATCH)
          const ops = this.db.batch()
          for (const p of batch) {
            const seq = this.nextSeq++
            ops.put(p.hash, this.encode(seq, p), { sublevel: this.h })
            ops.put(u64be(seq), p.hash, { sublevel: this.s })
          }
          await ops.write()
          // then back under the bound, in a batch of its own: eviction reads which seq each
          // hash's entry has now, so a hash this batch added again is not deleted with its old seq
          await this.evict(0)
        }
      } finally { this.pumping = false }
    })
  }

  /** Deletes the oldest entries until `room` more fit under maxEntries (exceeded by at most one batch, between its write and this). */
  private async evict (room: number): Promise<void> {
    const excess = this.count + room - this.maxEntries
    if (excess <= 0) return
    const ops = this.db.batch()
    let n = 0
    for await (const [k, hash] of this.s.iterator({ limit: excess })) {
      const seq = readU64be(k, 0)
      const v = await this.h.get(hash)
      if (v !== undefined && this.decode(v)?.seq === seq) ops.del(hash, { sublevel: this.h })
      ops.del(k, { sublevel: this.s })
      this.firstSeq = seq + 1
      n++
    }
    await ops.write()
    this.counters.evicted += n
    // an empty `s` (every entry evicted): the next seq starts the range again
    if (this.firstSeq > this.nextSeq) this.nextSeq = this.firstSeq
  }

  private async serial (fn: () => Promise<void>): Promise<void> {
    const run = this.chain.then(fn)
    this.chain = run.catch((err: unknown) => {
      this.components.log?.warn({ err: errorMessage(err) }, 'content index update failed (the index is a hint: blocks are sent instead)')
    })
    await this.chain
  }

  private relativeOf (path: string): string | undefined {
    if (!isAbsolute(path)) return undefined
    const rel = relative(this.init.root, path)
    if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) return undefined
    return rel.split(sep).join('/')
  }

  private encode (seq: number, p: Pending): Uint8Array {
    const rel = encodeUtf8(p.rel)
    const out = new Uint8Array(8 + 8 + 4 + rel.byteLength)
    const v = new DataView(out.buffer)
    v.setBigUint64(0, BigInt(seq))
    v.setBigUint64(8, BigInt(p.offset))
    v.setUint32(16, p.length)
    out.set(rel, 20)
    return out
  }

  private decode (v: Uint8Array): { seq: number, loc: ContentLocation } | undefined {
    if (v.byteLength <= 20) return undefined
    try {
      const rel = decodeUtf8(v.subarray(20))
      // stored by add(), which only takes paths under the root; checked again all the same
      if (rel.split('/').includes('..')) return undefined
      return { seq: readU64be(v, 0), loc: { path: join(this.init.root, ...rel.split('/')), offset: readU64be(v, 8), length: readU32be(v, 16) } }
    } catch { return undefined }
  }
}
