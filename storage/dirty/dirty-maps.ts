/**
 * Per-target dirty maps, after DRBD's bitmaps: for each (target, file) the blocks the target
 * still needs, persisted in LevelDB as 4 KiB bitmap segments (1 bit per block; a 1 TiB disk at
 * 64 KiB blocks is 2 MiB of bitmap, absent segments are all clean).
 *
 * Two kinds of bitmap per target and file:
 *   D      dirty: changed and not yet sent
 *   I(g)   in flight: sent as part of generation g, not yet acknowledged
 * markChanged() sets D for every target. inFlight(g) moves blocks from D to I(g). acknowledge(g)
 * drops I(≤g): a block re-dirtied after it was sent is back in D and stays dirty. requeue()
 * (disconnect, restart) folds I back into D. A new target starts with every block dirty.
 *
 * Keys (binary sublevel):
 *   'V'                                       → {"blockSize":n}
 *   'T' + target                              → {}            registered targets
 *   'F' + file                                → {"fileSize":n} registered files
 *   'D' + lp(target) + lp(file) + u32 seg     → segment
 *   'I' + lp(target) + u32 gen + lp(file) + u32 seg → segment
 * Every mutation runs under one lock; read-modify-write goes through a small transaction cache
 * so a segment touched twice in one batch is not read stale, and batches are cut only between
 * segments, so each segment's D and I change together.
 */
import type { BinaryDb } from '../manifest/db.ts'
import { concatBytes, decodeUtf8, encodeUtf8, lenPrefixed, prefixEnd, readU32be, u32be } from '../manifest/db.ts'
import { DEFAULT_BLOCK_SIZE, blockCount, validateBlockSize } from '../../common/block-size.ts'
import { mergeRanges } from '../../common/ranges.ts'
import type { ByteRange as Range } from '../../common/ranges.ts'
import { SEGMENT_BITS, SEGMENT_BYTES, andNotInto, isEmpty, orInto, popcount, runsOf, setBits, testBit } from './bitmap.ts'
import { BadGenerationError, DirtyMapsClosedError, UnknownFileError, UnknownTargetError } from './errors.ts'

export { BadGenerationError, DirtyMapsClosedError, UnknownFileError, UnknownTargetError } from './errors.ts'

export interface DirtyMapsInit {
  /** Block size the bitmaps are kept at; a change on reopen marks everything dirty. @default 65536 */
  blockSizeBytes?: number
}

export type RangeSeed = (file: string) => AsyncIterable<Range> | Iterable<Range>

const K_VERSION = new Uint8Array([0x56])
const T = 0x54
const F = 0x46
const D = 0x44
const I = 0x49
const FLUSH_SEGMENTS = 256

/** Read-your-writes cache over one chained batch. */
class SegmentTx {
  private readonly cache = new Map<string, { key: Uint8Array, seg: Uint8Array | null }>()
  constructor (private readonly db: BinaryDb) {}

  async get (key: Uint8Array): Promise<Uint8Array> {
    const hit = this.cache.get(hex(key))
    if (hit !== undefined) return hit.seg ?? new Uint8Array(SEGMENT_BYTES)
    const v = await this.db.get(key)
    const seg = new Uint8Array(SEGMENT_BYTES)
    if (v !== undefined) seg.set(v.subarray(0, SEGMENT_BYTES))
    return seg
  }

  put (key: Uint8Array, seg: Uint8Array): void {
    this.cache.set(hex(key), { key, seg: isEmpty(seg) ? null : seg })
  }

  /** Writes when enough segments are pending (call only between whole-segment updates). */
  async maybeFlush (): Promise<void> { if (this.cache.size >= FLUSH_SEGMENTS) await this.flush() }

  async flush (): Promise<void> {
    if (this.cache.size === 0) return
    const batch = this.db.batch()
    for (const { key, seg } of this.cache.values()) {
      if (seg == null) batch.del(key); else batch.put(key, seg)
    }
    this.cache.clear()
    await batch.write()
  }
}

