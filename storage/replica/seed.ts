/**
 * Initial seeding: the first generation of an empty replica is the whole file set, so it is
 * written straight into the replica files instead of being journaled twice. Progress is made
 * durable by checkpoints — fsync the files, then atomically replace seed-progress.json with the
 * ranges written so far — so an interrupted seed resumes and the sender skips what is durable.
 * The replica stays unusable (applied = 0, no recovery point) until commit() records the seed
 * as applied. Seed progress documents carry the seed's id: a document from an earlier seed is
 * ignored.
 *
 * Automatic checkpoints run in the background while blocks keep being written: a checkpoint
 * claims only the ranges whose writes had completed when its fsync started, so what a resume
 * skips is always durable, while the fsync (the disk catching up) overlaps the stream instead of
 * stalling it. One runs at a time; if the disk falls far behind, writes wait for it (bounded
 * loss on a crash, bounded commit tail). Its failure fails the writer at the next call.
 *
 * Checkpointed ranges are trusted as delivered (the transport is authenticated); a sender that
 * finds its stream bad should abort with `discardSeedProgress`.
 */
import { join } from 'node:path'
import type { Core } from './core.ts'
import type { ReplicaFileHandle } from './fs.ts'
import type { BlockData, CommitOptions, CommitResult, GenerationWriter } from './types.ts'
import { blockDataLength } from './block-data.ts'
import type { WriterFile, WriterHost } from './writer.ts'
import type { SeedingInfo } from './schema.ts'
import { SEED_PROGRESS_FILE, closeAll } from './core.ts'
import { writeJsonAtomic, readJsonChecked, SwitchUncertainError } from './atomic.ts'
import { seedProgressSchema } from './schema.ts'
import { IntervalSet } from './intervals.ts'
import { checkBlock, checkSize, notifyDurable } from './writer.ts'
import { OpGate } from './op-gate.ts'
import { ReplicaNeedsRecoveryError } from './errors.ts'

/** Durable ranges per source path. */
export type SeedRanges = Map<string, IntervalSet>

/** Loads the progress of the seed in `seeding`, or empty ranges when there is none for it. */
export async function loadSeedProgress (core: Core, seeding: SeedingInfo): Promise<SeedRanges> {
  const out: SeedRanges = new Map()
  let doc: unknown
  try { doc = await readJsonChecked(core.fs, core.dir, SEED_PROGRESS_FILE) } catch (err) {
    core.log.warn({ err }, 'seed progress unreadable; the seed restarts from nothing')
    return out
  }
  const parsed = seedProgressSchema.safeParse(doc)
  if (!parsed.success || parsed.data.seedId !== seeding.seedId) return out
  for (const [path, ranges] of Object.entries(parsed.data.files)) {
    if (seeding.files[path] === undefined) continue
    out.set(path, IntervalSet.from(ranges.map(([start, end]) => ({ start, end }))))
  }
  return out
}

/** Checkpoints' worth of bytes written while one is still syncing, beyond which writes wait for it. */
const BACKLOG_CHECKPOINTS = 8

export interface SeedHost extends WriterHost {
  /** The store's durable seed ranges (updated by checkpoints). */
  seedRanges: SeedRanges
  checkpointBytes: number
  /**
   * Time after which written bytes are checkpointed whatever their amount: on a slow link a
   * byte threshold alone is never reached before the link drops. @default 2000 ms
   */
  checkpointIntervalMs?: number
}

export class SeedWriter implements GenerationWriter {
  readonly seeding = true
  readonly generation: number
  private readonly files = new Map<number, WriterFile & { name: string }>()
  private readonly pending = new Map<string, IntervalSet>()
  private pendingBytes = 0
  private writtenBytes = 0
  private closed = false
  private closing: Promise<void> | undefined
  private readonly onAbort = (): void => { if (!this.gate.busy) void this.abort().catch(() => {}) }
  /** the automatic checkpoint running in the background, if any */
  private background: Promise<void> | undefined
  private backgroundError: unknown
  /** monotonic ms of the last automatic checkpoint started (or of the writer's creation) */
  private lastCheckpointAt: number

