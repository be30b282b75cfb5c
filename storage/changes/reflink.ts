/**
 * Point-in-time clones for consistent scans of live files. On file systems with FICLONE (btrfs,
 * XFS with reflink, bcachefs, ...) a clone is instant and shares blocks with its source, so
 * scanning (and sending from) the clone sees exactly one moment. Support is probed once per
 * directory: the first failure with "not supported" disables cloning there for the life of the
 * object, any other failure just falls back for that one scan.
 */
import { copyFile, readdir, stat, unlink } from 'node:fs/promises'
import { constants } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { basename, dirname, join } from 'node:path'
import type { Clock } from '../../common/clock.ts'
import type { ChangeSnapshot } from './source.ts'

export interface Cloner {
  /** Creates `dst` as a reflink clone of `src`; must fail rather than copy. */
  clone: (src: string, dst: string) => Promise<void>
}

export const ficloneCloner: Cloner = {
  clone: async (src, dst) => { await copyFile(src, dst, constants.COPYFILE_FICLONE_FORCE) }
}

const UNSUPPORTED = new Set(['ENOTSUP', 'EOPNOTSUPP', 'EXDEV', 'EINVAL', 'ENOSYS', 'ENOTTY', 'EBADF', 'ERR_FS_CP_EINVAL'])
export const CLONE_MARK = '.vmesh-clone-'
/** Clones older than this are leftovers of a crashed process and are deleted on first use. */
const STALE_MS = 3600_000

export interface ReflinkInit {
  /** Where clones go; must be on the source's file system. @default the source's directory */
  cloneDir?: (file: string) => string
}

export class ReflinkSnapshots {
  private readonly support = new Map<string, boolean>()
  private readonly cloneDir: (file: string) => string

  constructor (private readonly components: { cloner: Cloner, clock: Clock }, init: ReflinkInit = {}) {
    this.cloneDir = init.cloneDir ?? dirname
  }

  /** true/false once probed for `file`'s clone directory, undefined before. */
  supported (file: string): boolean | undefined { return this.support.get(this.cloneDir(file)) }

  /** A clone of `file`, or null when cloning is unavailable here (caller scans the live file). */
  async snapshot (file: string): Promise<ChangeSnapshot | null> {
    const dir = this.cloneDir(file)
    const known = this.support.get(dir)
    if (known === false) return null
    if (known === undefined) await this.removeStale(dir)
    const path = join(dir, `.${basename(file)}${CLONE_MARK}${randomBytes(6).toString('hex')}`)
    try {
      await this.components.cloner.clone(file, path)
    } catch (err) {
      await unlink(path).catch(() => {})
      const code = (err as { code?: unknown }).code
      if (typeof code === 'string' && UNSUPPORTED.has(code)) this.support.set(dir, false)
      return null
    }
    this.support.set(dir, true)
    let released = false
    return {
      path,
      release: async () => {
        if (released) return
        released = true
        await unlink(path).catch(() => {})
      }
    }
  }

  private async removeStale (dir: string): Promise<void> {
    const names = await readdir(dir).catch(() => [] as string[])
    const now = this.components.clock.wallNow()
    for (const name of names) {
      if (!name.startsWith('.') || !name.includes(CLONE_MARK)) continue
      const p = join(dir, name)
      const s = await stat(p).catch(() => null)
      if (s != null && now - s.ctimeMs > STALE_MS) await unlink(p).catch(() => {})
    }
  }
}
