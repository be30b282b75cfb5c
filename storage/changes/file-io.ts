/**
 * File access for scanners, behind an interface so tests can count reads and fake a file that
 * changes while it is being read. Stats are nanosecond-exact (bigint) because the "unchanged,
 * skip reading" decision rests on them.
 */
import { open, stat } from 'node:fs/promises'
import { ScanTargetError } from './errors.ts'

export interface FileStat {
  size: number
  mtimeNs: bigint
  ctimeNs: bigint
  ino: bigint
  dev: bigint
}

export interface ReadHandle {
  /** Reads into buf[offset, offset+length) from file position `position`; returns bytes read. */
  read: (buf: Uint8Array, offset: number, length: number, position: number) => Promise<number>
  close: () => Promise<void>
}

export interface ScanIO {
  stat: (path: string) => Promise<FileStat>
  open: (path: string) => Promise<ReadHandle>
}

export const nodeScanIO: ScanIO = {
  async stat (path) {
    let s
    try {
      s = await stat(path, { bigint: true })
    } catch (err) {
      throw new ScanTargetError(`cannot stat ${path}`, { cause: err })
    }
    if (!s.isFile()) throw new ScanTargetError(`${path} is not a regular file`)
    return { size: Number(s.size), mtimeNs: s.mtimeNs, ctimeNs: s.ctimeNs, ino: s.ino, dev: s.dev }
  },
  async open (path) {
    const fh = await open(path, 'r').catch((err: unknown) => { throw new ScanTargetError(`cannot open ${path}`, { cause: err }) })
    return {
      read: async (buf, offset, length, position) => (await fh.read(buf, offset, length, position)).bytesRead,
      close: async () => { await fh.close() }
    }
  }
}

/** True when nothing a write would move differs between the two stats. */
export function sameStat (a: FileStat, b: FileStat): boolean {
  return a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs && a.ino === b.ino && a.dev === b.dev
}

/** Serialisable form of a stat (bigints as decimal strings). */
export interface StatRecord { size: number, mtimeNs: string, ctimeNs: string, ino: string, dev: string }

export function statToRecord (s: FileStat): StatRecord {
  return { size: s.size, mtimeNs: s.mtimeNs.toString(), ctimeNs: s.ctimeNs.toString(), ino: s.ino.toString(), dev: s.dev.toString() }
}

export function statFromRecord (r: StatRecord): FileStat {
  return { size: r.size, mtimeNs: BigInt(r.mtimeNs), ctimeNs: BigInt(r.ctimeNs), ino: BigInt(r.ino), dev: BigInt(r.dev) }
}