  constructor (
    private readonly host: SeedHost,
    private readonly info: SeedingInfo,
    fileIds: Map<string, number>,
    private readonly handles: Map<number, ReplicaFileHandle>,
    private readonly signal?: AbortSignal
  ) {
    this.generation = info.generation
    this.lastCheckpointAt = host.core.clock.now()
    for (const [path, id] of fileIds) {
      const f = info.files[path]
      if (f !== undefined) this.files.set(id, { path, size: f.size, name: f.name })
    }
    signal?.addEventListener('abort', this.onAbort, { once: true })
  }

  private readonly gate = new OpGate({
    isClosed: () => this.closed,
    closing: () => this.closing,
    signal: () => this.signal,
    abort: async () => { await this.abort() },
    check: () => {
      this.host.checkUsable()
      if (this.backgroundError !== undefined) throw this.backgroundError
    },
    fail: async () => { await this.close() },
    messages: {
      closed: () => `seed writer of generation ${this.generation} is closed`,
      aborted: () => 'seed aborted',
      diskFull: () => `disk full while seeding generation ${this.generation}; progress kept up to the last checkpoint`
    }
  })

  private async op<T> (fn: () => Promise<T>): Promise<T> { return await this.gate.run(fn) }


  async writeBlock (fileId: number, offset: number, data: BlockData): Promise<void> {
    await this.op(async () => {
      const length = blockDataLength(data)
      const f = checkBlock(this.files, fileId, offset, length)
      if (length === 0) return
      const fh = this.handles.get(fileId) as ReplicaFileHandle
      if (data instanceof Uint8Array) await fh.write(data, 0, length, offset)
      else await fh.writev(data, offset)
      let p = this.pending.get(f.path)
      if (p === undefined) { p = new IntervalSet(); this.pending.set(f.path, p) }
      p.add(offset, offset + length)
      this.pendingBytes += length
      this.writtenBytes += length
      await this.host.core.step('seed-written', this.generation)
      const due = this.host.core.clock.now() - this.lastCheckpointAt >= (this.host.checkpointIntervalMs ?? 2000)
      if (this.pendingBytes >= this.host.checkpointBytes || (due && this.background === undefined)) {
        if (this.background === undefined) this.startBackgroundCheckpoint()
        else if (this.pendingBytes >= BACKLOG_CHECKPOINTS * this.host.checkpointBytes) await this.settleBackground()
      }
    })
  }

  /** Starts an automatic checkpoint of what has been written so far; writes go on meanwhile. */
  private startBackgroundCheckpoint (): void {
    this.lastCheckpointAt = this.host.core.clock.now()
    const claimed = this.takePending()
    const run = this.persist(claimed).catch((err: unknown) => {
      // not durable after all: claim the ranges again at the next checkpoint
      this.backgroundError ??= err
      this.restorePending(claimed)
    })
    const tracked: Promise<void> = run.finally(() => { if (this.background === tracked) this.background = undefined })
    this.background = tracked
  }

  /** Waits for the background checkpoint; rethrows its failure. */
  private async settleBackground (): Promise<void> {
    // bounded: each pass awaits one checkpoint, and none starts while we wait here
    while (this.background !== undefined) await this.background
    if (this.backgroundError !== undefined) throw this.backgroundError
  }

  private takePending (): Map<string, IntervalSet> {
    const claimed = new Map(this.pending)
    this.pending.clear()
    this.pendingBytes = 0
    return claimed
  }

  private restorePending (claimed: Map<string, IntervalSet>): void {
    for (const [path, set] of claimed) {
      const p = this.pending.get(path)
      this.pending.set(path, p === undefined ? set : IntervalSet.from([...p.ranges(), ...set.ranges()]))
    }
  }

  async setSize (fileId: number, size: number): Promise<void> {
    await this.op(async () => {
      const f = checkSize(this.files, fileId, size)
      if (size < f.size) {
        // progress must stop claiming the cut-off bytes before they are cut off (and no
        // checkpoint still in flight may claim them again)
        await this.settleBackground()
        const durable = this.host.seedRanges.get(f.path)
        if (durable !== undefined) this.host.seedRanges.set(f.path, durable.clip(size))
        const pending = this.pending.get(f.path)
        if (pending !== undefined) this.pending.set(f.path, pending.clip(size))
        await this.doCheckpoint()
      }
      await (this.handles.get(fileId) as ReplicaFileHandle).truncate(size)
      f.size = size
    })
  }