function hex (b: Uint8Array): string { return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex') }

/** Per-segment bit ranges of merged byte ranges. */
function * segmentsOf (ranges: Range[], blockSize: number): Generator<{ seg: number, bits: Array<[number, number]> }> {
  let cur: { seg: number, bits: Array<[number, number]> } | null = null
  for (const r of ranges) {
    const first = Math.floor(r.offset / blockSize)
    const end = Math.ceil((r.offset + r.length) / blockSize)
    for (let b = first; b < end;) {
      const seg = Math.floor(b / SEGMENT_BITS)
      const segEnd = Math.min(end, (seg + 1) * SEGMENT_BITS)
      if (cur != null && cur.seg !== seg) { yield cur; cur = null }
      cur ??= { seg, bits: [] }
      cur.bits.push([b - seg * SEGMENT_BITS, segEnd - seg * SEGMENT_BITS])
      b = segEnd
    }
  }
  if (cur != null) yield cur
}

export class DirtyMaps {
  readonly blockSize: number
  private readonly db: BinaryDb
  private readonly targetSet = new Set<string>()
  private readonly fileSizes = new Map<string, number>()
  private lock: Promise<unknown> = Promise.resolve()
  private opened = false

  constructor (components: { db: BinaryDb }, init: DirtyMapsInit = {}) {
    this.db = components.db
    this.blockSize = validateBlockSize(init.blockSizeBytes ?? DEFAULT_BLOCK_SIZE)
  }

  /**
   * Loads registries and folds every in-flight set back into dirty (after a restart no stream
   * survives, so nothing in flight can still be acknowledged). Idempotent.
   */
  async open (): Promise<void> {
    if (this.opened) return
    await this.db.open()
    for await (const [k, v] of this.db.iterator({ gte: new Uint8Array([T]), lt: new Uint8Array([T + 1]) })) {
      void v
      this.targetSet.add(decodeUtf8(k.subarray(1)))
    }
    for await (const [k, v] of this.db.iterator({ gte: new Uint8Array([F]), lt: new Uint8Array([F + 1]) })) {
      this.fileSizes.set(decodeUtf8(k.subarray(1)), (JSON.parse(decodeUtf8(v)) as { fileSize: number }).fileSize)
    }
    this.opened = true
    const ver = await this.db.get(K_VERSION)
    const stored = ver !== undefined ? (JSON.parse(decodeUtf8(ver)) as { blockSize: number }).blockSize : null
    if (stored !== null && stored !== this.blockSize) {
      // Old bitmaps are at another grain: start over with everything dirty for everyone.
      await this.db.clear({ gte: new Uint8Array([D]), lt: new Uint8Array([D + 1]) })
      await this.db.clear({ gte: new Uint8Array([I]), lt: new Uint8Array([I + 1]) })
      await this.db.put(K_VERSION, encodeUtf8(JSON.stringify({ blockSize: this.blockSize })))
      for (const file of this.fileSizes.keys()) await this.markAll(file)
    } else if (stored === null) {
      await this.db.put(K_VERSION, encodeUtf8(JSON.stringify({ blockSize: this.blockSize })))
    }
    for (const t of this.targetSet) await this.requeue(t)
  }

  /** Stops accepting calls (the database belongs to the caller). Idempotent. */
  async close (): Promise<void> {
    await this.locked(async () => { this.opened = false })
  }

  targets (): string[] { return [...this.targetSet] }
  files (): Array<{ file: string, fileSize: number }> { return [...this.fileSizes].map(([file, fileSize]) => ({ file, fileSize })) }

  /**
   * Registers `target`; it starts with every block of every known file dirty, or only the
   * ranges `seed(file)` yields (e.g. the manifest's non-zero blocks: a fresh replica is zeros).
   * Re-adding a known target is a no-op.
   */
  async addTarget (target: string, seed?: RangeSeed): Promise<void> {
    await this.locked(async () => {
      if (this.targetSet.has(target)) return
      for (const [file, size] of this.fileSizes) {
        let ranges: Range[]
        if (seed != null) {
          ranges = []
          for await (const r of seed(file)) ranges.push(r)
        } else {
          ranges = size > 0 ? [{ offset: 0, length: size }] : []
        }
        await this.setRanges([target], file, mergeRanges(ranges))
      }
      await this.db.put(concatBytes(new Uint8Array([T]), encodeUtf8(target)), encodeUtf8('{}'))
      this.targetSet.add(target)
    })
  }

  async removeTarget (target: string): Promise<void> {
    await this.locked(async () => {
      for (const kind of [D, I]) {
        const p = concatBytes(new Uint8Array([kind]), lenPrefixed(target))
        await this.db.clear({ gte: p, lt: prefixEnd(p) })
      }
      await this.db.del(concatBytes(new Uint8Array([T]), encodeUtf8(target)))
      this.targetSet.delete(target)
    })
  }

  /** Forgets a file everywhere (the VM was removed). */
  async removeFile (file: string): Promise<void> {
    await this.locked(async () => {
      for (const t of this.targetSet) {
        const p = concatBytes(new Uint8Array([D]), lenPrefixed(t), lenPrefixed(file))
        await this.db.clear({ gte: p, lt: prefixEnd(p) })
        for await (const key of this.db.keys({ gte: this.inFlightPrefix(t), lt: prefixEnd(this.inFlightPrefix(t)) })) {
          if (this.parseInFlightKey(t, key).file === file) await this.db.del(key)
        }
      }
      await this.db.del(concatBytes(new Uint8Array([F]), encodeUtf8(file)))
      this.fileSizes.delete(file)
    })
  }

  /** Marks `ranges` of `file` dirty for every target and records the file's size. */
  async markChanged (file: string, ranges: Iterable<Range>, fileSize: number): Promise<void> {
    const merged = mergeRanges(ranges)
    await this.locked(async () => {
      await this.registerFile(file, fileSize)
      await this.setRanges([...this.targetSet], file, merged)
    })
  }

  /** Marks the whole file dirty for every target (state of the targets unknown). */
  async markAll (file: string, fileSize?: number): Promise<void> {
    const size = fileSize ?? this.fileSizes.get(file)
    if (size === undefined) throw new UnknownFileError(`no size known for ${file}`)
    await this.markChanged(file, size > 0 ? [{ offset: 0, length: size }] : [], size)
  }

  /** Dirty (unsent) byte ranges of `file` for `target`, merged, clipped to the file size. */
  async * pending (target: string, file: string): AsyncGenerator<Range> {
    this.check(target)
    const size = this.fileSizes.get(file)
    if (size === undefined) return
    const prefix = concatBytes(new Uint8Array([D]), lenPrefixed(target), lenPrefixed(file))
    let runStart = -1
    let runEnd = -1
    const emit = (): Range | null => {
      if (runStart < 0) return null
      const offset = runStart * this.blockSize
      const end = Math.min(runEnd * this.blockSize, size)
      return end > offset ? { offset, length: end - offset } : null
    }
    for await (const [k, v] of this.db.iterator({ gte: prefix, lt: prefixEnd(prefix) })) {
      const base = readU32be(k, prefix.length) * SEGMENT_BITS
      for (const [s, e] of runsOf(v)) {
        if (base + s === runEnd) { runEnd = base + e; continue }
        const r = emit()
        if (r != null) yield r
        runStart = base + s
        runEnd = base + e
      }
    }
    const r = emit()
    if (r != null) yield r
  }

  /** Records that `ranges` of `file` were sent to `target` in `generation` (moves them D → I). */
  async inFlight (target: string, generation: number, file: string, ranges: Iterable<Range>): Promise<void> {
    checkGeneration(generation)
    const merged = mergeRanges(ranges)
    await this.locked(async () => {
      this.check(target)
      if (!this.fileSizes.has(file)) throw new UnknownFileError(`unknown file ${file}`)
      const tx = new SegmentTx(this.db)
      for (const { seg, bits } of segmentsOf(merged, this.blockSize)) {
        const mask = new Uint8Array(SEGMENT_BYTES)
        for (const [a, b] of bits) setBits(mask, a, b)
        const dKey = this.dirtyKey(target, file, seg)
        const iKey = this.inFlightKey(target, generation, file, seg)
        const d = await tx.get(dKey)
        const inf = await tx.get(iKey)
        orInto(inf, mask)
        andNotInto(d, mask)
        tx.put(iKey, inf)
        tx.put(dKey, d)
        await tx.maybeFlush()
      }
      await tx.flush()
    })
  }

  /** The target applied every generation ≤ `generation`: their in-flight blocks are clean. */
  async acknowledge (target: string, generation: number): Promise<void> {
    checkGeneration(generation)
    await this.locked(async () => {
      this.check(target)
      const p = this.inFlightPrefix(target)
      await this.db.clear({ gte: p, lt: prefixEnd(concatBytes(p, u32be(generation))) })
    })
  }

  /** Puts everything in flight to `target` back into its dirty map (stream lost). */
  async requeue (target: string): Promise<void> {
    await this.locked(async () => {
      this.check(target)
      const p = this.inFlightPrefix(target)
      const tx = new SegmentTx(this.db)
      const done: Uint8Array[] = []
      for await (const [k, v] of this.db.iterator({ gte: p, lt: prefixEnd(p) })) {
        const { file, seg } = this.parseInFlightKey(target, k)
        const dKey = this.dirtyKey(target, file, seg)
        const d = await tx.get(dKey)
        orInto(d, v)
        tx.put(dKey, d)
        done.push(k)
        if (done.length >= FLUSH_SEGMENTS) {
          await tx.flush()
          await this.db.batch(done.splice(0).map(key => ({ type: 'del' as const, key })))
        }
      }
      await tx.flush()
      if (done.length > 0) await this.db.batch(done.map(key => ({ type: 'del' as const, key })))
    })
  }

  /** Bytes dirty and not yet sent to `target` (one file or all). */
  async dirtyBytes (target: string, file?: string): Promise<number> {
    this.check(target)
    const p = file !== undefined
      ? concatBytes(new Uint8Array([D]), lenPrefixed(target), lenPrefixed(file))
      : concatBytes(new Uint8Array([D]), lenPrefixed(target))
    const dPrefixLen = 1 + lenPrefixed(target).length
    return await this.countBytes(p, (k) => {
      const f = readLenPrefixed(k, dPrefixLen)
      return { file: f.value, seg: readU32be(k, f.next) }
    })
  }

  /** Bytes sent to `target` and not yet acknowledged (may overlap dirtyBytes after a re-dirty). */
  async inFlightBytes (target: string, file?: string): Promise<number> {
    this.check(target)
    let n = 0
    const p = this.inFlightPrefix(target)
    for await (const [k, v] of this.db.iterator({ gte: p, lt: prefixEnd(p) })) {
      const key = this.parseInFlightKey(target, k)
      if (file !== undefined && key.file !== file) continue
      n += this.segBytes(key.file, key.seg, v)
    }
    return n
  }

  private async countBytes (prefix: Uint8Array, parse: (k: Uint8Array) => { file: string, seg: number }): Promise<number> {
    let n = 0
    for await (const [k, v] of this.db.iterator({ gte: prefix, lt: prefixEnd(prefix) })) {
      const { file, seg } = parse(k)
      n += this.segBytes(file, seg, v)
    }
    return n
  }

  /** Bytes of the set bits of one segment, the file's short last block counted short. */
  private segBytes (file: string, seg: number, v: Uint8Array): number {
    const size = this.fileSizes.get(file) ?? 0
    const nBlocks = blockCount(size, this.blockSize)
    let bits = popcount(v)
    const base = seg * SEGMENT_BITS
    // Bits at or past the end of a shrunk file do not count; the short last block counts short.
    let bytes = 0
    if (base + SEGMENT_BITS > nBlocks) {
      for (const [s, e] of runsOf(v)) {
        const over = Math.max(0, base + e - Math.max(nBlocks, base + s))
        bits -= over
      }
    }
    bytes = bits * this.blockSize
    const last = nBlocks - 1
    if (last >= base && last < base + SEGMENT_BITS && testBit(v, last - base)) bytes -= nBlocks * this.blockSize - size
    return bytes
  }

  private async setRanges (targets: string[], file: string, merged: Range[]): Promise<void> {
    if (targets.length === 0 || merged.length === 0) return
    const tx = new SegmentTx(this.db)
    for (const { seg, bits } of segmentsOf(merged, this.blockSize)) {
      for (const t of targets) {
        const key = this.dirtyKey(t, file, seg)
        const d = await tx.get(key)
        for (const [a, b] of bits) setBits(d, a, b)
        tx.put(key, d)
      }
      await tx.maybeFlush()
    }
    await tx.flush()
  }

  private async registerFile (file: string, fileSize: number): Promise<void> {
    if (!Number.isSafeInteger(fileSize) || fileSize < 0) throw new UnknownFileError(`bad size ${String(fileSize)} for ${file}`)
    if (this.fileSizes.get(file) === fileSize) return
    await this.db.put(concatBytes(new Uint8Array([F]), encodeUtf8(file)), encodeUtf8(JSON.stringify({ fileSize })))
    this.fileSizes.set(file, fileSize)
  }

  private dirtyKey (target: string, file: string, seg: number): Uint8Array {
    return concatBytes(new Uint8Array([D]), lenPrefixed(target), lenPrefixed(file), u32be(seg))
  }

  private inFlightPrefix (target: string): Uint8Array {
    return concatBytes(new Uint8Array([I]), lenPrefixed(target))
  }

  private inFlightKey (target: string, generation: number, file: string, seg: number): Uint8Array {
    return concatBytes(this.inFlightPrefix(target), u32be(generation), lenPrefixed(file), u32be(seg))
  }

  private parseInFlightKey (target: string, k: Uint8Array): { generation: number, file: string, seg: number } {
    const base = this.inFlightPrefix(target).length
    const generation = readU32be(k, base)
    const f = readLenPrefixed(k, base + 4)
    return { generation, file: f.value, seg: readU32be(k, f.next) }
  }

  private check (target: string): void {
    if (!this.opened) throw new DirtyMapsClosedError()
    if (!this.targetSet.has(target)) throw new UnknownTargetError(`unknown target ${target}`)
  }

  private async locked<T> (fn: () => Promise<T>): Promise<T> {
    if (!this.opened) throw new DirtyMapsClosedError()
    const run = this.lock.catch(() => {}).then(fn)
    this.lock = run
    return await run
  }
}

function readLenPrefixed (k: Uint8Array, at: number): { value: string, next: number } {
  const len = ((k[at] as number) << 8) | (k[at + 1] as number)
  return { value: decodeUtf8(k.subarray(at + 2, at + 2 + len)), next: at + 2 + len }
}

function checkGeneration (g: number): void {
  if (!Number.isSafeInteger(g) || g < 0 || g > 0xffffffff) throw new BadGenerationError(`generation ${String(g)} outside [0, 2^32)`)
}
