/**
 * Core of `vmesh scan FILE --state DIR`: one hash scan of one file against a manifest kept in
 * DIR (a LevelDB), answering with the scan JSON (a CLI contract, README "Command line"). The first scan with a new state
 * directory reports every non-zero block as changed.
 */
import { mkdir } from 'node:fs/promises'
import { resolve } from 'node:path'
import { systemClock } from '../../common/clock.ts'
import type { Clock } from '../../common/clock.ts'
import { VmeshError } from '../../common/errors.ts'
import { Manifest } from '../manifest/manifest.ts'
import { binarySublevel, decodeUtf8, encodeUtf8, openBinaryLevel } from '../manifest/db.ts'
import { WorkerPool } from '../workers/pool.ts'
import { HashScanSource } from './hash-scan.ts'
import { inlineHasher, poolHasher } from './hasher.ts'
import { nodeScanIO } from './file-io.ts'
import type { ScanIO } from './file-io.ts'
import { ReflinkSnapshots, ficloneCloner } from './reflink.ts'
import type { Cloner } from './reflink.ts'
import type { RangesOf } from './source.ts'
import { DEFAULT_BLOCK_SIZE, validateBlockSize } from './range.ts'

/** Exactly the `vmesh scan --json` document. */
export interface ScanResult {
  file: string
  blockSize: number
  scannedBytes: number
  changedBlocks: number
  changedBytes: number
  consistent: boolean
  seconds: number
}

export interface ScanFileOptions {
  /** @default 65536 */
  blockSizeBytes?: number
  /** @default systemClock */
  clock?: Clock
  /**
   * Hashing threads: a running pool to borrow, null for the calling thread, or 'auto' to start a
   * pool for files of at least `autoPoolBytes` (starting threads costs ~0.25 s). @default 'auto'
   */
  pool?: WorkerPool | null | 'auto'
  /** @default 67108864 */
  autoPoolBytes?: number
  /** @default whole file (the lead wires storage/formats' dataRangesForFile) */
  rangesOf?: RangesOf
  /** Try a reflink clone for a consistent point. @default true */
  reflink?: boolean
  /** @default FICLONE via fs.copyFile */
  cloner?: Cloner
  /** @default 10000 */
  quietBudgetMs?: number
  io?: ScanIO
  signal?: AbortSignal
}

/** The state directory could not be opened (missing permissions, or another scan holds it). */
export class ScanStateError extends VmeshError {
  constructor (message: string, options?: { cause?: unknown }) { super('ERR_SCAN_STATE_UNAVAILABLE', message, options) }
}

export async function scanFile (path: string, stateDir: string, opts: ScanFileOptions = {}): Promise<ScanResult> {
  const clock = opts.clock ?? systemClock
  const io = opts.io ?? nodeScanIO
  validateBlockSize(opts.blockSizeBytes ?? DEFAULT_BLOCK_SIZE)
  const file = resolve(path)
  const t0 = clock.now()
  const st = await io.stat(file) // fails with ScanTargetError before any state is created
  let db
  try {
    await mkdir(stateDir, { recursive: true })
    db = await openBinaryLevel(stateDir)
  } catch (err) {
    throw new ScanStateError(`cannot open state directory ${stateDir}`, { cause: err })
  }
  let pool: WorkerPool | null = null
  let ownPool = false
  try {
    if (opts.pool === undefined || opts.pool === 'auto') {
      if (st.size >= (opts.autoPoolBytes ?? 64 * 1024 * 1024)) {
        pool = new WorkerPool()
        ownPool = true
        await pool.start()
      }
    } else {
      pool = opts.pool // a borrowed pool, or null: hash in this thread
    }
    const source = new HashScanSource({
      manifest: new Manifest(binarySublevel(db, 'manifest')),
      clock,
      ...(opts.io != null ? { io: opts.io } : {}), // default I/O lets pool workers read the file themselves
      hasher: pool != null ? poolHasher(pool) : inlineHasher,
      snapshots: opts.reflink === false ? null : new ReflinkSnapshots({ cloner: opts.cloner ?? ficloneCloner, clock }),
      ...(opts.rangesOf != null ? { rangesOf: opts.rangesOf } : {})
    }, {
      ...(opts.blockSizeBytes != null ? { blockSizeBytes: opts.blockSizeBytes } : {}),
      ...(opts.quietBudgetMs != null ? { quietBudgetMs: opts.quietBudgetMs } : {})
    })
    const tokens = binarySublevel(db, 'scan-tokens')
    const key = encodeUtf8(file)
    const stored = await tokens.get(key)
    const set = await source.changes(file, stored === undefined ? null : decodeUtf8(stored), opts.signal != null ? { signal: opts.signal } : {})
    await tokens.put(key, encodeUtf8(set.token))
    let changedBlocks = 0
    let changedBytes = 0
    for (const r of set.ranges) {
      changedBlocks += Math.ceil(r.length / set.blockSize)
      changedBytes += r.length
    }
    return {
      file,
      blockSize: set.blockSize,
      scannedBytes: set.scannedBytes,
      changedBlocks,
      changedBytes,
      consistent: set.consistent,
      seconds: Math.round(clock.now() - t0) / 1000
    }
  } finally {
    if (ownPool) await pool?.stop()
    await db.close()
  }
}
