/**
 * Test helpers for the replica store: a reference model of the source files (what every
 * committed generation should produce), random generation builders, and comparisons.
 */
import assert from 'node:assert/strict'
import type { Random } from '../../../common/random.ts'
import type { GenerationHeader, GenerationWriter } from '../../../storage/replica/types.ts'
import type { ReplicaStore } from '../../../storage/replica/store.ts'
import type { MemFs } from './memfs.ts'

export type GenOp = { kind: 'block', fileId: number, offset: number, data: Buffer } | { kind: 'size', fileId: number, size: number }
export interface GenSpec { header: GenerationHeader, ops: GenOp[] }

/** The source files at one generation: path → bytes. */
export class RefModel {
  constructor (readonly files = new Map<string, Buffer>()) {}

  clone (): RefModel {
    return new RefModel(new Map([...this.files].map(([k, v]) => [k, Buffer.from(v)])))
  }

  private resize (path: string, size: number): void {
    const cur = this.files.get(path) ?? Buffer.alloc(0)
    const next = Buffer.alloc(size)
    cur.copy(next, 0, 0, Math.min(size, cur.length))
    this.files.set(path, next)
  }

  /** The model after `spec` (same semantics as the store: header sizes first, then ops in order). */
  apply (spec: GenSpec): RefModel {
    const out = spec.header.baseGeneration === 0 ? new RefModel() : this.clone()
    const byId = new Map(spec.header.files.map(f => [f.fileId, f.path]))
    for (const f of spec.header.files) out.resize(f.path, f.size)
    for (const op of spec.ops) {
      const path = byId.get(op.fileId) as string
      if (op.kind === 'size') out.resize(path, op.size)
      else op.data.copy(out.files.get(path) as Buffer, op.offset)
    }
    return out
  }
}

export function randomBytes (rng: Random, n: number): Buffer {
  const b = Buffer.allocUnsafe(n)
  let i = 0
  for (; i + 4 <= n; i += 4) b.writeUInt32LE((rng.next() * 0x1_0000_0000) >>> 0, i)
  for (; i < n; i++) b[i] = rng.int(256)
  return b
}

export interface RandomGenOptions {
  consistent?: boolean
  createdAtMs?: number
  blocks?: number
  blockSize?: number
  /** chance that a file is resized (grown or shrunk) */
  resizeChance?: number
  /** a path to add as a new file in this generation */
  newFile?: { path: string, size: number }
  /** chance of a mid-stream shrink-then-regrow of one file (zeroes its tail) */
  shrinkRegrowChance?: number
  /** blocks of each file in ascending, non-overlapping order (as a sender streams them) */
  sorted?: boolean
}

/** A random incremental generation on top of `ref`, touching every existing file. */
export function randomGen (rng: Random, ref: RefModel, generation: number, baseGeneration: number, o: RandomGenOptions = {}): GenSpec {
  const blockSize = o.blockSize ?? 4096
  const files: GenerationHeader['files'] = []
  const ops: GenOp[] = []
  let id = 1
  for (const [path, buf] of ref.files) {
    let size = buf.length
    if (rng.next() < (o.resizeChance ?? 0)) size = Math.max(blockSize, size + (rng.int(5) - 2) * blockSize + rng.int(blockSize))
    files.push({ fileId: id, path, size, kind: 'disk' })
    id++
  }
  if (o.newFile !== undefined) files.push({ fileId: id, path: o.newFile.path, size: o.newFile.size, kind: 'whole-file' })
  const blocks = o.blocks ?? 8
  for (let i = 0; i < blocks && files.length > 0; i++) {
    const f = files[rng.int(files.length)] as GenerationHeader['files'][number]
    if (f.size === 0) continue
    const len = 1 + rng.int(Math.min(f.size, blockSize * 2))
    const offset = rng.int(f.size - len + 1)
    ops.push({ kind: 'block', fileId: f.fileId, offset, data: randomBytes(rng, len) })
  }
  if (o.sorted === true) {
    const blocksOf = (id: number): Array<Extract<GenOp, { kind: 'block' }>> => ops.filter((op): op is Extract<GenOp, { kind: 'block' }> => op.kind === 'block' && op.fileId === id).sort((a, b) => a.offset - b.offset)
    const kept: GenOp[] = []
    for (const f of files) {
      let end = 0
      for (const op of blocksOf(f.fileId)) if (op.offset >= end) { kept.push(op); end = op.offset + op.data.length }
    }
    ops.splice(0, ops.length, ...kept)
  }
  if (files.length > 0 && rng.next() < (o.shrinkRegrowChance ?? 0)) {
    const f = files[rng.int(files.length)] as GenerationHeader['files'][number]
    ops.unshift({ kind: 'size', fileId: f.fileId, size: rng.int(f.size + 1) }, { kind: 'size', fileId: f.fileId, size: f.size })
  }
  return {
    header: { generation, baseGeneration, consistent: o.consistent ?? true, createdAtMs: o.createdAtMs ?? 1_700_000_000_000 + generation * 1000, files },
    ops
  }
}

