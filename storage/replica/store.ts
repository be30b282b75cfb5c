/**
 * The replica store: one VM's replica on this node — its files, the generation they hold, and
 * the recovery points behind them.
 *
 * Flow. The network side decodes a generation and calls beginGeneration(); the writer streams
 * blocks into a redo journal (or, for the initial seed, straight into the files with durable
 * checkpoints); commit() makes it the applied generation crash-consistently (apply.ts), then
 * retention prunes recovery points (prune.ts). open() first repairs whatever a crash left
 * (recovery.ts). restore() materializes a point as files; finalize() rolls the replica itself
 * back for failover (rollback.ts).
 *
 * Metadata lives in one small JSON document (state.json) replaced atomically — write a temp
 * file, fsync, rename, fsync the directory — rather than in LevelDB: the state is a few KB, is
 * always written whole at exactly one switch point per step, and going through the injected
 * file system lets tests cut power at that switch like everywhere else (LevelDB would write
 * behind the fault-injection layer and hold a process-wide lock on the directory).
 *
 * Concurrency: one generation writer at a time; a mutex serializes everything that changes the
 * replica files or the state (commit, finalize, reset, the copy phase of restore), while blocks
 * keep streaming into the journal meanwhile.
 */
import { join, resolve, sep } from 'node:path'
import { randomBytes } from 'node:crypto'
import { hashBlocks } from '../../common/blake3.ts'
import type { FileEntry, PersistedState, RedoHeader, SeedingInfo } from './schema.ts'
import type { ReplicaFileHandle } from './fs.ts'
import type {
  CommitResult, FinalizeResult, GenerationHeader, GenerationWriter, RecoveryAction, RecoveryPoint,
  ReplicaComponents, ReplicaInit, ReplicaLog, ReplicaStateView, RestoreResult, SeedProgress
} from './types.ts'
import { nodeReplicaFs } from './fs.ts'
import { Core, STATE_FILE, SEED_PROGRESS_FILE } from './core.ts'
import { Mutex } from './mutex.ts'
import { readJsonChecked } from './atomic.ts'
import { stateSchema, emptyState, stateInvariantViolation } from './schema.ts'
import { resolveRetention, type RetentionPolicy } from './retention.ts'
import { recover } from './recovery.ts'
import { prune } from './prune.ts'
import { JournaledWriter } from './writer.ts'
import { SeedWriter, loadSeedProgress, type SeedRanges } from './seed.ts'
import { chainDownTo, copyReplica, rollBackCopy, runFinalize, type RestoreProgress } from './rollback.ts'
import { replicaFileName } from './names.ts'
import { readAt } from './records.ts'
import { AbortedError } from '../../common/errors.ts'
import {
  ReplicaBaseMismatchError, ReplicaBusyError, ReplicaClosedError, ReplicaFinalizedError, ReplicaIdentityMismatchError,
  ReplicaInvalidInputError, ReplicaNeedsRecoveryError, ReplicaNoConsistentPointError, ReplicaNotReadyError,
  ReplicaPointNotFoundError, ReplicaRestoreTargetError, ReplicaStateCorruptError
} from './errors.ts'

const silentLog: ReplicaLog = { info: () => {}, warn: () => {} }
const MAX_FILES = 1024
const MAX_PATH_BYTES = 4096

export interface BlockHash { offset: number, length: number, hash: Buffer, generation: number }

function validateHeader (h: GenerationHeader): void {
  const bad = (why: string): never => { throw new ReplicaInvalidInputError(`generation header: ${why}`) }
  if (!Number.isSafeInteger(h.generation) || h.generation < 1) bad(`generation ${String(h.generation)}`)
  if (!Number.isSafeInteger(h.baseGeneration) || h.baseGeneration < 0 || h.baseGeneration >= h.generation) bad(`baseGeneration ${String(h.baseGeneration)}`)
  if (typeof h.consistent !== 'boolean') bad('consistent is not a boolean')
  if (!Number.isSafeInteger(h.createdAtMs) || h.createdAtMs < 0) bad(`createdAtMs ${String(h.createdAtMs)}`)
  if (!Array.isArray(h.files) || h.files.length > MAX_FILES) bad('files')
  const ids = new Set<number>()
  const paths = new Set<string>()
  for (const f of h.files) {
    if (!Number.isInteger(f.fileId) || f.fileId < 0 || f.fileId > 0xffff_ffff || ids.has(f.fileId)) bad(`fileId ${String(f.fileId)}`)
    if (typeof f.path !== 'string' || f.path.length === 0 || f.path.includes('\0') || Buffer.byteLength(f.path) > MAX_PATH_BYTES || paths.has(f.path)) bad(`path ${JSON.stringify(f.path)}`)
    if (!Number.isSafeInteger(f.size) || f.size < 0) bad(`size ${String(f.size)}`)
    if (f.kind !== 'disk' && f.kind !== 'whole-file') bad(`kind ${String(f.kind)}`)
    ids.add(f.fileId)
    paths.add(f.path)
  }
}

