/**
 * An in-memory ReplicaFs that models what survives a power cut.
 *
 * Every file keeps its durable bytes (as of its last fsync) and the operations since; every
 * directory keeps its durable entries (as of its last directory fsync) and the entry changes
 * since. crash() freezes the file system (every call, also through old handles, throws
 * SimulatedCrash); reboot() then keeps, per file, an arbitrary subset of the unsynced writes
 * (page by page) and truncates, and per directory an arbitrary prefix of the unsynced entry
 * changes — the orderings a journaling file system may really leave — and thaws it.
 *
 * Simplifications: mkdir is durable at once; rename is atomic within a directory.
 * `armCrash(n)` crashes at the n-th mutating operation (before performing it); `capacity`
 * makes writes fail with ENOSPC; `onOp` sees every call first (and may throw).
 */
import { posix } from 'node:path'
import type { ReplicaFs, ReplicaFileHandle, OpenMode } from '../../../storage/replica/fs.ts'
import type { Random } from '../../../common/random.ts'

export class SimulatedCrash extends Error {
  constructor () { super('simulated crash'); this.name = 'SimulatedCrash' }
}

type FileOp = { kind: 'write', pos: number, bytes: Buffer } | { kind: 'truncate', size: number }
interface Inode { kind: 'file', data: Buffer, durable: Buffer, pending: FileOp[] }
type DirOp = { kind: 'link', name: string, node: Inode } | { kind: 'unlink', name: string } | { kind: 'rename', from: string, to: string, node: Inode }
interface Dir { kind: 'dir', entries: Map<string, Inode | Dir>, durable: Map<string, Inode | Dir>, pending: DirOp[] }

const PAGE = 4096

function errno (code: string, path: string): Error {
  return Object.assign(new Error(`${code}: ${path}`), { code })
}

function newDir (): Dir { return { kind: 'dir', entries: new Map(), durable: new Map(), pending: [] } }

function resize (buf: Buffer, size: number): Buffer {
  if (size === buf.length) return buf
  if (size < buf.length) return Buffer.from(buf.subarray(0, size))
  const out = Buffer.alloc(size)
  buf.copy(out)
  return out
}

function applyWrite (buf: Buffer, pos: number, bytes: Buffer): Buffer {
  const out = pos + bytes.length > buf.length ? resize(buf, pos + bytes.length) : buf
  bytes.copy(out, pos)
  return out
}

export type RebootMode = 'random' | 'keep-all' | 'drop-all'

export class MemFs implements ReplicaFs {
  private readonly root: Dir = newDir()
  private dead = false
  private epoch = 0
  /** mutating operations performed so far */
  mutations = 0
  private crashAt: number | undefined
  /** total bytes all files may hold; writes beyond fail with ENOSPC */
  capacity = Number.POSITIVE_INFINITY
  /** sees every call first; may throw */
  onOp: ((op: string, path: string) => void) | undefined
  /** awaited before open, read, write and a file's sync: lets a test slow one party down */
  delay: ((op: string, path: string) => Promise<void>) | undefined

  // ---- control ---------------------------------------------------------------------------

  /** Crash just before the n-th mutating operation from now (1 = the next one). */
  armCrash (n: number): void { this.crashAt = this.mutations + n }
  disarm (): void { this.crashAt = undefined }
  get crashed (): boolean { return this.dead }

  crash (): void { this.dead = true; this.crashAt = undefined }

  /** Restarts after a crash, keeping what a real disk might have kept. */
  reboot (rng: Random | undefined, mode: RebootMode = 'random'): void {
    const keep = (): boolean => mode === 'keep-all' ? true : mode === 'drop-all' ? false : (rng as Random).next() < 0.5
    const inodes = new Set<Inode>()
    const walk = (d: Dir): void => {
      const entries = new Map(d.durable)
      const n = mode === 'keep-all' ? d.pending.length : mode === 'drop-all' ? 0 : (rng as Random).int(d.pending.length + 1)
      for (const op of d.pending.slice(0, n)) {
        if (op.kind === 'link') entries.set(op.name, op.node)
        else if (op.kind === 'unlink') entries.delete(op.name)
        else { entries.delete(op.from); entries.set(op.to, op.node) }
      }
      // directories are durable at creation: keep every one that exists now
      for (const [name, node] of d.entries) if (node.kind === 'dir') entries.set(name, node)
      d.entries = entries
      d.durable = new Map(entries)
      d.pending = []
      for (const node of entries.values()) {
        if (node.kind === 'dir') walk(node)
        else inodes.add(node)
      }
    }
    walk(this.root)
    for (const ino of inodes) {
      let data: Buffer = Buffer.from(ino.durable)
      for (const op of ino.pending) {
        if (op.kind === 'truncate') { if (keep()) data = resize(data, op.size); continue }
        // page by page: a torn write keeps some pages and loses others
        for (let at = 0; at < op.bytes.length;) {
          const pageEnd = Math.min(op.bytes.length, (Math.floor((op.pos + at) / PAGE) + 1) * PAGE - op.pos)
          if (keep()) data = applyWrite(data, op.pos + at, op.bytes.subarray(at, pageEnd))
          at = pageEnd
        }
      }
      ino.data = data
      ino.durable = Buffer.from(data)
      ino.pending = []
    }
    this.dead = false
    this.crashAt = undefined
    this.epoch++
  }

