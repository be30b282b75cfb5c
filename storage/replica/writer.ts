/**
 * The writer of an incremental generation: blocks stream into the redo journal (through a
 * bounded buffer) while the replica stays untouched, and the replica's old bytes under them
 * into the undo log as they come (early-undo.ts); commit() appends the commit records, syncs
 * both logs at once, and hands over to rollForward under the store lock. Any failure before the
 * commit record is durable discards the journal; ENOSPC surfaces as ReplicaDiskFullError.
 */
import type { Core } from './core.ts'
import type { Mutex } from './mutex.ts'
import type { RedoHeader } from './schema.ts'
import type { BlockData, CommitOptions, CommitResult, GenerationWriter } from './types.ts'
import { blockDataLength, sliceBlockData } from './block-data.ts'
import { JournalAppender, MAX_RECORD_DATA } from './records.ts'
import type { RedoScan } from './redo.ts'
import { rollForward } from './apply.ts'
import { EarlyUndo } from './early-undo.ts'
import type { HeldRecord } from './redo.ts'
import { IntervalSet } from './intervals.ts'
import { OpGate } from './op-gate.ts'
import { ReplicaDiskFullError, ReplicaInvalidInputError, ReplicaNeedsRecoveryError, ReplicaWriterClosedError, isDiskFull } from './errors.ts'

/** A generation up to this size keeps its blocks in memory until commit (in-place writes from them). */
const MAX_HELD_BYTES = 32 * 1024 * 1024
/**
 * Journaled bytes after which the redo and undo logs are synced in the background while blocks
 * keep arriving, so the commit's own sync (which the ack waits for) has only the tail left.
 */
const PRESYNC_BYTES = 4 * 1024 * 1024

/** `data` in one buffer of its own (the caller reuses its buffers after writeBlock returns). */
function copyOf (data: BlockData, length: number): Uint8Array {
  const out = Buffer.allocUnsafe(length)
  let at = 0
  for (const p of data instanceof Uint8Array ? [data] : data) { out.set(p, at); at += p.byteLength }
  return out
}

/** Runs the caller's durability callback; its failure must not undo a durable generation. */
export function notifyDurable (opts: CommitOptions): void {
  try { opts.onDurable?.() } catch {}
}

/** What a writer needs from its store. */
export interface WriterHost {
  readonly core: Core
  readonly lock: Mutex
  /** The writer finished (committed, aborted or failed): free the slot. */
  writerDone: (w: GenerationWriter) => void
  /** Refuse further work until reopened. */
  markBroken: (err: unknown) => void
  /** Throws if the store is closed or broken. */
  checkUsable: () => void
  /** Retention after a commit; never throws. */
  afterCommit: () => Promise<number[]>
}

export interface WriterFile { path: string, size: number }

/** Checks a block against the file table; returns the file. */
export function checkBlock (files: Map<number, WriterFile>, fileId: number, offset: number, length: number): WriterFile {
  const f = files.get(fileId)
  if (f === undefined) throw new ReplicaInvalidInputError(`unknown file id ${fileId}`)
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(offset + length) || offset + length > f.size) {
    throw new ReplicaInvalidInputError(`block [${offset}, +${length}) outside ${f.path} (size ${f.size})`)
  }
  return f
}

export function checkSize (files: Map<number, WriterFile>, fileId: number, size: number): WriterFile {
  const f = files.get(fileId)
  if (f === undefined) throw new ReplicaInvalidInputError(`unknown file id ${fileId}`)
  if (!Number.isSafeInteger(size) || size < 0) throw new ReplicaInvalidInputError(`bad size ${size} for ${f.path}`)
  return f
}

export class JournaledWriter implements GenerationWriter {
  readonly seeding = false
  readonly generation: number
  private readonly files = new Map<number, WriterFile>()
  /** what the journal holds, kept as it is written (the same summary scanRedo would compute) */
  private readonly scan: RedoScan
  private closed = false
  /** settles once a discard has finished (the writer slot is free again) */
  private closing: Promise<void> | undefined
  private readonly onAbort = (): void => { if (!this.gate.busy) void this.abort().catch(() => {}) }

  private readonly early: EarlyUndo
  /** a background sync of the logs written so far, and the bytes journaled since the last one */
  private presyncing: Promise<void> | undefined
  private sincePresync = 0

  private presyncMaybe (bytes: number): void {
    this.sincePresync += bytes
    if (!this.host.core.fsync || this.presyncing !== undefined || this.sincePresync < PRESYNC_BYTES) return
    this.sincePresync = 0
    const p: Promise<void> = Promise.all([this.out.sync(), this.early.presync()]).then(() => {}, () => {})
      .finally(() => { if (this.presyncing === p) this.presyncing = undefined })
    this.presyncing = p
  }
  /** the journal's records, copied, while the generation is small: the in-place writes use them */
  private held: HeldRecord[] | undefined = []
  private heldBytes = 0

  private hold (rec: HeldRecord, bytes: number): void {
    if (this.held === undefined) return
    this.heldBytes += bytes
    if (this.heldBytes > MAX_HELD_BYTES) { this.held = undefined; return }
    this.held.push(rec)
  }

  private constructor (private readonly host: WriterHost, readonly header: RedoHeader, private readonly out: JournalAppender, private readonly signal?: AbortSignal) {
    this.generation = header.generation
    // the replica holds the base generation until commit: its state names the old files
    this.early = EarlyUndo.for(host.core, header, host.core.state.files)
    this.scan = { header, committed: false, end: undefined, files: new Map(), records: 0, dataBytes: 0 }
    for (const f of header.files) {
      this.files.set(f.fileId, { path: f.path, size: f.size })
      this.scan.files.set(f.fileId, { touched: new IntervalSet(), minSize: f.size, finalSize: f.size })
    }
    signal?.addEventListener('abort', this.onAbort, { once: true })
  }