export class ReplicaStore {
  private readonly lock = new Mutex()
  /** the active writer; 'starting' while beginGeneration creates it */
  private writer: GenerationWriter | 'starting' | undefined
  /** Settles when the writer being created ('starting') exists or failed. */
  private starting: Promise<void> | undefined
  /** the generation of `writer` */
  private writerGeneration = 0
  private broken: unknown
  private closed = false
  /** restores past their copy phase, reading undo logs outside the lock */
  private pinned = 0
  private pinWaiters: Array<() => void> = []
  private readonly seedRanges: SeedRanges = new Map()

  private constructor (private readonly core: Core, private readonly recovered: RecoveryAction[], private readonly seedCheckpointBytes: number) {}

  /** Opens (creating if needed) the store in `init.dir` and recovers from any crash. */
  static async open (components: ReplicaComponents, init: ReplicaInit): Promise<ReplicaStore> {
    const fs = components.fs ?? nodeReplicaFs
    const fsync = init.fsync ?? true
    const fallbackRetention = resolveRetention(init.retention)
    const seedCheckpointBytes = init.seedCheckpointBytes ?? 64 * 1024 * 1024
    if (!Number.isSafeInteger(seedCheckpointBytes) || seedCheckpointBytes < 1) throw new ReplicaInvalidInputError('seedCheckpointBytes must be a positive integer')
    if (init.vm === '' || init.source === '') throw new ReplicaInvalidInputError('vm and source must be non-empty')
    const dir = resolve(init.dir)
    for (const d of ['files', 'journal', 'undo']) await fs.mkdir(join(dir, d))
    if (fsync) await fs.syncDir(dir)
    const raw = await readJsonChecked(fs, dir, STATE_FILE)
    let state: PersistedState
    if (raw === undefined) {
      state = emptyState(init.vm, init.source)
    } else {
      const parsed = stateSchema.safeParse(raw)
      if (!parsed.success) throw new ReplicaStateCorruptError(`${join(dir, STATE_FILE)}: invalid state`, { cause: parsed.error })
      state = parsed.data
      const broken = stateInvariantViolation(state)
      if (broken !== undefined) throw new ReplicaStateCorruptError(`${join(dir, STATE_FILE)}: ${broken}`)
      if (state.vm !== init.vm || state.source !== init.source) {
        throw new ReplicaIdentityMismatchError(`${dir} holds a replica of ${state.vm} from ${state.source}, not of ${init.vm} from ${init.source}`)
      }
    }
    // a policy the source sent wins over the opener's default (which may keep fewer points)
    const core = new Core(fs, dir, fsync, components.clock, components.log ?? silentLog, components.hooks ?? {}, state.retention ?? fallbackRetention, state)
    if (raw === undefined) await core.commitState(state)
    const actions = await recover(core)
    const store = new ReplicaStore(core, actions, seedCheckpointBytes)
    if (core.state.seeding !== null) {
      for (const [k, v] of await loadSeedProgress(core, core.state.seeding)) store.seedRanges.set(k, v)
    }
    await store.afterCommit()
    return store
  }

  // ---- views -------------------------------------------------------------------------------

  state (): ReplicaStateView {
    const s = this.core.state
    const files: Record<string, string> = {}
    const sizes: Record<string, number> = {}
    for (const [path, f] of [...Object.entries(s.files), ...Object.entries(s.seeding?.files ?? {})]) {
      files[path] = this.core.filePath(f.name)
      sizes[path] = f.size
    }
    return {
      vm: s.vm,
      source: s.source,
      appliedGeneration: s.applied,
      appliedConsistentGeneration: s.finalized ? (s.appliedIsConsistent ? s.applied : 0) : s.points[s.points.length - 1]?.generation ?? 0,
      seeding: s.seeding !== null,
      seedingGeneration: s.seeding?.generation ?? null,
      finalized: s.finalized,
      applyingGeneration: this.core.applying,
      receivingGeneration: this.writer === undefined ? null : this.writerGeneration,
      files,
      sizes
    }
  }

