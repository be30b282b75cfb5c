/**
 * The default change source: read the file, hash every block, compare with the manifest.
 *
 * Flow of one `changes()` call:
 *  1. stat. If (size, mtime, ctime, ino, dev) equals the token stored by the last consistent,
 *     non-racy scan, and that scan started at least `settleMarginMs` after the stat's
 *     mtime/ctime (`statAtMs`), nothing is read: the answer comes from the manifest alone. A
 *     younger token is still stored (the sender's consistency check compares with it) but the
 *     next scan reads the file again: one long write() moves mtime only as it begins, so a pass
 *     that began while it was still copying data saw an unchanged stat and only part of it.
 *  2. Otherwise take a reflink clone if the file system can (consistent by construction), and
 *     run a pass: read the data ranges in large chunks with several in flight (with a worker
 *     pool the workers read and hash themselves, cache-hot), and merge the hashes with the
 *     manifest's block groups in step (manifest-merge.ts), writing new hashes (and tombstones
 *     for blocks gone to zero) stamped with the next generation G. A file written within
 *     `racyMarginMs` is waited out first.
 *  3. Without a clone a pass is quiet when the stat did not move while it ran; if it moved, pass
 *     again (whole file: a write may have hit any block) while `quietBudgetMs` and `maxPasses`
 *     allow, then report `consistent: false` if never quiet.
 *  4. Commit meta (generation, stat token) in the writer's last batch.
 *
 * A block is reported when it changed in this scan or carries a generation newer than the
 * caller's token: so an interrupted scan, or a caller that crashed before saving the new token,
 * still gets every change on the next call. A manifest this code cannot read (corrupt, or an
 * older layout) is cleared and the file scanned afresh: a new epoch, so callers get `full`.
 */
import { resolve as resolvePath } from 'node:path'
import type { Clock } from '../../common/clock.ts'
import { AbortedError } from '../../common/errors.ts'
import { FileManifest, MANIFEST_VERSION, ManifestCorruptError, ManifestVersionError } from '../manifest/manifest.ts'
import type { FileMeta, Manifest, ManifestWriter } from '../manifest/manifest.ts'
import { GROUP_BLOCKS, SLOT_ABSENT, SLOT_HASH } from '../manifest/group.ts'
import { ManifestMerge } from './manifest-merge.ts'
import type { BlockHasher } from './hasher.ts'
import { inlineHasher } from './hasher.ts'
import { nodeScanIO, sameStat, statFromRecord, statToRecord } from './file-io.ts'

/** Default of HashScanInit.settleMarginMs: a stat taken this long after the file's mtime/ctime may skip a read. */
export const SETTLE_MARGIN_MS = 2000
import type { FileStat, ReadHandle, ScanIO, StatRecord } from './file-io.ts'
import { BlockRuns, DEFAULT_BLOCK_SIZE, alignRanges, blockCount, validateBlockSize } from './range.ts'
import type { ReflinkSnapshots } from './reflink.ts'
import type { ReadBudget } from './read-budget.ts'
import { wholeFile } from './source.ts'
import type { ChangeOptions, ChangeSet, ChangeSource, ChangeToken, Range, RangesOf } from './source.ts'

export interface HashScanComponents {
  manifest: Manifest
  clock: Clock
  /** @default inlineHasher (calling thread) */
  hasher?: BlockHasher
  /** @default nodeScanIO */
  io?: ScanIO
  /** Point-in-time clones; null/absent: always scan the live file. */
  snapshots?: ReflinkSnapshots | null
  /** Byte ranges worth reading (format-unallocated space omitted, read as zeros). @default wholeFile */
  rangesOf?: RangesOf
  /** Taken from before every chunk read (a host-wide scan read budget); absent: unbounded. */
  readBudget?: ReadBudget
}

export interface PassInfo { pass: number, offset: number, length: number }

