/**
 * The undo log of an incremental generation, captured while its blocks arrive instead of at
 * commit: the replica still holds exactly the base generation until commit() (in-place writes
 * happen only there, under the store lock), so the old bytes of each block's range can be read
 * as soon as the block is journaled. commit() then seals and syncs it together with the redo
 * journal, and the apply goes straight to the in-place writes.
 *
 * It only works for the common shape — blocks of each file in ascending, non-overlapping order,
 * no size change — which is what the undo format needs (sorted, disjoint ranges). Anything else
 * gives up (`valid` false) and the commit captures the undo log from the journal's summary as
 * before. What it writes is an ordinary undo log: recovery treats it like any other (an undo
 * log sealed before the redo commit record is durable only makes recovery roll back a replica
 * that is already at the base).
 */
import type { Core } from './core.ts'
import type { ReplicaFileHandle } from './fs.ts'
import type { FileEntry, RedoHeader, UndoHeader } from './schema.ts'
import { JournalAppender, readAt } from './records.ts'
import { undoFileName, closeAll } from './core.ts'

const CHUNK = 1024 * 1024
/** Bytes of old data read ahead of their appends. */
const MAX_OUTSTANDING = 8 * 1024 * 1024

export class EarlyUndo {
  private out: JournalAppender | undefined
  private readonly handles = new Map<number, ReplicaFileHandle>()
  /** per file idx: where the last captured range ended */
  private readonly lastEnd = new Map<number, number>()
  private readonly oldSizes = new Map<number, number | null>()
  private first = true
  /** reads in flight and their appends, chained in order */
  private tail: Promise<void> = Promise.resolve()
  private outstanding = 0
  /** false once the blocks left the shape this capture handles */
  valid = true

  private constructor (private readonly core: Core, private readonly header: UndoHeader, readonly path: string) {
    for (const f of header.files) this.oldSizes.set(f.idx, f.oldSize)
  }

  /** The undo header of `redo` at the replica's current (base) state. */
  static for (core: Core, redo: RedoHeader, oldFiles: Record<string, FileEntry>): EarlyUndo {
    const header: UndoHeader = {
      kind: 'undo',
      generation: redo.generation,
      baseGeneration: redo.baseGeneration,
      files: redo.files.map(f => {
        const old = oldFiles[f.path]
        return { idx: f.fileId, path: f.path, name: old?.name ?? f.name, kind: old?.kind ?? f.kind, oldSize: old?.size ?? null }
      })
    }
    return new EarlyUndo(core, header, core.undoPath(undoFileName(redo.generation, redo.baseGeneration)))
  }

  /** Captures the old bytes under [offset, end) of file `idx`, or gives up on an unordered block. */
  async block (idx: number, offset: number, end: number): Promise<void> {
    if (!this.valid) return
    const oldSize = this.oldSizes.get(idx)
    if (oldSize === undefined) { this.valid = false; return }
    if (offset < (this.lastEnd.get(idx) ?? 0)) { this.valid = false; return }
    this.lastEnd.set(idx, end)
    const stop = Math.min(end, oldSize ?? 0)
    if (offset >= stop) return
    const core = this.core
    this.out ??= await JournalAppender.create(core.fs, this.path, 'undo', this.header)
    let fh = this.handles.get(idx)
    if (fh === undefined) {
      const name = this.header.files.find(f => f.idx === idx)?.name as string
      fh = await core.fs.open(core.filePath(name), 'read')
      this.handles.set(idx, fh)
    }
    // the old bytes are read at once and logged in order behind the reads before them: the
    // caller goes on journaling the next blocks while the replica is read
    for (let at = offset; at < stop; at += CHUNK) {
      const len = Math.min(CHUNK, stop - at)
      const read = readAt(fh, Buffer.allocUnsafe(len), len, at)
      read.catch(() => {})
      const out = this.out
      this.tail = this.tail.then(async () => {
        await out.appendBlock(idx, at, await read)
        if (this.first) { this.first = false; await core.step('undo-partial', this.header.generation) }
      })
      this.tail.catch(() => {})
      this.outstanding += len
      const done = this.tail.then(() => { this.outstanding -= len })
      done.catch(() => {})
      // bounded memory: past the bound, wait for the reads and appends queued so far
      if (this.outstanding > MAX_OUTSTANDING) await this.tail
    }
  }

  /** Everything captured so far is in the log's buffer; rethrows a failed read or append. */
  private async settle (): Promise<void> {
    await this.tail
  }

  /** A size change: the capture leaves it to the commit (shrinks add ranges past the new size). */
  resized (): void { this.valid = false }

  /**
   * Seals the log; the caller syncs it (sync()) alongside the redo journal. Returns its size.
   * Only valid captures may be sealed.
   */
  async seal (): Promise<number> {
    await this.settle()
    this.out ??= await JournalAppender.create(this.core.fs, this.path, 'undo', this.header)
    await this.out.appendCommit()
    return this.out.size
  }

  /**
   * Syncs what the log holds so far, while blocks keep arriving: the commit's final sync then
   * has only the tail left. Nothing else changes; failures surface at that final sync.
   */
  async presync (): Promise<void> {
    if (this.core.fsync && this.out !== undefined) await this.out.sync()
  }

  async sync (): Promise<void> {
    const out = this.out
    if (out === undefined) return
    if (this.core.fsync) await out.sync()
    await out.close()
    this.out = undefined
    await closeAll(this.handles.values())
    this.handles.clear()
    await this.core.syncDir(this.core.undoDir)
    await this.core.step('undo-synced', this.header.generation)
  }

  /** Closes everything and deletes the partial log (the generation was dropped, or the capture gave up). */
  async discard (): Promise<void> {
    // no read or append may still use the handles
    await this.tail.catch(() => {})
    const out = this.out
    this.out = undefined
    this.valid = false
    await out?.close().catch(() => {})
    await closeAll(this.handles.values()).catch(() => {})
    this.handles.clear()
    // even a sealed one: nothing references this generation's undo log yet, and a stale one
    // must never pass for the capture of a later attempt at the same generation
    await this.core.fs.unlink(this.path)
  }
}