  // ---- inspection ------------------------------------------------------------------------

  /** Current bytes of a file, or undefined. */
  peek (path: string): Buffer | undefined {
    const n = this.lookup(path)
    return n?.kind === 'file' ? Buffer.from(n.data) : undefined
  }

  list (path: string): string[] {
    const n = this.lookup(path)
    return n?.kind === 'dir' ? [...n.entries.keys()].sort() : []
  }

  /** Overwrites bytes of a file, durably (to simulate bit rot). */
  corrupt (path: string, pos: number, bytes: Buffer): void {
    const n = this.lookup(path)
    if (n?.kind !== 'file') throw new Error(`no file ${path}`)
    n.data = applyWrite(n.data, pos, bytes)
    n.durable = applyWrite(n.durable, pos, bytes)
  }

  usedBytes (): number {
    let n = 0
    const walk = (d: Dir): void => {
      for (const node of d.entries.values()) {
        if (node.kind === 'dir') walk(node)
        else n += node.data.length
      }
    }
    walk(this.root)
    return n
  }

  // ---- internals -------------------------------------------------------------------------

  private lookup (path: string): Inode | Dir | undefined {
    const parts = posix.resolve(path).split('/').filter(p => p.length > 0)
    let node: Inode | Dir = this.root
    for (const p of parts) {
      if (node.kind !== 'dir') return undefined
      const next: Inode | Dir | undefined = node.entries.get(p)
      if (next === undefined) return undefined
      node = next
    }
    return node
  }

  private parent (path: string): { dir: Dir, name: string } {
    const abs = posix.resolve(path)
    const d = this.lookup(posix.dirname(abs))
    if (d === undefined || d.kind !== 'dir') throw errno('ENOENT', path)
    return { dir: d, name: posix.basename(abs) }
  }

  private enter (op: string, path: string, mutating: boolean): void {
    if (this.dead) throw new SimulatedCrash()
    this.onOp?.(op, path)
    if (mutating) {
      if (this.crashAt !== undefined && this.mutations + 1 >= this.crashAt) { this.crash(); throw new SimulatedCrash() }
      this.mutations++
    }
  }

  private reserve (extra: number, path: string): void {
    if (extra > 0 && this.usedBytes() + extra > this.capacity) throw errno('ENOSPC', path)
  }

  // ---- ReplicaFs -------------------------------------------------------------------------

  async open (path: string, mode: OpenMode): Promise<ReplicaFileHandle> {
    await this.delay?.('open', path)
    this.enter('open', path, mode !== 'read')
    let node = this.lookup(path)
    if (node?.kind === 'dir') throw errno('EISDIR', path)
    if (node === undefined) {
      if (mode === 'read') throw errno('ENOENT', path)
      const { dir, name } = this.parent(path)
      node = { kind: 'file', data: Buffer.alloc(0), durable: Buffer.alloc(0), pending: [] }
      dir.entries.set(name, node)
      dir.pending.push({ kind: 'link', name, node })
    } else if (mode === 'create' && node.data.length > 0) {
      node.data = Buffer.alloc(0)
      node.pending.push({ kind: 'truncate', size: 0 })
    }
    return this.handle(node, path)
  }