export interface HashScanInit {
  /**
   * Block size, a power of two in 4 KiB–4 MiB. Below 64 KiB the per-block cost of the BLAKE3
   * binding dominates (measured ≈ 0.5 GB/s per core at 4 KiB vs ≈ 4 GB/s at 64 KiB). @default 65536
   */
  blockSizeBytes?: number
  /** Read size (rounded up to whole blocks). @default 8388608 */
  chunkBytes?: number
  /**
   * Chunks read or being hashed at once; bounds memory to about maxInFlight × chunkBytes. When
   * pool workers read the file themselves only hashes come back (2 KiB per 8 MiB chunk), so
   * four times as many are kept in flight: a worker never waits for this thread. @default 4
   */
  maxInFlight?: number
  /** Time allowed for extra passes when the file changes during a scan. @default 10000 */
  quietBudgetMs?: number
  /** Upper bound on passes per scan, whatever the budget. @default 4 */
  maxPasses?: number
  /**
   * A stat whose mtime/ctime is within this many ms of the scan start is "racy": a write in the
   * same timestamp tick would not move it, so it is neither trusted as a quiet proof nor stored
   * as a skip-reading token. Raise it for network file systems with clock skew. @default 50
   */
  racyMarginMs?: number
  /**
   * A stored stat lets a scan skip reading only when the pass that recorded it started at least
   * this many ms after the stat's mtime/ctime. One write() call moves mtime once, as it begins,
   * and then copies its data for as long as it takes (tens of ms for some MiB, longer on a loaded
   * host): a pass that starts during it reads part of the write while the stat never moves
   * again, and skipping on that stat would hide the rest of the write from every later scan
   * (seen: the last 14 MiB of one 40 MiB write never replicated). The stat is still stored and
   * the pass still counts as quiet (the sender's consistency check needs it); only the skip waits.
   * A write that outlasts this margin is not covered. @default 2000
   */
  settleMarginMs?: number
  /** Changed-run budget before ranges are coarsened (over-reported). @default 65536 */
  maxRuns?: number
  /** Manifest key of a file. @default the absolute path */
  fileKey?: (path: string) => string
  /** Fair-queuing flow of this source's takes from `readBudget` (e.g. the VM name). */
  budgetFlow?: string
  /** Test hook: runs after each chunk is read (a test can write to the file here). */
  afterRead?: (info: PassInfo) => void | Promise<void>
}

const TOKEN_PREFIX = 'hs1'

interface ParsedToken { epoch: string, generation: number, blockSize: number }

export function formatHashScanToken (t: ParsedToken): ChangeToken {
  return `${TOKEN_PREFIX}:${t.epoch}:${t.generation}:${t.blockSize}`
}

export function parseHashScanToken (token: ChangeToken): ParsedToken | null {
  const m = /^hs1:([0-9a-f]{1,64}):(\d{1,10}):(\d{1,8})$/.exec(token)
  if (m == null) return null
  return { epoch: m[1] as string, generation: Number(m[2]), blockSize: Number(m[3]) }
}

interface ChunkHashes { buf: ArrayBuffer | null, hashes: ArrayBuffer, zeroMask: ArrayBuffer }
interface Chunk { kind: 'chunk', first: number, blocks: number, offset: number, length: number }
interface Gap { kind: 'gap', first: number, end: number }

interface PassState {
  /** null when the hasher reads the file itself (worker reads). */
  handle: ReadHandle | null
  path: string
  pass: number
  writer: ManifestWriter
  merge: ManifestMerge
  runs: BlockRuns
  shortRead: boolean
  scannedBytes: number
  signal: AbortSignal | undefined
}

export class HashScanSource implements ChangeSource {
  readonly blockSize: number
  private readonly chunkBytes: number
  private readonly maxInFlight: number
  private readonly quietBudgetMs: number
  private readonly maxPasses: number
  private readonly racyMarginMs: number
  private readonly settleMarginMs: number
  private readonly maxRuns: number
  private readonly fileKey: (path: string) => string
  private readonly hasher: BlockHasher
  private readonly io: ScanIO
  private readonly rangesOf: RangesOf
  private readonly locks = new Map<string, Promise<unknown>>()
  private readonly freeBuffers: ArrayBuffer[] = []
  /** The hasher reads the file itself (pool + default I/O): no buffers cross threads. */
  private readonly workerReads: boolean

