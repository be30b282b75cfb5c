/**
 * Undo logs: what a generation overwrote, so the replica (or a copy of it) can be turned back.
 *
 * An undo log for generation g (base b) holds, for every file g touched, the file's size at b
 * (null: it did not exist) and the bytes of b in every range g changed — the written ranges and,
 * when g shrank the file, everything past the new size — clipped to the old size. Applying it
 * sets each size back and writes the old bytes; that is idempotent, so a rollback interrupted by
 * a crash is simply run again.
 *
 * Merging two adjacent logs (older: P→O, newer: Q→P) gives one log Q→O: the older log wins where
 * both cover a range, the newer one fills the rest, clipped to O's sizes. Data is copied record by
 * record through a small buffer; only the ranges (one entry per record) are held in memory.
 */
import { join } from 'node:path'
import type { Core } from './core.ts'
import type { ReplicaFileHandle } from './fs.ts'
import type { FileEntry, UndoHeader } from './schema.ts'
import type { RedoScan } from './redo.ts'
import { undoHeaderSchema } from './schema.ts'
import { JournalAppender, JournalReader, readAt } from './records.ts'
import { IntervalSet, subtract } from './intervals.ts'
import { closeAll } from './core.ts'
import { ReplicaJournalCorruptError } from './errors.ts'

const CHUNK = 1024 * 1024

export interface UndoRange { start: number, end: number, dataPos: number }

export interface UndoIndex {
  header: UndoHeader
  /** per file idx: sorted, disjoint ranges and where their bytes sit in the log */
  ranges: Map<number, UndoRange[]>
}

/** Captures the undo log of a scanned, committed redo journal from the replica's current bytes. */
export async function captureUndo (core: Core, path: string, scan: RedoScan, oldFiles: Record<string, FileEntry>): Promise<number> {
  const gen = scan.header.generation
  const header: UndoHeader = {
    kind: 'undo',
    generation: gen,
    baseGeneration: scan.header.baseGeneration,
    files: scan.header.files.map(f => {
      const old = oldFiles[f.path]
      return { idx: f.fileId, path: f.path, name: old?.name ?? f.name, kind: old?.kind ?? f.kind, oldSize: old?.size ?? null }
    })
  }
  const out = await JournalAppender.create(core.fs, path, 'undo', header)
  try {
    const buf = Buffer.allocUnsafe(CHUNK)
    let first = true
    for (const f of header.files) {
      if (f.oldSize === null || f.oldSize === 0) continue
      const sum = scan.files.get(f.idx)
      if (sum === undefined) continue
      const ranges = sum.touched.clip(f.oldSize)
      if (sum.minSize < f.oldSize) ranges.add(sum.minSize, f.oldSize)
      if (ranges.count === 0) continue
      const fh = await core.fs.open(core.filePath(f.name), 'read')
      try {
        for (const r of ranges.ranges()) {
          for (let at = r.start; at < r.end; at += CHUNK) {
            const len = Math.min(CHUNK, r.end - at)
            await out.appendBlock(f.idx, at, await readAt(fh, buf, len, at))
            if (first) { first = false; await core.step('undo-partial', gen) }
          }
        }
      } finally {
        await fh.close()
      }
    }
    await out.appendCommit()
    if (core.fsync) await out.sync()
  } finally {
    await out.close()
  }
  await core.syncDir(core.undoDir)
  await core.step('undo-synced', gen)
  return out.size
}

/** Verifies a whole undo log (it must be sealed) and indexes its ranges. */
export async function readUndoIndex (core: Core, path: string): Promise<UndoIndex> {
  const r = await JournalReader.open(core.fs, path, 'undo')
  try {
    const first = await r.next()
    if (!('type' in first)) throw first.kind === 'torn' ? first.error : new ReplicaJournalCorruptError(`${path}: empty undo log`)
    if (first.type !== 'header') throw new ReplicaJournalCorruptError(`${path}: no header`)
    const parsed = undoHeaderSchema.safeParse(first.json)
    if (!parsed.success) throw new ReplicaJournalCorruptError(`${path}: invalid header`, { cause: parsed.error })
    const header = parsed.data
    const sizes = new Map<number, number | null>()
    for (const f of header.files) {
      if (sizes.has(f.idx)) throw new ReplicaJournalCorruptError(`${path}: duplicate file index ${f.idx}`)
      sizes.set(f.idx, f.oldSize)
    }
    const ranges = new Map<number, UndoRange[]>()
    // bounded: every iteration consumes a record of a finite file or ends
    for (;;) {
      const rec = await r.next()
      if (!('type' in rec)) throw rec.kind === 'torn' ? rec.error : new ReplicaJournalCorruptError(`${path}: undo log not sealed`)
      if (rec.type === 'commit') break
      if (rec.type !== 'block') throw new ReplicaJournalCorruptError(`${path}: unexpected ${rec.type} record`)
      const oldSize = sizes.get(rec.fileIdx)
      const end = rec.offset + rec.data.length
      if (oldSize === undefined || oldSize === null || end > oldSize) throw new ReplicaJournalCorruptError(`${path}: range outside file ${rec.fileIdx}`)
      let list = ranges.get(rec.fileIdx)
      if (list === undefined) { list = []; ranges.set(rec.fileIdx, list) }
      const prev = list[list.length - 1]
      if (prev !== undefined && prev.end > rec.offset) throw new ReplicaJournalCorruptError(`${path}: ranges out of order`)
      list.push({ start: rec.offset, end, dataPos: rec.dataPos })
    }
    return { header, ranges }
  } finally {
    await r.close()
  }
}

