/** Shared fixtures for change-tracking tests: temp dirs, a binary LevelDB, counting file I/O. */
import { mkdtemp, open, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Level } from 'level'
import { ManualClock } from '../../../common/clock.ts'
import { openBinaryLevel } from '../../../storage/manifest/db.ts'
import { nodeScanIO } from '../../../storage/changes/file-io.ts'
import type { ScanIO } from '../../../storage/changes/file-io.ts'

export const KiB = 1024
export const MiB = 1024 * 1024

export interface TempDir { path: string, cleanup: () => Promise<void> }

export async function tempDir (prefix = 'vmesh-changes-'): Promise<TempDir> {
  const path = await mkdtemp(join(tmpdir(), prefix))
  return { path, cleanup: async () => { await rm(path, { recursive: true, force: true }) } }
}

export async function tempDb (dir: string, name = 'db'): Promise<Level<Uint8Array, Uint8Array>> {
  return await openBinaryLevel(join(dir, name))
}

/** Deterministic non-zero content for block `i` with a `salt`. */
export function blockContent (size: number, i: number, salt = 0): Buffer {
  const b = Buffer.alloc(size)
  let x = (i * 2654435761 + salt * 40503 + 1) >>> 0
  for (let o = 0; o + 4 <= size; o += 4) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0
    b.writeUInt32LE(x, o)
  }
  b[0] = 1 // never all-zero
  return b
}

/** Writes `data` at `offset` in place. */
export async function writeAt (path: string, offset: number, data: Uint8Array): Promise<void> {
  const fh = await open(path, 'r+')
  try { await fh.write(data, 0, data.length, offset) } finally { await fh.close() }
}

/**
 * Virtual time whose wall clock runs an hour ahead of the real one, so files written by the
 * test are never "racy" (modified within the scanner's timestamp margin).
 */
export function aheadClock (): ManualClock {
  return new ManualClock(0, Date.now() + 3600_000)
}

/** nodeScanIO that counts reads and bytes read, with an optional hook before each stat. */
export function countingIO (): ScanIO & { reads: number, bytes: number, stats: number } {
  const io = {
    reads: 0,
    bytes: 0,
    stats: 0,
    stat: async (p: string) => { io.stats++; return await nodeScanIO.stat(p) },
    open: async (p: string) => {
      const h = await nodeScanIO.open(p)
      return {
        read: async (buf: Uint8Array, off: number, len: number, pos: number) => {
          io.reads++
          const n = await h.read(buf, off, len, pos)
          io.bytes += n
          return n
        },
        close: h.close
      }
    }
  }
  return io
}
