/**
 * Change-scan benchmark. One run on a 2 GiB file of mixed content (random, zeros, text-like) in
 * a temp dir, with its baselines measured in the same run, page cache warm for all:
 *  - full scan (first scan into an empty manifest, and a forced rescan with nothing changed)
 *    vs `cat FILE > /dev/null`, in pairs (cat right before each scan, both on a warm cache;
 *    the cost of spawning the shell is measured and taken off cat's time, so cat is not
 *    handicapped); every pair is reported, the median pair is the headline;
 *  - 1 % of 64 KiB blocks changed (scattered, aligned): our scan + lz4/BLAKE3 encode of the
 *    changed blocks vs `rsync --inplace --no-whole-file new old` bringing a copy up to date;
 *  - bytes encoded vs bytes changed, compression ratio and MB/s, peak RSS;
 *  - hash speeds per core (BLAKE3 direct/package, SHA-256) to back the choice of BLAKE3;
 *  - sparse files: a 4 GiB hole read whole (bounded memory; cat of a cold twin as baseline),
 *    and a 1 TiB file whose format says only 5 MiB are allocated (what a VHDX parser reports).
 * Usage: npm run bench -- scan [--size-mib 2048] [--dir DIR] [--changed-pct 1] [--block-kib 64]
 *        [--pairs 5] [--repeats 3] [--sparse-gib 4] [--no-sparse]
 *   --pairs: full-scan pairs (first and rescan each); --repeats: incremental cycles.
 * Standalone: node --import tsx bench/scan.ts [same args]
 */
import { spawn } from 'node:child_process'
import { createHash, randomFillSync } from 'node:crypto'
import { copyFile, mkdtemp, open, rm, truncate, utimes, writeFile } from 'node:fs/promises'
import { availableParallelism, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { Level } from 'level'
import { systemClock } from '../common/clock.ts'
import { SeededRandom } from '../common/random.ts'
import { HashScanSource } from '../storage/changes/hash-scan.ts'
import { poolHasher } from '../storage/changes/hasher.ts'
import type { Range } from '../storage/changes/range.ts'
import { Manifest } from '../storage/manifest/manifest.ts'
import { binarySublevel, openBinaryLevel } from '../storage/manifest/db.ts'
import { WorkerPool } from '../storage/workers/pool.ts'
import type { EncodeBlocksResult } from '../storage/workers/tasks.ts'
import { blake3Impl, hash128, hash128Package } from '../storage/workers/block-hash.ts'

const MiB = 1024 * 1024
const GiB = 1024 * MiB

interface Args { sizeMiB: number, dir: string, changedPct: number, blockKiB: number, pairs: number, repeats: number, sparseGiB: number }

function parseArgs (argv: string[]): Args {
  const a: Args = { sizeMiB: 2048, dir: tmpdir(), changedPct: 1, blockKiB: 64, pairs: 5, repeats: 3, sparseGiB: 4 }
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]
    const v = argv[i + 1]
    if (k === '--no-sparse') { a.sparseGiB = 0; continue }
    if (v === undefined) break
    if (k === '--size-mib') a.sizeMiB = Number(v)
    else if (k === '--dir') a.dir = v
    else if (k === '--changed-pct') a.changedPct = Number(v)
    else if (k === '--block-kib') a.blockKiB = Number(v)
    else if (k === '--repeats') a.repeats = Math.max(1, Number(v))
    else if (k === '--pairs') a.pairs = Math.max(1, Number(v))
    else if (k === '--sparse-gib') a.sparseGiB = Number(v)
    else continue
    i++
  }
  return a
}

const now = (): number => performance.now()
/** The element whose `key` is the median. */
function medianBy<T> (xs: T[], key: (x: T) => number): T {
  const s = [...xs].sort((x, y) => key(x) - key(y))
  return s[Math.floor(s.length / 2)] as T
}
const round = (x: number, d = 3): number => Math.round(x * 10 ** d) / 10 ** d
const rssMiB = (): number => round(process.resourceUsage().maxRSS / 1024, 1)