  private handle (ino: Inode, path: string): ReplicaFileHandle {
    const epoch = this.epoch
    const check = (op: string, mutating: boolean): void => {
      if (this.epoch !== epoch) throw new SimulatedCrash()
      this.enter(op, path, mutating)
    }
    return {
      read: async (buf, offset, length, position) => {
        await this.delay?.('read', path)
        check('read', false)
        const n = Math.max(0, Math.min(length, ino.data.length - position))
        if (n > 0) ino.data.copy(buf, offset, position, position + n)
        return n
      },
      write: async (buf, offset, length, position) => {
        await this.delay?.('write', path)
        check('write', true)
        this.reserve(position + length - ino.data.length, path)
        const bytes = Buffer.from(buf.subarray(offset, offset + length))
        ino.data = applyWrite(ino.data, position, bytes)
        ino.pending.push({ kind: 'write', pos: position, bytes })
      },
      writev: async (bufs, position) => {
        await this.delay?.('write', path)
        check('write', true)
        let len = 0
        for (const b of bufs) len += b.byteLength
        this.reserve(position + len - ino.data.length, path)
        const bytes = Buffer.concat(bufs.map(b => Buffer.from(b.buffer, b.byteOffset, b.byteLength)), len)
        ino.data = applyWrite(ino.data, position, bytes)
        ino.pending.push({ kind: 'write', pos: position, bytes })
      },
      truncate: async (size) => {
        check('truncate', true)
        this.reserve(size - ino.data.length, path)
        ino.data = resize(ino.data, size)
        ino.pending.push({ kind: 'truncate', size })
      },
      size: async () => { check('size', false); return ino.data.length },
      sync: async () => {
        await this.delay?.('sync', path)
        check('sync', true)
        ino.durable = Buffer.from(ino.data)
        ino.pending = []
      },
      close: async () => { check('close', false) }
    }
  }

  async stat (path: string): Promise<{ size: number, isDirectory: boolean } | undefined> {
    this.enter('stat', path, false)
    const n = this.lookup(path)
    if (n === undefined) return undefined
    return n.kind === 'dir' ? { size: 0, isDirectory: true } : { size: n.data.length, isDirectory: false }
  }

  async readdir (path: string): Promise<string[]> {
    this.enter('readdir', path, false)
    const n = this.lookup(path)
    if (n === undefined) return []
    if (n.kind !== 'dir') throw errno('ENOTDIR', path)
    return [...n.entries.keys()]
  }

  async mkdir (path: string): Promise<void> {
    this.enter('mkdir', path, true)
    let d = this.root
    for (const p of posix.resolve(path).split('/').filter(x => x.length > 0)) {
      let next = d.entries.get(p)
      if (next === undefined) {
        next = newDir()
        d.entries.set(p, next)
        d.durable.set(p, next)
      }
      if (next.kind !== 'dir') throw errno('ENOTDIR', path)
      d = next
    }
  }

  async rename (from: string, to: string): Promise<void> {
    this.enter('rename', from, true)
    const a = this.parent(from)
    const b = this.parent(to)
    const node = a.dir.entries.get(a.name)
    if (node === undefined) throw errno('ENOENT', from)
    if (node.kind !== 'file') throw errno('EISDIR', from)
    a.dir.entries.delete(a.name)
    b.dir.entries.set(b.name, node)
    if (a.dir === b.dir) a.dir.pending.push({ kind: 'rename', from: a.name, to: b.name, node })
    else {
      a.dir.pending.push({ kind: 'unlink', name: a.name })
      b.dir.pending.push({ kind: 'link', name: b.name, node })
    }
  }

  async unlink (path: string): Promise<void> {
    this.enter('unlink', path, true)
    const { dir, name } = this.parent(path)
    const node = dir.entries.get(name)
    if (node === undefined) return
    if (node.kind === 'dir') throw errno('EISDIR', path)
    dir.entries.delete(name)
    dir.pending.push({ kind: 'unlink', name })
  }

  async syncDir (path: string): Promise<void> {
    this.enter('syncDir', path, true)
    const d = this.lookup(path)
    if (d?.kind !== 'dir') throw errno('ENOTDIR', path)
    d.durable = new Map(d.entries)
    d.pending = []
  }

  async copyFile (from: string, to: string): Promise<void> {
    this.enter('copyFile', from, true)
    const src = this.lookup(from)
    if (src?.kind !== 'file') throw errno('ENOENT', from)
    if (this.lookup(to) !== undefined) throw errno('EEXIST', to)
    this.reserve(src.data.length, to)
    const { dir, name } = this.parent(to)
    const bytes = Buffer.from(src.data)
    const node: Inode = { kind: 'file', data: Buffer.from(bytes), durable: Buffer.alloc(0), pending: [{ kind: 'write', pos: 0, bytes }] }
    dir.entries.set(name, node)
    dir.pending.push({ kind: 'link', name, node })
  }

  async rmdir (path: string): Promise<void> {
    this.enter('rmdir', path, true)
    const { dir, name } = this.parent(path)
    const node = dir.entries.get(name)
    if (node === undefined) return
    if (node.kind !== 'dir') throw errno('ENOTDIR', path)
    if (node.entries.size > 0) throw errno('ENOTEMPTY', path)
    dir.entries.delete(name)
    dir.durable.delete(name)
  }
}