  /** Retained recovery points, oldest first. */
  points (): RecoveryPoint[] {
    return this.core.state.points.map(p => ({ id: String(p.generation), generation: p.generation, createdAtMs: p.createdAtMs, consistent: true }))
  }

  /** The durable part of an interrupted or running seed, or null when not seeding. */
  seedProgress (): SeedProgress | null {
    const sd = this.core.state.seeding
    if (sd === null) return null
    const files: SeedProgress['files'] = {}
    let durableBytes = 0
    for (const [path, f] of Object.entries(sd.files)) {
      const ranges = this.seedRanges.get(path)?.clip(f.size).toArray() ?? []
      files[path] = ranges.map(r => ({ offset: r.start, length: r.end - r.start }))
      for (const r of ranges) durableBytes += r.end - r.start
    }
    return { generation: sd.generation, files, durableBytes }
  }

  /** What open() repaired. */
  recoveryReport (): RecoveryAction[] { return [...this.recovered] }

  // ---- apply -------------------------------------------------------------------------------

  /**
   * Starts receiving a generation. `baseGeneration` must equal the applied generation; 0 on an
   * empty replica starts (or resumes) the initial seed. A seed resumes when the same generation
   * is begun again with the same files, or with `keepSeedProgress` when the sender re-sends
   * everything that changed since the interrupted seed.
   */
  async beginGeneration (header: GenerationHeader, opts: { signal?: AbortSignal, keepSeedProgress?: boolean } = {}): Promise<GenerationWriter> {
    this.checkUsable()
    if (opts.signal?.aborted === true) throw new AbortedError('aborted before the generation began', { cause: opts.signal.reason })
    validateHeader(header)
    const s = this.core.state
    if (s.finalized || s.finalizing !== null) throw new ReplicaFinalizedError('the replica was finalized for failover')
    if (this.writer !== undefined) throw new ReplicaBusyError('another generation is still being received')
    if (header.baseGeneration !== s.applied) {
      throw new ReplicaBaseMismatchError(`generation ${header.generation} is based on ${header.baseGeneration}, the replica holds ${s.applied}`)
    }
    if (header.baseGeneration === 0) return await this.claim(header.generation, async () => await this.beginSeed(header, opts))
    return await this.claim(header.generation, async () => await JournaledWriter.begin(this.host(), this.redoHeader(header), opts.signal))
  }

  /**
   * Reserves the writer slot while `fn` creates the writer of `generation`. The creation is
   * kept in `starting` so a finalize that comes meanwhile waits for the writer and aborts it,
   * instead of leaving a live writer on a finalized replica.
   */
  private async claim (generation: number, fn: () => Promise<GenerationWriter>): Promise<GenerationWriter> {
    this.writer = 'starting'
    this.writerGeneration = generation
    const creating = fn()
    const settled = creating.then(() => {}, () => {})
    this.starting = settled
    try {
      const w = await creating
      this.writer = w
      return w
    } catch (err) {
      this.writer = undefined
      throw err
    } finally {
      if (this.starting === settled) this.starting = undefined
    }
  }

  private redoHeader (h: GenerationHeader): RedoHeader {
    const known = this.core.state.files
    const taken = new Set(Object.values(known).map(f => f.name))
    return {
      kind: 'redo',
      generation: h.generation,
      baseGeneration: h.baseGeneration,
      consistent: h.consistent,
      createdAtMs: h.createdAtMs,
      files: h.files.map(f => {
        let name = known[f.path]?.name
        if (name === undefined) { name = replicaFileName(f.path, taken); taken.add(name) }
        return { fileId: f.fileId, path: f.path, name, kind: f.kind, size: f.size }
      })
    }
  }