async function timeCommand (cmd: string, args: string[]): Promise<{ seconds: number, code: number | null }> {
  const t = now()
  const code = await new Promise<number | null>((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] })
    p.on('error', reject)
    p.on('exit', resolve)
  })
  return { seconds: (now() - t) / 1000, code }
}

async function hasCommand (cmd: string): Promise<boolean> {
  try { return (await timeCommand(cmd, ['--version'])).code === 0 } catch { return false }
}

const catSeconds = async (file: string): Promise<number> => (await timeCommand('sh', ['-c', 'cat "$1" > /dev/null', 'sh', file])).seconds

async function syncFile (path: string): Promise<void> {
  const fh = await open(path, 'r+')
  try { await fh.sync() } finally { await fh.close() }
}

/** What spawning `sh -c cat` costs by itself (cat of an empty file, best of 5). */
async function spawnOverheadSeconds (): Promise<number> {
  let best = Infinity
  for (let i = 0; i < 5; i++) best = Math.min(best, await catSeconds('/dev/null'))
  return best
}

/** Text-like, lz4-compressible filler (words from a small vocabulary, seeded). */
function textFiller (bytes: number, rng: SeededRandom): Buffer {
  const words = ['replica', 'block', 'the', 'vm', 'disk', 'generation', 'of', 'and', 'lease', 'node', 'a', 'write',
    'journal', 'to', 'in', 'mesh', 'failover', 'is', 'host', 'sector', '2024-11-25T14:31:07Z', 'INFO', 'ERROR', 'GET /api/v1']
    .map(w => Buffer.from(w))
  const out = Buffer.alloc(bytes)
  let n = 0
  while (n < bytes) {
    n += (words[rng.int(words.length)] as Buffer).copy(out, n)
    if (n < bytes) out[n++] = rng.int(12) === 0 ? 0x0a : 0x20
  }
  return out
}

/** Samples RSS while `fn` runs; returns its result and the growth over the starting RSS. */
async function withRss<T> (fn: () => Promise<T>): Promise<{ value: T, rssGrowthMiB: number }> {
  const rss0 = process.memoryUsage().rss
  let peak = rss0
  const timer = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss) }, 20)
  try {
    const value = await fn()
    peak = Math.max(peak, process.memoryUsage().rss)
    return { value, rssGrowthMiB: round((peak - rss0) / MiB, 1) }
  } finally { clearInterval(timer) }
}

/** Writes the mixed file: per 1 MiB segment random, zeros or text, in a seeded pattern. */
async function generate (file: string, size: number, rng: SeededRandom): Promise<{ random: number, zero: number, text: number }> {
  const text = textFiller(8 * MiB, rng)
  const fh = await open(file, 'w')
  const counts = { random: 0, zero: 0, text: 0 }
  try {
    const chunk = Buffer.alloc(8 * MiB)
    for (let off = 0; off < size; off += chunk.length) {
      const len = Math.min(chunk.length, size - off)
      for (let s = 0; s < len; s += MiB) {
        const seg = chunk.subarray(s, Math.min(s + MiB, len))
        const kind = rng.int(3)
        if (kind === 0) { randomFillSync(seg); counts.random += seg.length } else if (kind === 1) { seg.fill(0); counts.zero += seg.length } else {
          const at = rng.int(text.length - MiB)
          text.copy(seg, 0, at, at + seg.length)
          counts.text += seg.length
        }
      }
      await fh.write(chunk, 0, len, off)
    }
  } finally { await fh.close() }
  return counts
}

/** Overwrites `count` distinct aligned blocks with new content (half random, half text). */
async function changeBlocks (file: string, size: number, bs: number, count: number, rng: SeededRandom): Promise<number[]> {
  const nBlocks = Math.floor(size / bs)
  const picked = new Set<number>()
  for (let guard = 0; picked.size < count && guard < count * 100; guard++) picked.add(rng.int(nBlocks))
  const blocks = [...picked].sort((a, b) => a - b)
  const text = textFiller(4 * MiB, rng)
  const fh = await open(file, 'r+')
  try {
    const buf = Buffer.alloc(bs)
    for (const [i, b] of blocks.entries()) {
      if (i % 2 === 0) randomFillSync(buf)
      else { const at = rng.int(text.length - bs); text.copy(buf, 0, at, at + bs); buf.writeUInt32LE(b, 0) }
      await fh.write(buf, 0, bs, b * bs)
    }
  } finally { await fh.close() }
  return blocks
}