  constructor (private readonly components: HashScanComponents, private readonly init: HashScanInit = {}) {
    this.blockSize = validateBlockSize(init.blockSizeBytes ?? DEFAULT_BLOCK_SIZE)
    const chunk = Math.max(init.chunkBytes ?? 8 * 1024 * 1024, this.blockSize)
    this.chunkBytes = Math.ceil(chunk / this.blockSize) * this.blockSize
    this.maxInFlight = Math.max(1, init.maxInFlight ?? 4)
    this.quietBudgetMs = init.quietBudgetMs ?? 10_000
    this.maxPasses = Math.max(1, init.maxPasses ?? 4)
    this.racyMarginMs = init.racyMarginMs ?? 50
    this.settleMarginMs = Math.max(init.settleMarginMs ?? SETTLE_MARGIN_MS, this.racyMarginMs)
    this.maxRuns = init.maxRuns ?? 65536
    this.fileKey = init.fileKey ?? ((p) => resolvePath(p))
    this.hasher = components.hasher ?? inlineHasher
    this.io = components.io ?? nodeScanIO
    this.rangesOf = components.rangesOf ?? wholeFile
    this.workerReads = components.io == null && this.hasher.readHash != null
  }

  async changes (file: string, since: ChangeToken | null, opts: ChangeOptions = {}): Promise<ChangeSet> {
    const key = this.fileKey(file)
    const prev = this.locks.get(key) ?? Promise.resolve()
    const run = prev.catch(() => {}).then(async () => await this.changesLocked(file, key, since, opts))
    this.locks.set(key, run)
    try {
      return await run
    } finally {
      if (this.locks.get(key) === run) this.locks.delete(key)
    }
  }

  /**
   * Non-zero blocks of `file` per the manifest, as byte ranges (no file reads). A manifest in an
   * older layout (not yet rescanned) cannot tell: the whole file is reported (over-reporting is
   * safe, under-reporting would leave a new target with holes).
   */
  async * nonZeroRanges (file: string): AsyncGenerator<{ offset: number, length: number }> {
    const fm = this.components.manifest.file(this.fileKey(file))
    const meta = await fm.meta()
    if (meta == null) return
    if (meta.v !== MANIFEST_VERSION) {
      if (meta.fileSize > 0) yield { offset: 0, length: meta.fileSize }
      return
    }
    const bs = meta.blockSize
    const range = (a: number, b: number): { offset: number, length: number } => ({ offset: a * bs, length: Math.min(b * bs, meta.fileSize) - a * bs })
    let start = -1
    let end = -1
    const c = fm.groups()
    try {
      for (let grp = await c.next(); grp !== null; grp = await c.next()) {
        for (let s = 0; s < GROUP_BLOCKS; s++) {
          if (grp.state(s) !== SLOT_HASH) continue
          const idx = grp.firstBlock + s
          if (idx === end) { end++; continue }
          if (start >= 0) yield range(start, end)
          start = idx
          end = idx + 1
        }
      }
    } finally { await c.close() }
    if (start >= 0) yield range(start, end)
  }

