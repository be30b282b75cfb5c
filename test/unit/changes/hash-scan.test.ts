import assert from 'node:assert/strict'
import { copyFile, readdir, truncate, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Level } from 'level'
import { HashScanSource, formatHashScanToken, parseHashScanToken } from '../../../storage/changes/hash-scan.ts'
import type { HashScanInit, HashScanComponents } from '../../../storage/changes/hash-scan.ts'
import { FileManifest, Manifest } from '../../../storage/manifest/manifest.ts'
import { binarySublevel } from '../../../storage/manifest/db.ts'
import { ReflinkSnapshots } from '../../../storage/changes/reflink.ts'
import type { Range } from '../../../storage/changes/range.ts'
import { ManualClock } from '../../../common/clock.ts'
import { aheadClock, blockContent, countingIO, tempDb, tempDir, writeAt, KiB } from './helpers.ts'
import type { TempDir } from './helpers.ts'

const BS = 4 * KiB
const N = 256 // blocks: 1 MiB files

/** A file whose blocks are non-zero except those in `zeros`. */
async function makeFile (path: string, zeros: Set<number> = new Set()): Promise<void> {
  const buf = Buffer.alloc(N * BS)
  for (let i = 0; i < N; i++) if (!zeros.has(i)) blockContent(BS, i).copy(buf, i * BS)
  await writeFile(path, buf)
}

/** Moves the file's stat without changing its content. */
async function touch (path: string): Promise<void> {
  const t = new Date(Date.now() - 7200_000)
  await utimes(path, t, t)
}

function blocksOf (ranges: Range[], bs = BS): number[] {
  const out: number[] = []
  for (const r of ranges) for (let o = r.offset; o < r.offset + r.length; o += bs) out.push(o / bs)
  return out
}

