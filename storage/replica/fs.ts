/**
 * The narrow file-system surface the replica store uses. Everything the store does to disk goes
 * through it, so unit tests swap in an in-memory file system that models what survives a power
 * loss (unsynced writes and directory entries may vanish) and injects ENOSPC or a simulated
 * crash at any operation.
 */
import { open as fsOpen, stat as fsStat, readdir as fsReaddir, mkdir as fsMkdir, unlink as fsUnlink, copyFile as fsCopyFile, rmdir as fsRmdir, constants, type FileHandle } from 'node:fs/promises'
import { hostOs, renameDurable, syncDir } from '../../common/platform/index.ts'

/** 'read': read-only; 'write': read-write, created if missing, never truncated; 'create': read-write, created or truncated. */
export type OpenMode = 'read' | 'write' | 'create'

export interface ReplicaFileHandle {
  /** Reads up to `length` bytes at `position`; returns bytes read (short only at end of file). */
  read: (buf: Uint8Array, offset: number, length: number, position: number) => Promise<number>
  /** Writes all `length` bytes at `position`. */
  write: (buf: Uint8Array, offset: number, length: number, position: number) => Promise<void>
  /** Writes the buffers back to back from `position` (one gathered write: no copy into one buffer). */
  writev: (bufs: readonly Uint8Array[], position: number) => Promise<void>
  truncate: (size: number) => Promise<void>
  size: () => Promise<number>
  sync: () => Promise<void>
  close: () => Promise<void>
}

export interface ReplicaFs {
  open: (path: string, mode: OpenMode) => Promise<ReplicaFileHandle>
  /** undefined when the path does not exist. */
  stat: (path: string) => Promise<{ size: number, isDirectory: boolean } | undefined>
  /** Entry names; [] when the directory does not exist. */
  readdir: (path: string) => Promise<string[]>
  /** Recursive; no error when it exists. */
  mkdir: (path: string) => Promise<void>
  rename: (from: string, to: string) => Promise<void>
  /** No error when the path does not exist. */
  unlink: (path: string) => Promise<void>
  /** Makes the directory's entries (creates, renames, unlinks) durable. */
  syncDir: (path: string) => Promise<void>
  /** Copy-on-write clone where the file system supports it, else a plain copy; fails if `to` exists. */
  copyFile: (from: string, to: string) => Promise<void>
  /** Removes an empty directory; no error when missing. */
  rmdir: (path: string) => Promise<void>
}

function isNotFound (err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === 'ENOENT'
}

class NodeFileHandle implements ReplicaFileHandle {
  constructor (private readonly fh: FileHandle) {}

  async read (buf: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    let done = 0
    // a regular file returns short reads only at EOF, but loop anyway: bounded by `length`
    while (done < length) {
      const { bytesRead } = await this.fh.read(buf, offset + done, length - done, position + done)
      if (bytesRead === 0) break
      done += bytesRead
    }
    return done
  }

  async write (buf: Uint8Array, offset: number, length: number, position: number): Promise<void> {
    let done = 0
    while (done < length) {
      const { bytesWritten } = await this.fh.write(buf, offset + done, length - done, position + done)
      if (bytesWritten <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' })
      done += bytesWritten
    }
  }

  async writev (bufs: readonly Uint8Array[], position: number): Promise<void> {
    let list = bufs.filter(b => b.byteLength > 0)
    let at = position
    // a short gathered write resumes where it stopped; each pass writes at least one byte
    while (list.length > 0) {
      const { bytesWritten } = await this.fh.writev(list as Uint8Array[], at)
      if (bytesWritten <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' })
      at += bytesWritten
      let skip = bytesWritten
      const rest: Uint8Array[] = []
      for (const b of list) {
        if (skip >= b.byteLength) { skip -= b.byteLength; continue }
        rest.push(skip > 0 ? b.subarray(skip) : b)
        skip = 0
      }
      list = rest
    }
  }

  async truncate (size: number): Promise<void> { await this.fh.truncate(size) }
  async size (): Promise<number> { return (await this.fh.stat()).size }
  async sync (): Promise<void> { await this.fh.sync() }
  async close (): Promise<void> { await this.fh.close() }
}

/** The real file system (node:fs/promises). */
export const nodeReplicaFs: ReplicaFs = {
  async open (path, mode) {
    const flags = mode === 'read'
      ? constants.O_RDONLY
      : mode === 'write'
        ? constants.O_RDWR | constants.O_CREAT
        : constants.O_RDWR | constants.O_CREAT | constants.O_TRUNC
    return new NodeFileHandle(await fsOpen(path, flags, 0o600))
  },
  async stat (path) {
    try {
      const s = await fsStat(path)
      return { size: s.size, isDirectory: s.isDirectory() }
    } catch (err) {
      if (isNotFound(err)) return undefined
      throw err
    }
  },
  async readdir (path) {
    try { return await fsReaddir(path) } catch (err) {
      if (isNotFound(err)) return []
      throw err
    }
  },
  async mkdir (path) { await fsMkdir(path, { recursive: true, mode: 0o700 }) },
  // retried on Windows while a scanner holds the target; see common/platform/fs.ts
  async rename (from, to) { await renameDurable(from, to, { os: hostOs }) },
  async unlink (path) {
    try { await fsUnlink(path) } catch (err) {
      if (!isNotFound(err)) throw err
    }
  },
  // a no-op where folders cannot be synced (Windows: NTFS journals its metadata)
  async syncDir (path) { await syncDir(path, { os: hostOs }) },
  async copyFile (from, to) {
    await fsCopyFile(from, to, constants.COPYFILE_FICLONE | constants.COPYFILE_EXCL)
  },
  async rmdir (path) {
    try { await fsRmdir(path) } catch (err) {
      if (!isNotFound(err)) throw err
    }
  }
}