  /**
   * Hashes only `ranges` of `file` into its manifest (a pass restricted to them: blocks outside
   * are left as they are, not taken for zeros), for a told source that keeps the manifest true
   * without reading the whole file: every block it was told about is rehashed before the change
   * is recorded, so seed resume (hash compare), new-target seeding (`nonZeroRanges`) and a later
   * incremental hash scan all see the file as it is. The stat token is dropped: blocks written
   * since the told point are not in the manifest yet, so an unchanged stat proves nothing, and
   * the manifest no longer describes one quiet scan (no consistent capture from it).
   * Returns the hash-scan token of the manifest after the pass and the bytes read. Nothing is
   * done (token null) when the file has no manifest in this layout yet: a full scan must come first.
   */
  async hashRanges (file: string, ranges: Iterable<Range>, opts: { signal?: AbortSignal } = {}): Promise<{ token: ChangeToken | null, scannedBytes: number }> {
    const key = this.fileKey(file)
    const prev = this.locks.get(key) ?? Promise.resolve()
    const run = prev.catch(() => {}).then(async () => await this.hashRangesLocked(file, key, [...ranges], opts.signal))
    this.locks.set(key, run)
    try {
      return await run
    } finally {
      if (this.locks.get(key) === run) this.locks.delete(key)
    }
  }

  private async hashRangesLocked (file: string, key: string, ranges: Range[], signal: AbortSignal | undefined): Promise<{ token: ChangeToken | null, scannedBytes: number }> {
    const fm = this.components.manifest.file(key)
    const meta = await fm.meta()
    if (meta == null || meta.v !== MANIFEST_VERSION || meta.blockSize !== this.blockSize) return { token: null, scannedBytes: 0 }
    const size = (await this.io.stat(file)).size
    const committed = meta.generation
    const G = committed + 1
    const writer = fm.writer()
    await writer.putMeta({ ...withStat(meta, null), scanning: true })
    try {
      const st = await this.runPass({ fm, file, size, pass: 1, sinceGen: committed, committed, G, writer, signal, only: ranges })
      const generation = st.merge.wrote || st.merge.sawNewer ? G : committed
      await writer.commit({ ...withStat(meta, null), generation, fileSize: size, scanning: false, consistent: false })
      return { token: formatHashScanToken({ epoch: meta.epoch, generation, blockSize: this.blockSize }), scannedBytes: st.scannedBytes }
    } catch (err) {
      await writer.abort().catch(() => {})
      throw err
    }
  }

  private async changesLocked (file: string, key: string, since: ChangeToken | null, opts: ChangeOptions): Promise<ChangeSet> {
    try {
      return await this.scanLocked(file, key, since, opts)
    } catch (err) {
      if (!(err instanceof ManifestCorruptError || err instanceof ManifestVersionError)) throw err
      // Unreadable hashes say nothing: start over (new epoch, so the caller gets a full answer).
      await this.components.manifest.file(key).clear()
      return await this.scanLocked(file, key, since, opts)
    }
  }