describe('changes/hash-scan', function () {
  this.timeout(20_000)
  let dir: TempDir
  let db: Level<Uint8Array, Uint8Array>
  let file: string
  let clock: ManualClock

  beforeEach(async () => {
    dir = await tempDir()
    db = await tempDb(dir.path)
    file = join(dir.path, 'disk.raw')
    clock = aheadClock()
  })
  afterEach(async () => { await db.close(); await dir.cleanup() })

  function source (extra: Partial<HashScanComponents> = {}, init: HashScanInit = {}): HashScanSource {
    return new HashScanSource({ manifest: new Manifest(binarySublevel(db, 'manifest')), clock, ...extra },
      { blockSizeBytes: BS, chunkBytes: 4 * BS, maxInFlight: 3, ...init })
  }

  it('rejects bad block sizes with a typed error', () => {
    for (const bad of [1000, 2048, 8 * 1024 * 1024, 3 * 4096]) {
      assert.throws(() => source({}, { blockSizeBytes: bad }), { name: 'InvalidBlockSizeError', code: 'ERR_CHANGES_BLOCK_SIZE' })
    }
  })

  it('first scan reports every non-zero block; zero blocks get no manifest entry', async () => {
    const zeros = new Set([0, 1, 2, 50, 51, 255])
    await makeFile(file, zeros)
    const src = source()
    const set = await src.changes(file, null)
    assert.equal(set.full, true)
    assert.equal(set.consistent, true)
    assert.equal(set.fileSize, N * BS)
    assert.equal(set.scannedBytes, N * BS)
    const expected = [...Array(N).keys()].filter(i => !zeros.has(i))
    assert.deepEqual(blocksOf(set.ranges), expected)
    const fm = new Manifest(binarySublevel(db, 'manifest')).file(file)
    let entries = 0
    for await (const e of fm.entries()) { entries++; assert.ok(!zeros.has(e.index)) }
    assert.equal(entries, expected.length)
  })

  it('finds exactly the edited blocks, then nothing, and the token moves only on change', async () => {
    await makeFile(file)
    const src = source()
    const first = await src.changes(file, null)
    const edits = [3, 4, 100, 200, 255]
    for (const i of edits) await writeAt(file, i * BS + 17, Buffer.from([0xee]))
    const second = await src.changes(file, first.token)
    assert.equal(second.full, false)
    assert.deepEqual(blocksOf(second.ranges), edits)
    assert.notEqual(second.token, first.token)
    const third = await src.changes(file, second.token)
    assert.deepEqual(third.ranges, [])
    assert.equal(third.token, second.token)
  })

  it('an unchanged stat costs no reads (counted through the injected reader)', async () => {
    await makeFile(file)
    const io = countingIO()
    const src = source({ io })
    const first = await src.changes(file, null)
    assert.ok(io.reads > 0)
    const reads = io.reads
    const again = await src.changes(file, first.token)
    assert.equal(io.reads, reads, 'no reads on the stat fast path')
    assert.equal(again.scannedBytes, 0)
    assert.deepEqual(again.ranges, [])
    assert.equal(again.consistent, true)
    // A full answer (since = null) also comes from the manifest alone.
    const full = await src.changes(file, null)
    assert.equal(io.reads, reads)
    assert.equal(blocksOf(full.ranges).length, N)
  })

  it('a block that becomes all zeros is reported once and then absent from full answers', async () => {
    await makeFile(file)
    const src = source()
    const a = await src.changes(file, null)
    await writeAt(file, 7 * BS, Buffer.alloc(BS))
    const b = await src.changes(file, a.token)
    assert.deepEqual(blocksOf(b.ranges), [7])
    const c = await src.changes(file, b.token)
    assert.deepEqual(c.ranges, [])
    const full = await source().changes(file, null)
    assert.ok(!blocksOf(full.ranges).includes(7))
    assert.equal(blocksOf(full.ranges).length, N - 1)
  })

  it('answers an older token with every change since it (caller crashed before saving)', async () => {
    await makeFile(file)
    const src = source()
    const t0 = (await src.changes(file, null)).token
    await writeAt(file, 10 * BS, Buffer.from([9]))
    const t1 = (await src.changes(file, t0)).token
    await writeAt(file, 20 * BS, Buffer.from([9]))
    await writeAt(file, 30 * BS, Buffer.alloc(BS))
    await src.changes(file, t1)
    const fromT0 = await src.changes(file, t0)
    assert.deepEqual(blocksOf(fromT0.ranges), [10, 20, 30])
    assert.equal(fromT0.full, false)
  })

  it('a token from another manifest (or a future generation) gets a full answer', async () => {
    await makeFile(file, new Set([5]))
    const src = source()
    const a = await src.changes(file, null)
    const parsed = parseHashScanToken(a.token)
    assert.ok(parsed != null)
    const foreign = formatHashScanToken({ ...parsed, epoch: 'abcdef' })
    const future = formatHashScanToken({ ...parsed, generation: parsed.generation + 5 })
    for (const tok of [foreign, future, 'rr1:x:1', 'garbage']) {
      const s = await src.changes(file, tok)
      assert.equal(s.full, true)
      assert.equal(blocksOf(s.ranges).length, N - 1)
    }
  })

  it('an interrupted scan loses nothing: the next call with the old token still reports', async () => {
    await makeFile(file)
    const src0 = source()
    const t0 = (await src0.changes(file, null)).token
    for (const i of [1, 2, 3, 200, 201]) await writeAt(file, i * BS, Buffer.from([7, 7]))
    const ac = new AbortController()
    // Abort after the first chunks were compared and written: the manifest now has new hashes.
    const src = source({}, { afterRead: ({ offset }) => { if (offset >= 100 * BS) ac.abort() } })
    await assert.rejects(src.changes(file, t0, { signal: ac.signal }), { code: 'ERR_ABORTED' })
    const again = await source().changes(file, t0)
    assert.deepEqual(blocksOf(again.ranges), [1, 2, 3, 200, 201])
  })

  it('handles growth and shrink', async () => {
    await makeFile(file)
    const src = source()
    const a = await src.changes(file, null)
    await truncate(file, 100 * BS + 100)
    const b = await src.changes(file, a.token)
    assert.equal(b.fileSize, 100 * BS + 100)
    assert.deepEqual(blocksOf(b.ranges), [100], 'the cut block changed; the rest is conveyed by fileSize')
    assert.equal(b.ranges[0]?.length, 100)
    await truncate(file, 120 * BS)
    await writeAt(file, 110 * BS, Buffer.from([1]))
    const c = await src.changes(file, b.token)
    // The cut block grew back with zeros (its content changed); zeros past it are not changes.
    assert.deepEqual(blocksOf(c.ranges), [100, 110])
  })

  it('detects a file changing during the scan and rescans until a quiet pass', async () => {
    await makeFile(file)
    const src0 = source()
    const t0 = (await src0.changes(file, null)).token
    await touch(file)
    let writes = 0
    const src = source({}, {
      afterRead: async ({ pass, offset }) => {
        // During pass 1, after block 200's chunk was read, write to block 10 (already read).
        if (pass === 1 && offset === 200 * BS) { writes++; await writeAt(file, 10 * BS, Buffer.from([0x55])) }
      }
    })
    const set = await src.changes(file, t0)
    assert.equal(writes, 1)
    assert.equal(set.consistent, true, 'second pass was quiet')
    assert.deepEqual(blocksOf(set.ranges), [10])
    assert.equal(set.scannedBytes, 2 * N * BS, 'two passes')
  })

  it('reports consistent: false when the file never holds still (bounded passes)', async () => {
    await makeFile(file)
    const t0 = (await source().changes(file, null)).token
    await touch(file)
    let n = 0
    const src = source({}, {
      maxPasses: 3,
      afterRead: async ({ offset }) => { if (offset === 0) await writeAt(file, 40 * BS, Buffer.from([n++ & 0xff, 1])) }
    })
    const set = await src.changes(file, t0)
    assert.equal(set.consistent, false)
    assert.equal(n, 3)
    assert.deepEqual(blocksOf(set.ranges), [40])
    // A fuzzy result never becomes a skip-reading token.
    const io = countingIO()
    const after = await source({ io }).changes(file, set.token)
    assert.ok(io.reads > 0)
    assert.equal(after.consistent, true)
  })

  it('stops rescanning when the quiet budget runs out', async () => {
    await makeFile(file)
    const t0 = (await source().changes(file, null)).token
    await touch(file)
    let passes = 0
    const src = source({}, {
      quietBudgetMs: 1000,
      maxPasses: 100,
      afterRead: async ({ offset }) => {
        if (offset !== 0) return
        passes++
        clock.advance(400) // each pass "takes" 400 ms of virtual time
        await writeAt(file, 41 * BS, Buffer.from([passes]))
      }
    })
    const set = await src.changes(file, t0)
    assert.equal(set.consistent, false)
    assert.equal(passes, 2, 'a third pass would overrun 1000 ms')
  })

  it('a racy stat (modified within the margin) is not trusted as a skip-reading token', async () => {
    await makeFile(file)
    const realWall = new ManualClock(0, Date.now()) // file mtime is "now": racy
    const io = countingIO()
    const mk = (): HashScanSource => new HashScanSource({ manifest: new Manifest(binarySublevel(db, 'manifest')), clock: realWall, io },
      { blockSizeBytes: BS, racyMarginMs: 60_000, quietBudgetMs: 0 })
    const a = await mk().changes(file, null)
    assert.equal(a.consistent, false, 'cannot prove no same-tick write happened during the pass')
    const reads = io.reads
    await mk().changes(file, a.token)
    assert.ok(io.reads > reads, 'racy stat was not stored as a token')
  })

  it('a stat taken within the settle margin of its mtime is kept for the consistency check but not skipped on: a long write() moves mtime only as it begins', async () => {
    await makeFile(file)
    // One write() began at t0 (mtime and ctime moved then, once) and is still copying its data
    // when the first pass runs 1 s later: outside the 50 ms racy margin, inside the 2 s settle
    // margin. The stat never moves again while the rest of the write lands.
    const t0Ms = Date.now() - 10_000
    const t0Ns = BigInt(t0Ms) * 1_000_000n
    const io = countingIO()
    const realStat = io.stat
    io.stat = async (p: string) => ({ ...(await realStat(p)), mtimeNs: t0Ns, ctimeNs: t0Ns })
    const wall = new ManualClock(0, t0Ms + 1000)
    const src = source({ io, clock: wall }, { quietBudgetMs: 0 })
    const fm = new Manifest(binarySublevel(db, 'manifest')).file(file)
    const a = await src.changes(file, null)
    assert.equal(a.consistent, true, 'quiet: the stat did not move and is outside the racy margin')
    const m = await fm.meta()
    assert.notEqual(m?.stat, null, 'the stat is stored: the sender\'s consistency check compares with it')
    assert.equal(m?.statAtMs, t0Ms + 1000)
    // the rest of the write lands; the stat is the same
    for (let i = 200; i < N; i++) await writeAt(file, i * BS, blockContent(BS, i, 7))
    wall.advance(100)
    const reads = io.reads
    const b = await src.changes(file, a.token)
    assert.ok(io.reads > reads, 'the unsettled stat did not let the scan skip reading')
    assert.deepEqual(blocksOf(b.ranges), [...Array(N - 200).keys()].map(i => 200 + i), 'the rest of the write is found')
    // once a pass starts 2 s after the mtime its stat settles, and the next scan reads nothing
    wall.advance(1000)
    const c = await src.changes(file, b.token)
    assert.deepEqual(c.ranges, [])
    const reads2 = io.reads
    assert.ok(reads2 > reads, 'still read: the stat stored at t0 + 1.1 s was not settled')
    const d = await src.changes(file, c.token)
    assert.equal(io.reads, reads2, 'settled: skipped')
    assert.equal(d.scannedBytes, 0)
    assert.equal(d.consistent, true)
  })

  it('a manifest meta without statAtMs (written by an older version) is read once, then trusted again', async () => {
    await makeFile(file)
    const io = countingIO()
    const src = source({ io })
    const fm = new Manifest(binarySublevel(db, 'manifest')).file(file)
    const a = await src.changes(file, null)
    const { statAtMs, ...old } = await fm.meta() ?? assert.fail('no meta')
    assert.equal(typeof statAtMs, 'number')
    assert.notEqual(old.stat, null)
    await fm.putMeta(old)
    const reads = io.reads
    const b = await src.changes(file, a.token)
    assert.ok(io.reads > reads, 'no statAtMs: the file is read once')
    assert.deepEqual(b.ranges, [])
    assert.equal(b.token, a.token, 'nothing changed: same generation')
    assert.equal(typeof (await fm.meta())?.statAtMs, 'number', 'the read recorded it')
    const reads2 = io.reads
    await src.changes(file, b.token)
    assert.equal(io.reads, reads2, 'then skipped')
  })

  it('skips unallocated ranges and turns their old entries into tombstones', async () => {
    await makeFile(file)
    const io = countingIO()
    let allocated: Range[] = [{ offset: 0, length: N * BS }]
    const src = source({ io, rangesOf: async () => allocated })
    const a = await src.changes(file, null)
    assert.equal(blocksOf(a.ranges).length, N)
    // The format now says blocks [64, 128) are unallocated (read as zeros), and one odd range.
    allocated = [{ offset: 0, length: 64 * BS }, { offset: 128 * BS + 5, length: 128 * BS - 5 }]
    await writeAt(file, 0, Buffer.from([2])) // move the stat
    const bytesBefore = io.bytes
    const b = await src.changes(file, a.token)
    assert.equal(io.bytes - bytesBefore, (N - 64) * BS, 'the gap was not read')
    assert.deepEqual(blocksOf(b.ranges), [0, ...Array.from({ length: 64 }, (_, i) => 64 + i)])
    const fromManifest = await source({ io }).changes(file, null)
    assert.equal(fromManifest.scannedBytes, 0)
    assert.equal(blocksOf(fromManifest.ranges).length, N - 64, 'tombstones are not non-zero blocks')
    await touch(file)
    const reread = await source().changes(file, null) // whole file: [64,128) are non-zero on disk
    assert.equal(blocksOf(reread.ranges).length, N)
  })

  it('a different block size resets the manifest and answers in full', async () => {
    await makeFile(file)
    const a = await source().changes(file, null)
    const big = await source({}, { blockSizeBytes: 16 * KiB }).changes(file, a.token)
    assert.equal(big.full, true)
    assert.equal(big.blockSize, 16 * KiB)
    assert.deepEqual(blocksOf(big.ranges, 16 * KiB).length, N / 4)
  })

  it('coarsens changed ranges past maxRuns instead of growing, never missing a change', async () => {
    await makeFile(file)
    const src = source({}, { maxRuns: 8 })
    const a = await src.changes(file, null)
    const edits = Array.from({ length: 40 }, (_, i) => i * 6 + 1)
    for (const i of edits) await writeAt(file, i * BS, Buffer.from([0xab]))
    const b = await src.changes(file, a.token)
    assert.ok(b.ranges.length <= 8)
    const got = new Set(blocksOf(b.ranges))
    for (const i of edits) assert.ok(got.has(i), `block ${i}`)
  })

  it('scans a reflink clone when the cloner works: one consistent pass, clone removed', async () => {
    await makeFile(file)
    const t0 = (await source().changes(file, null)).token
    await writeAt(file, 77 * BS, Buffer.from([1, 2, 3]))
    let clones = 0
    const snapshots = new ReflinkSnapshots({ cloner: { clone: async (s, d) => { clones++; await copyFile(s, d) } }, clock })
    let writesDuring = 0
    const src = source({ snapshots }, {
      afterRead: async ({ offset }) => { if (offset === 0) { writesDuring++; await writeAt(file, 90 * BS, Buffer.from([4])) } }
    })
    const set = await src.changes(file, t0)
    assert.equal(clones, 1)
    assert.equal(writesDuring, 1, 'a single pass')
    assert.equal(set.consistent, true)
    assert.deepEqual(blocksOf(set.ranges), [77], 'the clone predates the write to block 90')
    assert.deepEqual((await readdir(dir.path)).filter(n => n.includes('vmesh-clone')), [])
    // keepSnapshot hands the clone over; release() deletes it.
    const kept = await source({ snapshots }).changes(file, set.token, { keepSnapshot: true })
    assert.deepEqual(blocksOf(kept.ranges), [90])
    assert.ok(kept.snapshot != null)
    assert.equal((await readdir(dir.path)).filter(n => n.includes('vmesh-clone')).length, 1)
    await kept.snapshot.release()
    await kept.snapshot.release()
    assert.deepEqual((await readdir(dir.path)).filter(n => n.includes('vmesh-clone')), [])
  })

  it('falls back to the live file when cloning is unsupported, probing once per directory', async () => {
    await makeFile(file)
    let attempts = 0
    const snapshots = new ReflinkSnapshots({
      cloner: { clone: async () => { attempts++; throw Object.assign(new Error('no reflink'), { code: 'EOPNOTSUPP' }) } },
      clock
    })
    const src = source({ snapshots })
    const a = await src.changes(file, null)
    await writeAt(file, 0, Buffer.from([3]))
    const b = await src.changes(file, a.token)
    assert.deepEqual(blocksOf(b.ranges), [0])
    assert.equal(attempts, 1)
    assert.equal(snapshots.supported(file), false)
  })

  it('the real FICLONE cloner either clones or reports unsupported (no silent copy)', async () => {
    await makeFile(file)
    const { ficloneCloner } = await import('../../../storage/changes/reflink.ts')
    const snapshots = new ReflinkSnapshots({ cloner: ficloneCloner, clock })
    const snap = await snapshots.snapshot(file)
    if (snap == null) {
      assert.equal(snapshots.supported(file), false)
    } else {
      assert.equal(snapshots.supported(file), true)
      await snap.release()
    }
  })

  it('serialises concurrent scans of one file', async () => {
    await makeFile(file)
    const src = source()
    const [a, b] = await Promise.all([src.changes(file, null), src.changes(file, null)])
    assert.equal(blocksOf(a.ranges).length, N)
    assert.equal(blocksOf(b.ranges).length, N)
    assert.equal(a.token, b.token)
  })

  it('with a worker pool (workers read the file themselves) the answers are the same', async () => {
    const { WorkerPool } = await import('../../../storage/workers/pool.ts')
    const { poolHasher } = await import('../../../storage/changes/hasher.ts')
    const pool = new WorkerPool({}, { size: 2 })
    await pool.start()
    try {
      await makeFile(file, new Set([9, 10]))
      const src = source({ hasher: poolHasher(pool) })
      const a = await src.changes(file, null)
      assert.deepEqual(blocksOf(a.ranges), [...Array(N).keys()].filter(i => i !== 9 && i !== 10))
      await writeAt(file, 9 * BS, Buffer.from([1]))
      await writeAt(file, 33 * BS, Buffer.alloc(BS))
      await truncate(file, 200 * BS)
      const b = await src.changes(file, a.token)
      assert.deepEqual(blocksOf(b.ranges), [9, 33])
      assert.equal(b.fileSize, 200 * BS)
      assert.equal(b.scannedBytes, 200 * BS)
    } finally { await pool.stop() }
  })

  it('a file of many manifest groups: a rescan finds nothing, edits are found exactly', async () => {
    const blocks = 3000 // ≈ 94 groups: more than LevelDB returns in one cursor batch
    const buf = Buffer.alloc(blocks * BS)
    for (let i = 0; i < blocks; i++) if (i % 5 !== 0) blockContent(BS, i).copy(buf, i * BS)
    await writeFile(file, buf)
    const src = source({}, { chunkBytes: 64 * BS })
    const a = await src.changes(file, null)
    assert.equal(blocksOf(a.ranges).length, blocks - blocks / 5)
    await touch(file)
    const b = await src.changes(file, a.token)
    assert.deepEqual(b.ranges, [])
    assert.equal(b.scannedBytes, blocks * BS)
    const edits = [1, 1000, 1001, 2995]
    for (const i of edits) await writeAt(file, i * BS + 9, Buffer.from([0x42]))
    await writeAt(file, 2001 * BS, Buffer.alloc(BS)) // becomes zeros
    const c = await src.changes(file, b.token)
    assert.deepEqual(blocksOf(c.ranges), [1, 1000, 1001, 2001, 2995])
    const full = await source().changes(file, null)
    assert.equal(blocksOf(full.ranges).length, blocks - blocks / 5 + 2 - 1, "blocks 1000 and 2995 were zeros, 2001 became zeros")
  })

  it('a manifest it cannot read (corrupt group, old layout) means a full rescan, never a wrong answer', async () => {
    await makeFile(file, new Set([4]))
    const src = source()
    const a = await src.changes(file, null)
    const sub = binarySublevel(db, 'manifest')
    const fm = new Manifest(sub).file(file)
    // Corrupt one group value in place (wrong length), then change a block.
    const key = fm.groupKey(1)
    const value = await sub.get(key)
    assert.ok(value !== undefined)
    await sub.put(key, value.subarray(0, 100))
    await writeAt(file, 40 * BS, Buffer.from([0x99]))
    const b = await src.changes(file, a.token)
    assert.equal(b.full, true, 'new epoch: the old token is refused')
    assert.deepEqual(blocksOf(b.ranges), [...Array(N).keys()].filter(i => i !== 4))
    const c = await src.changes(file, b.token)
    assert.deepEqual(c.ranges, [])
    assert.equal(c.full, false)
    // A v1 (per-block) manifest: cleared and rescanned the same way.
    const meta = await fm.meta()
    assert.ok(meta != null)
    await fm.putMeta({ ...meta, v: 1 })
    const seed: Range[] = []
    for await (const r of src.nonZeroRanges(file)) seed.push(r)
    assert.deepEqual(seed, [{ offset: 0, length: N * BS }], 'cannot tell which blocks are zero: all of them are reported')
    const d = await src.changes(file, c.token)
    assert.equal(d.full, true)
    assert.equal(blocksOf(d.ranges).length, N - 1)
    assert.equal((await fm.meta())?.v, FileManifest.newMeta(BS).v)
  })

  it('nonZeroRanges lists the manifest\'s non-zero blocks without reading the file', async () => {
    await makeFile(file, new Set([0, 1, 100]))
    const src = source()
    await src.changes(file, null)
    const got: Range[] = []
    for await (const r of src.nonZeroRanges(file)) got.push(r)
    assert.deepEqual(got, [{ offset: 2 * BS, length: 98 * BS }, { offset: 101 * BS, length: 155 * BS }])
  })
})