  private async beginSeed (h: GenerationHeader, opts: { signal?: AbortSignal, keepSeedProgress?: boolean }): Promise<GenerationWriter> {
    const core = this.core
    const prev = core.state.seeding
    const paths = h.files.map(f => f.path)
    const samePaths = prev !== null && paths.length === Object.keys(prev.files).length && paths.every(p => prev.files[p] !== undefined)
    const resume = prev !== null && samePaths && (prev.generation === h.generation || opts.keepSeedProgress === true)
    const files: SeedingInfo['files'] = {}
    const taken = new Set<string>()
    for (const f of h.files) {
      let name = prev?.files[f.path]?.name
      if (name === undefined || taken.has(name)) name = replicaFileName(f.path, taken)
      taken.add(name)
      files[f.path] = { name, kind: f.kind, size: f.size }
    }
    const info: SeedingInfo = {
      generation: h.generation,
      seedId: resume && prev !== null ? prev.seedId : randomBytes(8).toString('hex'),
      consistent: h.consistent,
      createdAtMs: h.createdAtMs,
      files
    }
    await this.lock.run(async () => { await core.commitState({ ...core.state, seeding: info }) })
    if (!resume) this.seedRanges.clear()
    const handles = new Map<number, ReplicaFileHandle>()
    const ids = new Map<string, number>()
    try {
      for (const f of h.files) {
        const fh = await core.fs.open(core.filePath(files[f.path]?.name as string), resume ? 'write' : 'create')
        handles.set(f.fileId, fh)
        ids.set(f.path, f.fileId)
        await fh.truncate(f.size)
      }
      if (!resume && prev !== null) {
        for (const f of Object.values(prev.files)) if (!taken.has(f.name)) await core.fs.unlink(core.filePath(f.name))
      }
    } catch (err) {
      for (const fh of handles.values()) await fh.close().catch(() => {})
      throw err
    }
    return new SeedWriter({ ...this.host(), seedRanges: this.seedRanges, checkpointBytes: this.seedCheckpointBytes }, info, ids, handles, opts.signal)
  }

  private host (): Parameters<typeof JournaledWriter.begin>[0] {
    return {
      core: this.core,
      lock: this.lock,
      writerDone: (w) => { if (this.writer === w) this.writer = undefined },
      markBroken: (err) => { this.broken ??= err },
      checkUsable: () => { this.checkUsable() },
      afterCommit: async () => await this.afterCommit()
    }
  }

  /** The retention policy in force: the one last set (persisted), else the opener's default. */
  retention (): RetentionPolicy { return { ...this.core.retention } }

  /** The policy last set through setRetention (the source's), or undefined if none ever was. */
  sourceRetention (): RetentionPolicy | undefined {
    const r = this.core.state.retention
    return r !== undefined ? { ...r } : undefined
  }

  /**
   * Adopts `policy` (the source's `recoveryPoints`) and keeps it in state.json, so a reopen
   * prunes by it too. Returns whether it changed; pruning by it is `applyRetention()`'s (or the
   * next commit's) job, so a caller on a latency-sensitive path need not wait for it.
   */
  async setRetention (policy: Partial<RetentionPolicy>): Promise<boolean> {
    this.checkUsable()
    const p = resolveRetention(policy)
    const cur = this.core.retention
    if (this.core.state.retention !== undefined && cur.maxPoints === p.maxPoints && cur.keepAllWithinMs === p.keepAllWithinMs && cur.hourlyBeyond === p.hourlyBeyond) return false
    await this.lock.run(async () => {
      this.checkUsable()
      await this.core.commitState({ ...this.core.state, retention: p })
      this.core.retention = p
    })
    return true
  }

  /**
   * Prunes recovery points by the policy now (otherwise done after each commit). Never drops
   * the newest point; waits for nothing and does nothing while a restore reads undo logs (the
   * next commit prunes then). Returns the generations of the points dropped.
   */
  async applyRetention (): Promise<number[]> { return await this.afterCommit() }

  /** Retention, unless a restore is reading undo logs; never throws. */
  private async afterCommit (): Promise<number[]> {
    if (this.pinned > 0 || this.broken !== undefined) return []
    try {
      return await this.lock.run(async () => await prune(this.core))
    } catch (err) {
      this.core.log.warn({ err }, 'retention failed; it will be retried after the next commit')
      return []
    }
  }

  // ---- recovery points ---------------------------------------------------------------------

  private pointGeneration (pointId: string): number {
    const g = /^\d{1,16}$/.test(pointId) ? Number(pointId) : NaN
    if (!this.core.state.points.some(p => p.generation === g)) throw new ReplicaPointNotFoundError(`no recovery point ${JSON.stringify(pointId)}`)
    return g
  }

