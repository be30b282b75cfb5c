/**
 * File access for scanners, behind an interface so tests can count reads and fake a file that
 * changes while it is being read. Stats are nanosecond-exact (bigint) because the "unchanged,
 * skip reading" decision rests on them.
 */
import { open, stat } from 'node:fs/promises'
import { ScanTargetError } from './errors.ts'
import type { FileStat } from '../manifest/stat.ts'

// a file's identity and its stored form live with the manifest that stores them
export { sameStat, statFromRecord, statToRecord } from '../manifest/stat.ts'
export type { FileStat, StatRecord } from '../manifest/stat.ts'

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