/** Reads the changed ranges in ≤ 8 MiB batches and encodes them in the pool (lz4 + BLAKE3). */
async function encodeRanges (file: string, ranges: Range[], bs: number, pool: WorkerPool): Promise<{ raw: number, encoded: number, encoder: string }> {
  const fh = await open(file, 'r')
  let raw = 0
  let encoded = 0
  let encoder = ''
  const inflight: Array<Promise<EncodeBlocksResult>> = []
  const settle = async (p: Promise<EncodeBlocksResult>): Promise<void> => {
    const r = await p
    encoder = r.encoder
    for (const e of r.entries) { raw += e.length; encoded += e.payloadLength }
  }
  try {
    // Split ranges into block lists of at most 8 MiB per task.
    let batch: Range[] = []
    let batchBytes = 0
    const flush = async (): Promise<void> => {
      if (batch.length === 0) return
      const buf = new ArrayBuffer(batchBytes)
      const u8 = new Uint8Array(buf)
      const blocks: Array<{ offset: number, length: number }> = []
      let at = 0
      for (const r of batch) {
        await fh.read(u8, at, r.length, r.offset)
        for (let o = 0; o < r.length; o += bs) blocks.push({ offset: at + o, length: Math.min(bs, r.length - o) })
        at += r.length
      }
      if (inflight.length >= 4) await settle(inflight.shift() as Promise<EncodeBlocksResult>)
      inflight.push(pool.run<EncodeBlocksResult>('encodeBlocks', { buf, blocks }, { transfer: [buf] }))
      batch = []
      batchBytes = 0
    }
    for (const r of ranges) {
      for (let o = r.offset; o < r.offset + r.length; o += 8 * MiB) {
        const len = Math.min(8 * MiB, r.offset + r.length - o)
        if (batchBytes + len > 8 * MiB) await flush()
        batch.push({ offset: o, length: len })
        batchBytes += len
      }
    }
    await flush()
    while (inflight.length > 0) await settle(inflight.shift() as Promise<EncodeBlocksResult>)
  } finally { await fh.close() }
  return { raw, encoded, encoder }
}

function hashSpeeds (): Record<string, number> {
  const buf = Buffer.alloc(64 * MiB)
  randomFillSync(buf)
  const gbps = (bs: number, fn: (b: Buffer) => unknown): number => {
    let best = Infinity
    for (let r = 0; r < 5; r++) {
      const t = now()
      for (let o = 0; o < buf.length; o += bs) fn(buf.subarray(o, o + bs))
      best = Math.min(best, now() - t)
    }
    return round(buf.length / (best / 1000) / 1e9, 2)
  }
  return {
    blake3Direct64KiBGBps: gbps(64 * 1024, b => hash128(b)),
    blake3Package64KiBGBps: gbps(64 * 1024, b => hash128Package(b)),
    blake3Direct4KiBGBps: gbps(4096, b => hash128(b)),
    blake3Direct1MiBGBps: gbps(MiB, b => hash128(b)),
    sha256_64KiBGBps: gbps(64 * 1024, b => createHash('sha256').update(b).digest())
  }
}

/**
 * Moves the file's stat without changing content, then lets the scanner's racy-timestamp margin
 * (50 ms) pass, as the tracker's debounce would: otherwise every timed scan starts with a wait.
 */
async function touch (file: string): Promise<void> {
  const t = new Date(Date.now() - 3600_000)
  await utimes(file, t, t)
  await new Promise(resolve => setTimeout(resolve, 100))
}