  static async begin (host: WriterHost, header: RedoHeader, signal?: AbortSignal): Promise<JournaledWriter> {
    const core = host.core
    let out: JournalAppender
    try {
      out = await JournalAppender.create(core.fs, core.redoPath(header.generation), 'redo', header)
    } catch (err) {
      await core.fs.unlink(core.redoPath(header.generation)).catch(() => {})
      if (isDiskFull(err)) throw new ReplicaDiskFullError('disk full creating the redo journal', { cause: err })
      throw err
    }
    return new JournaledWriter(host, header, out, signal)
  }

  private readonly gate = new OpGate({
    isClosed: () => this.closed,
    closing: () => this.closing,
    signal: () => this.signal,
    abort: async () => { await this.abort() },
    check: () => { this.host.checkUsable() },
    fail: async () => { await this.fail() },
    messages: {
      closed: () => `writer of generation ${this.generation} is closed`,
      aborted: () => 'generation aborted',
      diskFull: () => `disk full while journaling generation ${this.generation}; generation discarded`
    }
  })

  /** Runs one writer operation: one at a time, abort-aware, failures discard the generation. */
  private async op<T> (fn: () => Promise<T>): Promise<T> { return await this.gate.run(fn) }


  async writeBlock (fileId: number, offset: number, data: BlockData): Promise<void> {
    await this.op(async () => {
      const length = blockDataLength(data)
      checkBlock(this.files, fileId, offset, length)
      if (length === 0) return
      for (let at = 0; at < length; at += MAX_RECORD_DATA) {
        await this.out.appendBlock(fileId, offset + at, sliceBlockData(data, at, Math.min(length, at + MAX_RECORD_DATA)))
      }
      this.hold({ type: 'block', fileIdx: fileId, offset, data: copyOf(data, length) }, length)
      this.scan.files.get(fileId)?.touched.add(offset, offset + length)
      await this.host.core.step('redo-appended', this.generation)
      await this.early.block(fileId, offset, offset + length)
      this.presyncMaybe(length)
    })
  }

  async setSize (fileId: number, size: number): Promise<void> {
    await this.op(async () => {
      const f = checkSize(this.files, fileId, size)
      await this.out.appendSize(fileId, size)
      this.early.resized()
      this.hold({ type: 'size', fileIdx: fileId, size }, 0)
      f.size = size
      const sum = this.scan.files.get(fileId)
      if (sum !== undefined) { sum.finalSize = size; sum.minSize = Math.min(sum.minSize, size) }
    })
  }

  async checkpoint (): Promise<void> {}

  async commit (opts: CommitOptions = {}): Promise<CommitResult> {
    const core = this.host.core
    const result = await this.op(async () => await this.host.lock.run(async () => {
      this.host.checkUsable()
      // a finalize or reset may have discarded this generation while we waited for the lock
      if (this.closed) throw new ReplicaWriterClosedError(`writer of generation ${this.generation} was discarded`)
      await this.presyncing
      await this.out.appendCommit()
      const syncRedo = async (): Promise<void> => {
        if (core.fsync) await this.out.sync()
        await this.out.close()
        await core.syncDir(core.journalDir)
      }
      // a complete early undo log is sealed and synced alongside the redo journal; otherwise
      // rollForward captures it from the journal's summary
      let undoBytes: number | undefined
      if (this.early.valid) {
        undoBytes = await this.early.seal()
        const [a, b] = await Promise.allSettled([syncRedo(), this.early.sync()])
        if (a.status === 'rejected') throw a.reason
        if (b.status === 'rejected') throw b.reason
      } else {
        await this.early.discard()
        await syncRedo()
      }
      // from here on the generation is durable: it completes, here or at the next open
      this.closed = true
      this.signal?.removeEventListener('abort', this.onAbort)
      try {
        try {
          await core.step('redo-committed', this.generation)
        } catch (err) {
          this.host.markBroken(new ReplicaNeedsRecoveryError(`generation ${this.generation} interrupted after its commit record`, { cause: err }))
          throw err
        }
        notifyDurable(opts)
        try {
          this.scan.committed = true
          this.scan.records = this.out.records - 1
          this.scan.dataBytes = this.out.dataBytes
          return await rollForward(core, this.generation, this.scan, { ...(undoBytes !== undefined ? { sealedUndoBytes: undoBytes } : {}), ...(this.held !== undefined ? { held: this.held } : {}) })
        } catch (err) {
          // rollForward settles what it can (discard or rollback); the rest waits for open()
          if (err instanceof ReplicaNeedsRecoveryError) this.host.markBroken(err)
          throw err
        }
      } finally {
        this.host.writerDone(this)
      }
    }))
    const prunedPoints = await this.host.afterCommit()
    return { ...result, prunedPoints }
  }

  async abort (): Promise<void> {
    if (this.closed) { await this.closing; return }
    await this.fail()
  }

  /** Closes and deletes the journal; if even that fails the store must be reopened. */
  private async fail (): Promise<void> {
    this.closed = true
    let done!: () => void
    this.closing = new Promise<void>(resolve => { done = resolve })
    this.signal?.removeEventListener('abort', this.onAbort)
    const core = this.host.core
    try {
      await this.presyncing
      await this.out.close().catch(() => {})
      await this.early.discard()
      await core.fs.unlink(core.redoPath(this.generation))
      await core.syncDir(core.journalDir)
    } catch (err) {
      this.host.markBroken(new ReplicaNeedsRecoveryError(`could not discard the journal of generation ${this.generation}`, { cause: err }))
    } finally {
      this.host.writerDone(this)
      done()
    }
  }
}