  private async scanLocked (file: string, key: string, since: ChangeToken | null, opts: ChangeOptions): Promise<ChangeSet> {
    const { clock } = this.components
    checkAbort(opts.signal)
    const fm = this.components.manifest.file(key)
    const st00 = await this.io.stat(file)
    let meta = await fm.meta()
    if (meta != null && (meta.v !== MANIFEST_VERSION || meta.blockSize !== this.blockSize)) {
      await fm.clear() // another layout or grain: the old hashes say nothing here
      meta = null
    }
    if (meta == null) {
      meta = FileManifest.newMeta(this.blockSize)
      await fm.putMeta(meta)
    }
    const tok = since != null ? parseHashScanToken(since) : null
    const full = tok == null || tok.epoch !== meta.epoch || tok.blockSize !== this.blockSize || tok.generation > meta.generation
    const sinceGen = full ? null : (tok as ParsedToken).generation
    const token = (generation: number): ChangeToken => formatHashScanToken({ epoch: (meta as FileMeta).epoch, generation, blockSize: this.blockSize })

    if (!meta.scanning && meta.stat != null && sameStat(statFromRecord(meta.stat), st00) && this.maySkip(meta)) {
      const runs = await this.manifestOnly(fm, sinceGen, meta.generation, blockCount(st00.size, this.blockSize))
      return {
        ranges: runs.toRanges(this.blockSize, st00.size), token: token(meta.generation), consistent: true, full,
        fileSize: st00.size, blockSize: this.blockSize, scannedBytes: 0
      }
    }

    const started = clock.now()
    // Just written: let the timestamp tick pass first, or a same-tick write could hide (below).
    const st0 = await this.settle(file, st00, started, opts.signal)
    const wallStart = clock.wallNow()
    const snapshot = this.components.snapshots != null ? await this.components.snapshots.snapshot(file) : null
    const committed = meta.generation
    const G = committed + 1
    const writer = fm.writer()
    await writer.putMeta({ ...meta, scanning: true })
    let result: ChangeSet | undefined
    try {
      let s0 = st0
      let passWall = wallStart
      let lastPassMs = 0
      let total = 0
      let state: PassState | undefined
      let quiet = false
      let readSize = snapshot != null ? (await this.io.stat(snapshot.path)).size : st0.size
      for (let pass = 1; pass <= this.maxPasses; pass++) {
        const passStart = clock.now()
        state = await this.runPass({ fm, file: snapshot?.path ?? file, size: readSize, pass, sinceGen, committed, G, writer, signal: opts.signal })
        total += state.scannedBytes
        lastPassMs = clock.now() - passStart
        if (snapshot != null) { quiet = true; break }
        const s1 = await this.io.stat(file)
        const unchanged = !state.shortRead && sameStat(s0, s1)
        quiet = unchanged && !this.isRacy(s0, passWall)
        if (quiet) break
        const elapsed = clock.now() - started
        if (pass === this.maxPasses || elapsed + lastPassMs > this.quietBudgetMs) break
        s0 = await this.settle(file, s1, started, opts.signal)
        readSize = s0.size
        passWall = clock.wallNow()
      }
      const st = state as PassState
      const fileSize = snapshot != null ? readSize : s0.size
      const generation = st.merge.wrote || st.merge.sawNewer ? G : committed
      // Only a quiet, non-racy start stat is stored, with the time it was taken: the next call
      // skips reading on it only if that time is settleMarginMs past its mtime (maySkip).
      const startStat = snapshot != null ? st0 : s0
      const startWall = snapshot != null ? wallStart : passWall
      const trusted = quiet && !this.isRacy(startStat, startWall)
      const newMeta: FileMeta = {
        ...withStat(meta, trusted ? { stat: statToRecord(startStat), atMs: Math.floor(startWall) } : null),
        generation, fileSize, scanning: false, consistent: quiet
      }
      await writer.commit(newMeta)
      result = {
        ranges: st.runs.toRanges(this.blockSize, fileSize), token: token(generation), consistent: quiet, full,
        fileSize, blockSize: this.blockSize, scannedBytes: total
      }
      if (snapshot != null && opts.keepSnapshot === true) result.snapshot = snapshot
      return result
    } catch (err) {
      await writer.abort().catch(() => {})
      throw err
    } finally {
      if (snapshot != null && result?.snapshot !== snapshot) await snapshot.release()
    }
  }

  /**
   * If `s` is racy and the budget allows, waits until it no longer is and stats again; a file
   * still being written just comes back racy (and its pass will not count as quiet).
   */
  private async settle (file: string, s: FileStat, started: number, signal: AbortSignal | undefined): Promise<FileStat> {
    const { clock } = this.components
    const waitMs = this.racyWaitMs(s, clock.wallNow())
    if (waitMs <= 0 || clock.now() - started + waitMs > this.quietBudgetMs) return s
    await clock.sleep(waitMs, signal).catch((err: unknown) => { throw new AbortedError('scan aborted', { cause: err }) })
    return await this.io.stat(file)
  }

  /** Milliseconds until `s` stops being racy. */
  private racyWaitMs (s: FileStat, wallNow: number): number {
    const latest = Number((s.mtimeNs > s.ctimeNs ? s.mtimeNs : s.ctimeNs) / 1_000_000n)
    return Math.max(0, Math.ceil(latest + this.racyMarginMs + 1 - wallNow))
  }