export async function run (argv: string[]): Promise<object> {
  const a = parseArgs(argv)
  const size = a.sizeMiB * MiB
  const bs = a.blockKiB * 1024
  const rng = new SeededRandom(20241125)
  const dir = await mkdtemp(join(a.dir, 'vmesh-bench-scan-'))
  const file = join(dir, 'disk.raw')
  const old = join(dir, 'old.raw')
  const pool = new WorkerPool()
  let db: Level<Uint8Array, Uint8Array> | null = null
  const notes: string[] = []
  const loadAtStart = loadavg().map(x => round(x, 2))
  try {
    const content = await generate(file, size, rng)
    await copyFile(file, old)
    // Flush the 2 × 2 GiB just written: otherwise the kernel writes them back while the first
    // pairs run, taking CPU from whichever side it happens to overlap.
    const tSync = now()
    await syncFile(file)
    await syncFile(old)
    const syncS = (now() - tSync) / 1000

    // Warm the page cache for both files.
    await catSeconds(file)
    await catSeconds(old)

    const poolStart = now()
    await pool.start()
    const poolStartS = (now() - poolStart) / 1000
    const spawnS = await spawnOverheadSeconds()
    const catOnly = async (f: string): Promise<number> => Math.max(1e-6, await catSeconds(f) - spawnS)

    // Full scans, each paired with a cat run just before it: the machine is shared, so ratios
    // are taken per pair and the median pair reported.
    const firstPairs: Array<{ cat: number, scan: number, rss: number }> = []
    const rescanPairs: Array<{ cat: number, scan: number }> = []
    let source: HashScanSource | null = null
    let token = ''
    for (let i = 0; i < a.pairs; i++) {
      await db?.close()
      await rm(join(dir, 'state'), { recursive: true, force: true })
      db = await openBinaryLevel(join(dir, 'state'))
      const src = new HashScanSource({
        manifest: new Manifest(binarySublevel(db, 'manifest')), clock: systemClock, hasher: poolHasher(pool), snapshots: null
      }, { blockSizeBytes: bs })
      await touch(file)
      const cat = await catOnly(file)
      const t = now()
      const run = await withRss(async () => await src.changes(file, null))
      firstPairs.push({ cat, scan: (now() - t) / 1000, rss: run.rssGrowthMiB })
      const found = run.value.ranges.reduce((n, r) => n + r.length, 0)
      if (found !== content.random + content.text) notes.push(`first scan ${i}: reported ${found} non-zero bytes, the file has ${content.random + content.text}`)
      source = src
      token = run.value.token
    }
    const src = source as HashScanSource
    for (let i = 0; i < a.pairs; i++) {
      await touch(file) // stat moves, content does not: a full read + compare, no writes
      const cat = await catOnly(file)
      const t = now()
      const r = await src.changes(file, token)
      rescanPairs.push({ cat, scan: (now() - t) / 1000 })
      token = r.token
      if (r.ranges.length !== 0) notes.push('rescan of an unchanged file reported changes')
    }

    // Incremental cycles: 1 % of the blocks change; our scan + encode, then rsync brings the old
    // copy up to date (so the next cycle starts equal again).
    const nChanged = Math.max(1, Math.round((size / bs) * a.changedPct / 100))
    const haveRsync = await hasCommand('rsync')
    if (!haveRsync) notes.push('rsync missing: baseline skipped')
    const cycles: Array<{ scan: number, scanEncode: number, rsync: number | null, found: number, changed: number, raw: number, encoded: number, rss: number, encoder: string }> = []
    for (let i = 0; i < a.repeats; i++) {
      const changed = await changeBlocks(file, size, bs, nChanged, rng)
      await touch(file)
      await catSeconds(file)
      const t = now()
      let scanS = 0
      const run = await withRss(async () => {
        const d = await src.changes(file, token)
        scanS = (now() - t) / 1000
        return { d, enc: await encodeRanges(file, d.ranges, bs, pool) }
      })
      const scanEncode = (now() - t) / 1000
      token = run.value.d.token
      let found = 0
      for (const r of run.value.d.ranges) found += Math.ceil(r.length / bs)
      if (found !== changed.length) notes.push(`cycle ${i}: scan found ${found} blocks, ${changed.length} were changed`)
      let rsyncS: number | null = null
      if (haveRsync) {
        await catSeconds(old)
        const r = await timeCommand('rsync', ['--inplace', '--no-whole-file', file, old])
        const same = await timeCommand('cmp', ['-s', file, old])
        if (r.code !== 0 || same.code !== 0) notes.push(`cycle ${i}: rsync did not bring the copy up to date`)
        rsyncS = r.seconds
      }
      cycles.push({ scan: scanS, scanEncode, rsync: rsyncS, found, changed: changed.length, raw: run.value.enc.raw, encoded: run.value.enc.encoded, rss: run.rssGrowthMiB, encoder: run.value.enc.encoder })
    }
    const scanPeakRss = rssMiB() // generation, scans and the incremental encodes so far

    // Encode throughput on a bigger slice of the mixed file (256 MiB), for a steadier figure.
    const sliceRanges: Range[] = [{ offset: 0, length: Math.min(size, 256 * MiB) }]
    const tBulk = now()
    const bulk = await encodeRanges(file, sliceRanges, bs, pool)
    const bulkS = (now() - tBulk) / 1000

    const sparse = a.sparseGiB > 0 ? await sparseFigures(dir, a.sparseGiB, bs, pool) : null
    const hashes = hashSpeeds()

    const firstRatio = medianBy(firstPairs, p => p.cat / p.scan)
    const rescanRatio = medianBy(rescanPairs, p => p.cat / p.scan)
    const inc = medianBy(cycles, c => c.rsync != null ? c.scanEncode / c.rsync : c.scanEncode)
    const changedBytes = inc.changed * bs
    return {
      machine: { cores: availableParallelism(), loadAverageAtStart: loadAtStart, loadAverage: loadavg().map(x => round(x, 2)), blake3: blake3Impl, poolThreads: pool.size, poolStartSeconds: round(poolStartS) },
      file: { bytes: size, blockSize: bs, content: { randomBytes: content.random, zeroBytes: content.zero, textBytes: content.text } },
      hashPerCore: hashes,
      fullScan: {
        pairs: a.pairs,
        catSpawnOverheadSeconds: round(spawnS, 4),
        generatedFilesSyncSeconds: round(syncS),
        first: { catSeconds: round(firstRatio.cat), scanSeconds: round(firstRatio.scan), scanMBps: round(size / firstRatio.scan / 1e6, 0), catMBps: round(size / firstRatio.cat / 1e6, 0), vsCat: round(firstRatio.cat / firstRatio.scan, 2), allVsCat: firstPairs.map(p => round(p.cat / p.scan, 2)), allPairs: firstPairs.map(p => [round(p.cat), round(p.scan)]) },
        rescan: { catSeconds: round(rescanRatio.cat), scanSeconds: round(rescanRatio.scan), scanMBps: round(size / rescanRatio.scan / 1e6, 0), catMBps: round(size / rescanRatio.cat / 1e6, 0), vsCat: round(rescanRatio.cat / rescanRatio.scan, 2), allVsCat: rescanPairs.map(p => round(p.cat / p.scan, 2)), allPairs: rescanPairs.map(p => [round(p.cat), round(p.scan)]) },
        goal: 'full-scan throughput >= 0.60 x cat (first = into an empty manifest; rescan = stat moved, content not)'
      },
      incremental: {
        cycles: a.repeats,
        changedBlocks: inc.changed, changedBytes, foundBlocks: inc.found,
        scanSeconds: round(inc.scan), scanPlusEncodeSeconds: round(inc.scanEncode),
        rsyncSeconds: inc.rsync != null ? round(inc.rsync) : null,
        vsRsync: inc.rsync != null ? round(inc.scanEncode / inc.rsync, 3) : null,
        allVsRsync: cycles.map(c => c.rsync != null ? round(c.scanEncode / c.rsync, 3) : null),
        goal: 'scan+encode <= 0.35 x rsync --inplace --no-whole-file'
      },
      encoding: {
        encoder: inc.encoder,
        rawBytesEncoded: inc.raw, payloadBytes: inc.encoded,
        encodedVsChanged: round(inc.raw / changedBytes, 3),
        changedBlocksCompressionRatio: round(inc.raw / Math.max(1, inc.encoded), 3),
        bulk256MiB: { seconds: round(bulkS), MBps: round(bulk.raw / bulkS / 1e6, 0), compressionRatio: round(bulk.raw / Math.max(1, bulk.encoded), 3) },
        goal: 'bytes encoded <= 1.1 x bytes changed (before compression)'
      },
      sparse,
      memory: {
        firstScanRssGrowthMiB: Math.max(...firstPairs.map(p => p.rss)),
        incrementalRssGrowthMiB: Math.max(...cycles.map(c => c.rss)),
        sparseScanRssGrowthMiB: (sparse as { rawHoleRead?: { rssGrowthMiB: number } } | null)?.rawHoleRead?.rssGrowthMiB ?? null,
        peakRssMiBAfterIncremental: scanPeakRss,
        peakRssMiBAtEnd: rssMiB(),
        note: 'peak RSS (process.resourceUsage().maxRSS) includes Node+tsx, two worker threads and the benchmark\'s own generators'
      },
      notes
    }
  } finally {
    await db?.close()
    await pool.stop()
    await rm(dir, { recursive: true, force: true })
  }
}