  /**
   * Materializes recovery point `pointId` as files in `toDir` (created if missing; must be
   * empty and outside the store). Apply pauses only while the files are cloned.
   */
  async restore (pointId: string, toDir: string, opts: { signal?: AbortSignal, onProgress?: (p: RestoreProgress) => void } = {}): Promise<RestoreResult> {
    this.checkUsable()
    const core = this.core
    let gen = this.pointGeneration(pointId)
    const abs = resolve(toDir)
    if (abs === core.dir || abs.startsWith(core.dir + sep) || core.dir.startsWith(abs + sep)) throw new ReplicaRestoreTargetError(`${abs} overlaps the replica store`)
    const st = await core.fs.stat(abs)
    if (st !== undefined && (!st.isDirectory || (await core.fs.readdir(abs)).length > 0)) throw new ReplicaRestoreTargetError(`${abs} exists and is not an empty directory`)
    await core.fs.mkdir(abs)
    let pinned = false
    try {
      const { chain, copied } = await this.lock.run(async () => {
        this.checkUsable()
        gen = this.pointGeneration(pointId)
        const chain = chainDownTo(core, gen)
        const copied = await copyReplica(core, abs, opts.onProgress, chain)
        await core.step('restore-copied', gen)
        // the undo logs of `chain` must outlive the lock: retention, finalize and reset wait
        this.pinned++
        pinned = true
        return { chain, copied }
      })
      const files = await rollBackCopy(core, abs, chain, copied, opts.signal, opts.onProgress)
      for (const f of Object.values(files)) {
        const fh = await core.fs.open(join(abs, f.name), 'write')
        try { await core.sync(fh) } finally { await fh.close() }
      }
      await core.syncDir(abs)
      const out: Record<string, string> = {}
      for (const [path, f] of Object.entries(files)) out[path] = join(abs, f.name)
      return { pointId, generation: gen, files: out }
    } catch (err) {
      for (const name of await core.fs.readdir(abs).catch(() => [])) await core.fs.unlink(join(abs, name)).catch(() => {})
      if (st === undefined) await core.fs.rmdir(abs).catch(() => {})
      throw err
    } finally {
      if (pinned) {
        this.pinned--
        if (this.pinned === 0) for (const w of this.pinWaiters.splice(0)) w()
      }
    }
  }

  /** Waits until no restore reads undo logs (called under the lock, so no new one starts). */
  private async drainRestores (): Promise<void> {
    if (this.pinned === 0) return
    await new Promise<void>(resolve => { this.pinWaiters.push(resolve) })
  }

  /** Aborts a generation being received (a seed is kept resumable). */
  private async abortWriter (waitStarting = true): Promise<void> {
    // a writer still being created (its redo journal may exist already) is aborted once it is;
    // not under the lock when a seed may be starting, since a starting seed takes the lock
    if (this.writer === 'starting' && waitStarting) await this.starting
    const w = this.writer
    if (w === undefined || w === 'starting') return
    await w.abort().catch(() => {})
    if (this.writer === w) this.writer = undefined
  }

  /**
   * For failover: rolls the replica back in place to the latest consistent generation (or the
   * chosen point; or, with `acceptFuzzy` and no consistent point, keeps the applied fuzzy state)
   * and marks it finalized — it takes no more generations, and its points are gone, since the VM
   * is about to write to these files. A generation being received is discarded.
   */
  async finalize (opts: { pointId?: string, acceptFuzzy?: boolean } = {}): Promise<FinalizeResult> {
    this.checkUsable()
    const core = this.core
    return await this.lock.run(async () => {
      this.checkUsable()
      const s0 = core.state
      if (s0.seeding !== null) throw new ReplicaNotReadyError('the replica is still seeding')
      // before waiting for a writer being created: only a seed starts on an empty replica, and
      // a seed takes this lock while it starts
      if (s0.applied === 0 && !s0.finalized) throw new ReplicaNotReadyError('the replica holds no generation yet')
      await this.abortWriter()
      await this.drainRestores()
      const s = core.state
      if (s.finalized) {
        if (opts.pointId !== undefined && opts.pointId !== String(s.applied)) throw new ReplicaPointNotFoundError(`already finalized at ${s.applied}`)
        return this.finalizeResult(0)
      }
      if (s.applied === 0) throw new ReplicaNotReadyError('the replica holds no generation yet')
      let target: number
      if (opts.pointId !== undefined) target = this.pointGeneration(opts.pointId)
      else {
        const newest = s.points[s.points.length - 1]
        if (newest !== undefined) target = newest.generation
        else if (opts.acceptFuzzy === true) target = s.applied
        else throw new ReplicaNoConsistentPointError(`no consistent generation to finalize at (applied ${s.applied} is fuzzy)`)
      }
      chainDownTo(core, target)
      try {
        // no journal may survive to bring a newer generation back
        for (const name of await core.fs.readdir(core.journalDir)) await core.fs.unlink(join(core.journalDir, name))
        await core.syncDir(core.journalDir)
        await core.commitState({ ...s, finalizing: { target } })
        return this.finalizeResult(await runFinalize(core))
      } catch (err) {
        this.broken ??= new ReplicaNeedsRecoveryError('finalize interrupted; reopen the store to resume it', { cause: err })
        throw err
      }
    })
  }