  /**
   * Whether the stored stat may stand for the file without reading it: taken by a pass that
   * started at least settleMarginMs after the stat's mtime/ctime. No `statAtMs` (a meta written
   * by an older version, or a damaged value): read once, and that scan records it.
   */
  private maySkip (meta: FileMeta): boolean {
    const at = meta.statAtMs
    if (meta.stat == null || typeof at !== 'number' || !Number.isFinite(at)) return false
    const s = statFromRecord(meta.stat)
    const latestMs = Number((s.mtimeNs > s.ctimeNs ? s.mtimeNs : s.ctimeNs) / 1_000_000n)
    return at - latestMs >= this.settleMarginMs
  }

  private isRacy (s: FileStat, wallStartMs: number): boolean {
    const limit = BigInt(Math.floor((wallStartMs - this.racyMarginMs) * 1e6))
    return s.mtimeNs >= limit || s.ctimeNs >= limit
  }

  /** Answer from the manifest alone (file unchanged since a trusted stat). */
  private async manifestOnly (fm: FileManifest, sinceGen: number | null, committed: number, nBlocks: number): Promise<BlockRuns> {
    const runs = new BlockRuns(this.maxRuns)
    if (sinceGen === committed) return runs
    const c = fm.groups(0, nBlocks)
    try {
      for (let grp = await c.next(); grp !== null; grp = await c.next()) {
        const n = Math.min(GROUP_BLOCKS, nBlocks - grp.firstBlock)
        for (let s = 0; s < n; s++) {
          const state = grp.state(s)
          if (state !== SLOT_ABSENT && (sinceGen === null ? state === SLOT_HASH : grp.generation(s) > sinceGen)) runs.add(grp.firstBlock + s)
        }
      }
    } finally { await c.close() }
    return runs
  }

  private * items (ranges: Array<{ offset: number, length: number }>, nBlocks: number): Generator<Chunk | Gap> {
    const bs = this.blockSize
    const chunkBlocks = this.chunkBytes / bs
    let next = 0
    for (const r of ranges) {
      const first = r.offset / bs
      const end = Math.ceil((r.offset + r.length) / bs)
      if (first > next) yield { kind: 'gap', first: next, end: first }
      for (let b = first; b < end; b += chunkBlocks) {
        const blocks = Math.min(chunkBlocks, end - b)
        yield { kind: 'chunk', first: b, blocks, offset: b * bs, length: Math.min(blocks * bs, r.offset + r.length - b * bs) }
      }
      next = end
    }
    if (nBlocks > next) yield { kind: 'gap', first: next, end: nBlocks }
  }

  private async runPass (p: { fm: FileManifest, file: string, size: number, pass: number, sinceGen: number | null, committed: number, G: number, writer: ManifestWriter, signal: AbortSignal | undefined, only?: Range[] }): Promise<PassState> {
    const nBlocks = blockCount(p.size, this.blockSize)
    const ranges = alignRanges(p.only ?? await this.rangesOf(p.file, p.size), this.blockSize, p.size)
    await p.writer.flush() // the cursor below must see the previous pass's writes
    const handle = this.workerReads ? null : await this.io.open(p.file)
    const runs = new BlockRuns(this.maxRuns)
    const cursor = p.fm.groups()
    const st: PassState = {
      handle, path: p.file, pass: p.pass, writer: p.writer, runs,
      merge: new ManifestMerge({ cursor, writer: p.writer, runs, G: p.G, committed: p.committed, sinceGen: p.sinceGen }),
      shortRead: false, scannedBytes: 0, signal: p.signal
    }
    // Worker reads bring back only hashes: keep more in flight so no worker waits for a task.
    const inFlight = this.workerReads ? 4 * this.maxInFlight : this.maxInFlight
    const queue: Array<{ item: Chunk | Gap, result: Promise<ChunkHashes> | null }> = []
    try {
      for (const item of this.items(ranges, nBlocks)) {
        checkAbort(p.signal)
        // A restricted pass: what lies outside `only` is unchanged, not zeros.
        if (item.kind === 'gap' && p.only !== undefined) continue
        if (item.kind === 'chunk') {
          while (queue.length >= inFlight) await this.consume(st, queue.shift() as typeof queue[number])
          const result = this.readAndHash(st, item)
          result.catch(() => {}) // awaited in order by consume(); avoid an unhandled rejection meanwhile
          queue.push({ item, result })
        } else {
          queue.push({ item, result: null })
        }
      }
      while (queue.length > 0) await this.consume(st, queue.shift() as typeof queue[number])
      // Blocks past the end of a shrunk file: forget them (fileSize conveys the shrink).
      await st.merge.finish(nBlocks)
      await st.writer.flush()
    } finally {
      await Promise.allSettled(queue.map(async q => await q.result))
      await cursor.close()
      await handle?.close()
    }
    return st
  }