/** True when `path` exists and is a complete, valid undo log. */
export async function undoIsSealed (core: Core, path: string): Promise<boolean> {
  if (await core.fs.stat(path) === undefined) return false
  try { await readUndoIndex(core, path); return true } catch (err) {
    if (err instanceof ReplicaJournalCorruptError) return false
    throw err
  }
}

/**
 * Applies an undo log to the files in `targetDir` (the replica itself, or a restore copy).
 * Returns the file table so the caller can update its file map.
 */
export async function applyUndo (core: Core, path: string, targetDir: string, index?: UndoIndex): Promise<UndoHeader['files']> {
  const idx = index ?? await readUndoIndex(core, path)
  const src = await core.fs.open(path, 'read')
  const handles = new Map<number, ReplicaFileHandle>()
  let dirChanged = false
  try {
    for (const f of idx.header.files) {
      const target = join(targetDir, f.name)
      if (f.oldSize === null) {
        if (await core.fs.stat(target) !== undefined) { await core.fs.unlink(target); dirChanged = true }
        continue
      }
      if (await core.fs.stat(target) === undefined) dirChanged = true
      const fh = await core.fs.open(target, 'write')
      handles.set(f.idx, fh)
      await fh.truncate(f.oldSize)
    }
    const buf = Buffer.allocUnsafe(CHUNK)
    for (const [fileIdx, list] of idx.ranges) {
      const fh = handles.get(fileIdx)
      if (fh === undefined) continue
      for (const r of list) {
        for (let at = r.start; at < r.end; at += CHUNK) {
          const len = Math.min(CHUNK, r.end - at)
          const data = await readAt(src, buf, len, r.dataPos + (at - r.start))
          await fh.write(data, 0, len, at)
        }
      }
    }
    for (const fh of handles.values()) await core.sync(fh)
    if (dirChanged) await core.syncDir(targetDir)
  } finally {
    await closeAll([src, ...handles.values()])
  }
  return idx.header.files
}

interface MergedFile { path: string, name: string, kind: UndoHeader['files'][number]['kind'], oldSize: number | null, older?: number, newer?: number }

/** Writes `outPath`: the merge of `olderPath` (P→O) and `newerPath` (Q→P) into one log Q→O. */
export async function mergeUndo (core: Core, olderPath: string, newerPath: string, outPath: string): Promise<number> {
  const older = await readUndoIndex(core, olderPath)
  const newer = await readUndoIndex(core, newerPath)
  if (newer.header.baseGeneration !== older.header.generation) {
    throw new ReplicaJournalCorruptError(`undo logs ${olderPath} and ${newerPath} are not adjacent`)
  }
  const byPath = new Map<string, MergedFile>()
  for (const f of older.header.files) byPath.set(f.path, { path: f.path, name: f.name, kind: f.kind, oldSize: f.oldSize, older: f.idx })
  for (const f of newer.header.files) {
    const m = byPath.get(f.path)
    if (m !== undefined) m.newer = f.idx
    else byPath.set(f.path, { path: f.path, name: f.name, kind: f.kind, oldSize: f.oldSize, newer: f.idx })
  }
  const files = [...byPath.values()]
  const header: UndoHeader = {
    kind: 'undo',
    generation: newer.header.generation,
    baseGeneration: older.header.baseGeneration,
    files: files.map((f, i) => ({ idx: i, path: f.path, name: f.name, kind: f.kind, oldSize: f.oldSize }))
  }
  const handles: ReplicaFileHandle[] = []
  let size: number
  try {
    const olderFh = await core.fs.open(olderPath, 'read')
    handles.push(olderFh)
    const newerFh = await core.fs.open(newerPath, 'read')
    handles.push(newerFh)
    const out = await JournalAppender.create(core.fs, outPath, 'undo', header)
    try {
      const buf = Buffer.allocUnsafe(CHUNK)
      for (let i = 0; i < files.length; i++) {
        const f = files[i] as MergedFile
        if (f.oldSize === null) continue
        const a = f.older !== undefined ? older.ranges.get(f.older) ?? [] : []
        const b = f.newer !== undefined ? newer.ranges.get(f.newer) ?? [] : []
        const pieces: Array<{ start: number, end: number, from: UndoRange, fh: ReplicaFileHandle }> = []
        for (const r of a) pieces.push({ start: r.start, end: r.end, from: r, fh: olderFh })
        for (const p of subtract(b, IntervalSet.from(a))) {
          const end = Math.min(p.end, f.oldSize)
          if (p.start < end) pieces.push({ start: p.start, end, from: p.from, fh: newerFh })
        }
        pieces.sort((x, y) => x.start - y.start)
        for (const p of pieces) {
          for (let at = p.start; at < p.end; at += CHUNK) {
            const len = Math.min(CHUNK, p.end - at)
            await out.appendBlock(i, at, await readAt(p.fh, buf, len, p.from.dataPos + (at - p.from.start)))
          }
        }
      }
      await out.appendCommit()
      if (core.fsync) await out.sync()
      size = out.size
    } finally {
      await out.close()
    }
  } finally {
    await closeAll(handles)
  }
  await core.syncDir(core.undoDir)
  return size
}