  private finalizeResult (rolledBack: number): FinalizeResult {
    const s = this.core.state
    const files: Record<string, string> = {}
    for (const [path, f] of Object.entries(s.files)) files[path] = this.core.filePath(f.name)
    return { generation: s.applied, consistent: s.appliedIsConsistent, rolledBack, files }
  }

  /** Empties the replica (for a reseed): files, journals, points. */
  async reset (): Promise<void> {
    this.checkUsable()
    const core = this.core
    await this.abortWriter()
    await this.lock.run(async () => {
      await this.abortWriter(false)
      await this.drainRestores()
      try {
        const retention = core.state.retention
        await core.commitState({ ...emptyState(core.state.vm, core.state.source), ...(retention !== undefined ? { retention } : {}) })
        this.seedRanges.clear()
        for (const d of [core.filesDir, core.journalDir, core.undoDir]) {
          for (const name of await core.fs.readdir(d)) await core.fs.unlink(join(d, name))
          await core.syncDir(d)
        }
        await core.fs.unlink(join(core.dir, SEED_PROGRESS_FILE))
      } catch (err) {
        this.broken ??= new ReplicaNeedsRecoveryError('reset interrupted; reopen the store', { cause: err })
        throw err
      }
    })
  }

  // ---- verify ------------------------------------------------------------------------------

  /**
   * BLAKE3-128 of consecutive `blockSize` blocks of one replica file (for `vmesh verify`). Each
   * batch is read under the lock; `generation` says which applied generation it reflects — if
   * it changes between blocks, the caller should start over.
   */
  async * verifyBlocks (sourcePath: string, opts: { blockSize: number, offset?: number, length?: number, signal?: AbortSignal }): AsyncGenerator<BlockHash> {
    const { blockSize } = opts
    if (!Number.isSafeInteger(blockSize) || blockSize < 1 || blockSize > 64 * 1024 * 1024) throw new ReplicaInvalidInputError(`blockSize ${blockSize}`)
    let at = opts.offset ?? 0
    const VERIFY_BATCH = 16 // blocks hashed under one hold of the lock
    // several blocks per read (up to about 1 MiB), hashed by the shared per-block loop
    const perRead = Math.max(1, Math.min(VERIFY_BATCH, Math.floor(1024 * 1024 / blockSize)))
    const buf = Buffer.allocUnsafe(perRead * blockSize)
    // bounded: every batch advances `at` by at least one block until the end of the range
    for (;;) {
      if (opts.signal?.aborted === true) throw new AbortedError('verify aborted', { cause: opts.signal.reason })
      this.checkUsable()
      const batch = await this.lock.run(async () => {
        const f: FileEntry | undefined = this.core.state.files[sourcePath]
        if (f === undefined) throw new ReplicaInvalidInputError(`no replica file for ${sourcePath}`)
        const end = Math.min(f.size, opts.length !== undefined ? (opts.offset ?? 0) + opts.length : f.size)
        const out: BlockHash[] = []
        if (at >= end) return out
        const fh = await this.core.fs.open(this.core.filePath(f.name), 'read')
        try {
          while (out.length < VERIFY_BATCH && at < end) {
            const blocks = Math.min(perRead, VERIFY_BATCH - out.length)
            const data = await readAt(fh, buf, Math.min(blocks * blockSize, end - at), at)
            for (const hash of hashBlocks(data, blockSize)) {
              const len = Math.min(blockSize, end - at)
              out.push({ offset: at, length: len, hash: Buffer.from(hash), generation: this.core.state.applied })
              at += len
            }
          }
        } finally {
          await fh.close()
        }
        return out
      })
      if (batch.length === 0) return
      yield * batch
    }
  }

  // ---- lifecycle ---------------------------------------------------------------------------

  private checkUsable (): void {
    if (this.closed) throw new ReplicaClosedError()
    if (this.broken !== undefined) throw new ReplicaNeedsRecoveryError('an earlier failure left this replica needing recovery; reopen the store', { cause: this.broken })
  }

  /** Aborts a generation being received (a seed stays resumable), waits for running work. Idempotent. */
  async close (): Promise<void> {
    if (this.closed) return
    await this.abortWriter()
    await this.lock.run(async () => { await this.drainRestores() })
    this.closed = true
  }
}