/**
 * A raw sparse file read whole (holes read as zeros; cat of a twin file, equally cold, is the
 * baseline), and a 1 TiB file of which the format says only 5 MiB are allocated.
 */
async function sparseFigures (dir: string, gib: number, bs: number, pool: WorkerPool): Promise<object> {
  const out: Record<string, unknown> = {}
  {
    const file = join(dir, 'sparse.raw')
    const twin = join(dir, 'sparse-twin.raw')
    for (const f of [file, twin]) {
      await writeFile(f, '')
      await truncate(f, gib * GiB)
      const fh = await open(f, 'r+')
      await fh.write(Buffer.alloc(4 * MiB, 9), 0, 4 * MiB, Math.floor(gib / 2) * GiB)
      await fh.close()
    }
    const catS = await catSeconds(twin)
    await rm(twin, { force: true })
    const db = await openBinaryLevel(join(dir, 'sparse-state'))
    try {
      const src = new HashScanSource({ manifest: new Manifest(binarySublevel(db, 'm')), clock: systemClock, hasher: poolHasher(pool), snapshots: null }, { blockSizeBytes: bs })
      const rss0 = process.memoryUsage().rss
      let peak = rss0
      const timer = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss) }, 50)
      const t = now()
      const r = await src.changes(file, null)
      const s = (now() - t) / 1000
      clearInterval(timer)
      out.rawHoleRead = {
        bytes: gib * GiB, seconds: round(s), MBps: round(gib * GiB / s / 1e6, 0), catColdSeconds: round(catS), vsCat: round(catS / s, 2),
        changedBytes: r.ranges.reduce((n, x) => n + x.length, 0),
        rssGrowthMiB: round((peak - rss0) / MiB, 1), projected1TiBSeconds: round(s * 1024 / gib, 0)
      }
    } finally { await db.close(); await rm(file, { force: true }) }
  }
  {
    const file = join(dir, 'tib.vhdx-like')
    await writeFile(file, '')
    await truncate(file, 1024 * GiB)
    const at = 300 * GiB
    const fh = await open(file, 'r+')
    await fh.write(Buffer.alloc(4 * MiB, 5), 0, 4 * MiB, at)
    await fh.close()
    const db = await openBinaryLevel(join(dir, 'tib-state'))
    try {
      const src = new HashScanSource({
        manifest: new Manifest(binarySublevel(db, 'm')), clock: systemClock, hasher: poolHasher(pool), snapshots: null,
        rangesOf: async () => [{ offset: 0, length: MiB }, { offset: at, length: 4 * MiB }] // as a VHDX BAT would say
      }, { blockSizeBytes: bs })
      const t = now()
      const r = await src.changes(file, null)
      const s = (now() - t) / 1000
      out.tibAllocatedOnly = { fileBytes: 1024 * GiB, scannedBytes: r.scannedBytes, seconds: round(s), changedBytes: r.ranges.reduce((n, x) => n + x.length, 0) }
    } finally { await db.close(); await rm(file, { force: true }) }
  }
  return out
}

if (process.argv[1] != null && import.meta.url === pathToFileURL(process.argv[1]).href) {
  run(process.argv.slice(2)).then(
    (r) => { process.stdout.write(JSON.stringify(r, null, 2) + '\n') },
    (err: unknown) => { process.stderr.write(`bench scan failed: ${(err as Error).stack ?? String(err)}\n`); process.exitCode = 1 }
  )
}