  async checkpoint (): Promise<void> { await this.op(async () => { await this.doCheckpoint() }) }

  /** Everything written so far made durable now (after any background checkpoint). */
  private async doCheckpoint (): Promise<void> {
    await this.settleBackground()
    const claimed = this.takePending()
    try {
      await this.persist(claimed)
    } catch (err) {
      this.restorePending(claimed)
      throw err
    }
  }

  /** fsync the files, then record `claimed` (written before the fsync began) as durable. */
  private async persist (claimed: Map<string, IntervalSet>): Promise<void> {
    const core = this.host.core
    for (const fh of this.handles.values()) await core.sync(fh)
    await core.syncDir(core.filesDir)
    const merged: SeedRanges = new Map()
    const doc: Record<string, Array<[number, number]>> = {}
    for (const f of this.files.values()) {
      const all = IntervalSet.from([...(this.host.seedRanges.get(f.path)?.ranges() ?? []), ...(claimed.get(f.path)?.ranges() ?? [])])
      merged.set(f.path, all)
      doc[f.path] = all.toArray().map(r => [r.start, r.end])
    }
    await writeJsonAtomic(core.fs, core.dir, SEED_PROGRESS_FILE, { seedId: this.info.seedId, files: doc }, core.fsync)
    this.host.seedRanges.clear()
    for (const [k, v] of merged) this.host.seedRanges.set(k, v)
    await core.step('seed-checkpointed', this.generation)
  }

  async commit (opts: CommitOptions = {}): Promise<CommitResult> {
    const core = this.host.core
    await this.op(async () => await this.host.lock.run(async () => {
      this.host.checkUsable()
      await this.settleBackground()
      for (const [id, f] of this.files) {
        const fh = this.handles.get(id) as ReplicaFileHandle
        await fh.truncate(f.size)
        await core.sync(fh)
      }
      await core.syncDir(core.filesDir)
      const files: SeedingInfo['files'] = {}
      for (const f of this.files.values()) {
        files[f.path] = { name: f.name, kind: this.info.files[f.path]?.kind ?? 'disk', size: f.size }
      }
      const s = core.state
      try {
        await core.commitState({
          ...s,
          applied: this.generation,
          appliedCreatedAtMs: this.info.createdAtMs,
          appliedIsConsistent: this.info.consistent,
          files,
          points: this.info.consistent ? [{ generation: this.generation, createdAtMs: this.info.createdAtMs }] : [],
          undo: [],
          seeding: null
        })
      } catch (err) {
        // before the switch the seed simply stays resumable; at the switch only open() can tell
        if (err instanceof SwitchUncertainError) this.host.markBroken(new ReplicaNeedsRecoveryError(`recording seed ${this.generation} as applied was interrupted`, { cause: err.cause }))
        throw err
      }
      try { await core.step('applied-recorded', this.generation) } catch (err) {
        this.host.markBroken(new ReplicaNeedsRecoveryError(`interrupted after seed ${this.generation} was recorded`, { cause: err }))
        throw err
      }
      notifyDurable(opts)
      await this.close()
      this.host.seedRanges.clear()
      await core.fs.unlink(join(core.dir, SEED_PROGRESS_FILE)).catch(() => {})
    }))
    const prunedPoints = await this.host.afterCommit()
    return { generation: this.generation, consistent: this.info.consistent, dataBytes: this.writtenBytes, prunedPoints }
  }

  async abort (opts?: { discardSeedProgress?: boolean }): Promise<void> {
    if (this.closed) { await this.closing; return }
    await this.close()
    if (opts?.discardSeedProgress === true) {
      const core = this.host.core
      await this.host.lock.run(async () => {
        await core.commitState({ ...core.state, seeding: null })
        this.host.seedRanges.clear()
      })
    }
  }

  private async close (): Promise<void> {
    this.closed = true
    this.signal?.removeEventListener('abort', this.onAbort)
    this.closing = (async () => {
      try {
        // a checkpoint may still be syncing these handles
        await this.background?.catch(() => {})
        await closeAll(this.handles.values())
      } finally {
        this.host.writerDone(this)
      }
    })()
    await this.closing
  }
}