/** A seed generation: every file written whole in `blockSize` pieces. */
export function seedGen (rng: Random, generation: number, files: Array<{ path: string, size: number }>, o: { consistent?: boolean, createdAtMs?: number, blockSize?: number } = {}): GenSpec {
  const blockSize = o.blockSize ?? 16384
  const ops: GenOp[] = []
  const header: GenerationHeader = {
    generation,
    baseGeneration: 0,
    consistent: o.consistent ?? true,
    createdAtMs: o.createdAtMs ?? 1_700_000_000_000 + generation * 1000,
    files: files.map((f, i) => ({ fileId: i + 1, path: f.path, size: f.size, kind: 'disk' as const }))
  }
  for (const f of header.files) {
    for (let at = 0; at < f.size; at += blockSize) ops.push({ kind: 'block', fileId: f.fileId, offset: at, data: randomBytes(rng, Math.min(blockSize, f.size - at)) })
  }
  return { header, ops }
}

export async function writeOps (w: GenerationWriter, ops: GenOp[]): Promise<void> {
  for (const op of ops) {
    if (op.kind === 'block') await w.writeBlock(op.fileId, op.offset, op.data)
    else await w.setSize(op.fileId, op.size)
  }
}

export async function applyGen (store: ReplicaStore, spec: GenSpec): Promise<void> {
  const w = await store.beginGeneration(spec.header)
  await writeOps(w, spec.ops)
  await w.commit()
}

/** The replica's files as the store reports them, read from the memory file system. */
export function replicaContents (fs: MemFs, store: ReplicaStore): Map<string, Buffer> {
  const out = new Map<string, Buffer>()
  for (const [path, file] of Object.entries(store.state().files)) {
    const b = fs.peek(file)
    assert.ok(b !== undefined, `replica file ${file} for ${path} is missing`)
    out.set(path, b)
  }
  return out
}

export function sameContents (a: Map<string, Buffer>, b: RefModel): boolean {
  if (a.size !== b.files.size) return false
  for (const [k, v] of b.files) {
    const x = a.get(k)
    if (x === undefined || !x.equals(v)) return false
  }
  return true
}

export function assertContents (actual: Map<string, Buffer>, ref: RefModel, what: string): void {
  assert.deepEqual([...actual.keys()].sort(), [...ref.files.keys()].sort(), `${what}: file set`)
  for (const [k, v] of ref.files) {
    const x = actual.get(k) as Buffer
    assert.equal(x.length, v.length, `${what}: size of ${k}`)
    assert.ok(x.equals(v), `${what}: bytes of ${k}`)
  }
}

/** Reads a directory of restored files (as returned by restore) from the memory fs. */
export function restoredContents (fs: MemFs, files: Record<string, string>): Map<string, Buffer> {
  const out = new Map<string, Buffer>()
  for (const [path, file] of Object.entries(files)) out.set(path, fs.peek(file) ?? Buffer.alloc(0))
  return out
}