  private takeBuffer (): ArrayBuffer {
    return this.freeBuffers.pop() ?? new ArrayBuffer(this.chunkBytes)
  }

  private giveBuffer (buf: ArrayBuffer): void {
    if (buf.byteLength === this.chunkBytes && this.freeBuffers.length < this.maxInFlight + 1) this.freeBuffers.push(buf)
  }

  /** Chunk hashes; `buf` is null when the hasher read the file itself. */
  private async readAndHash (st: PassState, c: Chunk): Promise<{ buf: ArrayBuffer | null, hashes: ArrayBuffer, zeroMask: ArrayBuffer }> {
    const budget = this.components.readBudget
    if (budget !== undefined) {
      await budget.take(c.length, { ...(st.signal !== undefined ? { signal: st.signal } : {}), ...(this.init.budgetFlow !== undefined ? { flow: this.init.budgetFlow } : {}) })
    }
    if (st.handle == null) {
      const r = await (this.hasher.readHash as NonNullable<BlockHasher['readHash']>)(st.path, c.offset, c.length, this.blockSize, st.signal)
      st.scannedBytes += r.bytesRead
      if (r.bytesRead < c.length) st.shortRead = true
      if (this.init.afterRead != null) await this.init.afterRead({ pass: st.pass, offset: c.offset, length: c.length })
      return { buf: null, hashes: r.hashes, zeroMask: r.zeroMask }
    }
    const buf = this.takeBuffer()
    const u8 = new Uint8Array(buf, 0, c.length)
    let got = 0
    for (let guard = 0; got < c.length && guard < 1 << 20; guard++) {
      const n = await st.handle.read(u8, got, c.length - got, c.offset + got)
      if (n <= 0) break
      got += n
    }
    st.scannedBytes += got
    if (got < c.length) {
      u8.fill(0, got) // file shrank under us; the stat check will flag the pass
      st.shortRead = true
    }
    if (this.init.afterRead != null) await this.init.afterRead({ pass: st.pass, offset: c.offset, length: c.length })
    return await this.hasher.hash(buf, c.length, this.blockSize, st.signal)
  }

  private async consume (st: PassState, q: { item: Chunk | Gap, result: Promise<ChunkHashes> | null }): Promise<void> {
    const { item } = q
    if (item.kind === 'gap') {
      // Not read: format-unallocated, i.e. zeros. Entries here turn into tombstones.
      await st.merge.zeros(item.first, item.end)
      return
    }
    const r = await (q.result as Promise<ChunkHashes>)
    await st.merge.hashed(item.first, item.blocks, new Uint8Array(r.hashes), new Uint8Array(r.zeroMask))
    if (r.buf != null) this.giveBuffer(r.buf)
  }
}

/** `meta` with the skip token replaced: a stat and when it was taken, or none. */
function withStat (meta: FileMeta, token: { stat: StatRecord, atMs: number } | null): FileMeta {
  const { statAtMs: _old, ...rest } = meta
  return token === null ? { ...rest, stat: null } : { ...rest, stat: token.stat, statAtMs: token.atMs }
}

function checkAbort (signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw new AbortedError('scan aborted', { cause: signal.reason })
}
