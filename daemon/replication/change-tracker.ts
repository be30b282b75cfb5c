/**
 * ChangeTracker: decides when to scan which file, runs the change source, records the result in
 * the per-target dirty maps, and tells listeners.
 *
 * Triggers: an interval per file bounds staleness (`scanIntervalMs` after the end of its last
 * scan); a file-system watcher on the file's directory pulls the next scan forward to
 * `debounceMs` after the first event (later events do not push it back, so a busy disk is still
 * scanned), never sooner than `minGapMs` after the previous scan that read the file (a check
 * that found the stat unchanged and read nothing does not hold the next scan back). Scans run one at a time: two
 * cores are better spent on one file's hashing than on seeking between two.
 *
 * Each scan is storage's ChangeRecorder (changes since the saved token → dirty maps marked →
 * token saved, in that order for crash safety), then the listeners. This half owns the timers
 * and the watchers, which is why it lives in daemon/.
 */
import { watch as fsWatch } from 'node:fs'
import { basename, dirname, resolve } from 'node:path'
import type { Clock, TimerHandle } from '../../common/clock.ts'
import { AbortedError, errorMessage } from '../../common/errors.ts'
import { ChangeRecorder, NotRunningError } from '../../storage/changes/index.ts'
import type { ChangeRecorderComponents, ChangeRecorderInit, ChangeSet, ChangeSource } from '../../storage/changes/index.ts'

/** Starts watching `dir`; `onEvent` gets the changed entry's name (or null). Returns a closer. */
export type WatchFn = (dir: string, onEvent: (filename: string | null) => void) => { close: () => void }

export const nodeWatch: WatchFn = (dir, onEvent) => {
  try {
    const w = fsWatch(dir, { persistent: false }, (_event, filename) => { onEvent(filename == null ? null : String(filename)) })
    w.on('error', () => { w.close() }) // directory gone: the interval still covers the file
    return { close: () => { w.close() } }
  } catch {
    return { close: () => {} }
  }
}

export interface ChangeTrackerComponents extends ChangeRecorderComponents {
  clock: Clock
  /** @default nodeWatch */
  watch?: WatchFn
}

export interface ChangeTrackerInit extends ChangeRecorderInit {
  /** Longest time between scans of a file. @default 60000 */
  scanIntervalMs?: number
  /** Delay from the first watcher event to the scan it triggers. @default 2000 */
  debounceMs?: number
  /** Shortest time between the end of one scan of a file and the next. @default 1000 */
  minGapMs?: number
  /** Files tracked from start(). @default [] */
  files?: string[]
  /** Use the file-system watcher. @default true */
  watch?: boolean
}

export type ChangeEvent =
  | { file: string, set: ChangeSet }
  | { file: string, error: Error }

interface Tracked {
  path: string
  timer: TimerHandle | undefined
  dueAt: number
  lastScanEnd: number
  /** End of the last scan that read data (or failed): the minimum gap counts from it. */
  lastReadEnd: number
  queued: boolean
  /** A watcher event came while a scan was queued or running: scan again after it. */
  eventWhileQueued: boolean
}

export class ChangeTracker {
  readonly source: ChangeSource
  private readonly recorder: ChangeRecorder
  private readonly files = new Map<string, Tracked>()
  private readonly watchers = new Map<string, { close: () => void, files: Set<string> }>()
  private readonly listeners = new Set<(e: ChangeEvent) => void | Promise<void>>()
  private running = false
  /** Scans run one after another on this chain. */
  private chain: Promise<void> = Promise.resolve()
  private abort: AbortController | null = null
  private readonly scanIntervalMs: number
  private readonly debounceMs: number
  private readonly minGapMs: number

  constructor (private readonly components: ChangeTrackerComponents, private readonly init: ChangeTrackerInit = {}) {
    this.scanIntervalMs = init.scanIntervalMs ?? 60_000
    this.debounceMs = init.debounceMs ?? 2000
    this.minGapMs = init.minGapMs ?? 1000
    this.recorder = new ChangeRecorder(components, init)
    this.source = this.recorder.source
  }

  get isRunning (): boolean { return this.running }

  /** Subscribes to change sets and scan errors; returns the unsubscribe function. */
  onChange (fn: (e: ChangeEvent) => void | Promise<void>): () => void {
    this.listeners.add(fn)
    return () => { this.listeners.delete(fn) }
  }

  async start (): Promise<void> {
    if (this.running) return
    this.running = true
    this.abort = new AbortController()
    for (const f of this.init.files ?? []) this.track(f)
  }

  /** Cancels timers and watchers and waits for a scan in progress to stop. Idempotent. */
  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    this.abort?.abort(new AbortedError('change tracker stopping'))
    for (const t of this.files.values()) this.components.clock.clearTimeout(t.timer)
    for (const w of this.watchers.values()) w.close()
    this.watchers.clear()
    this.files.clear()
    await this.chain
  }

  /** Resolves once no scan is queued or running. */
  async idle (): Promise<void> {
    for (let guard = 0; guard < 1_000_000; guard++) {
      const c = this.chain
      await c
      if (c === this.chain) return
    }
  }

  /** Tracks `path`; its first scan is due now. */
  addFile (path: string): void {
    if (!this.running) throw new NotRunningError('change tracker is not running')
    this.track(path)
  }

  removeFile (path: string): void {
    const abs = resolve(path)
    const t = this.files.get(abs)
    if (t === undefined) return
    this.components.clock.clearTimeout(t.timer)
    this.files.delete(abs)
    const dir = dirname(abs)
    const w = this.watchers.get(dir)
    w?.files.delete(abs)
    if (w !== undefined && w.files.size === 0) { w.close(); this.watchers.delete(dir) }
  }

  trackedFiles (): string[] { return [...this.files.keys()] }

  /** The saved token of `path` (null before its first recorded scan). */
  async token (path: string): Promise<string | null> {
    return await this.recorder.token(resolve(path))
  }

  /** Scans `path` now (queued behind a scan in progress) and returns its change set. */
  async scanNow (path: string): Promise<ChangeSet> {
    if (!this.running) throw new NotRunningError('change tracker is not running')
    const abs = resolve(path)
    const run = this.chain.then(async () => await this.scanOne(abs))
    this.chain = run.then(() => {}, () => {})
    return await run
  }

  private track (path: string): void {
    const abs = resolve(path)
    if (this.files.has(abs)) return
    const t: Tracked = { path: abs, timer: undefined, dueAt: Infinity, lastScanEnd: -Infinity, lastReadEnd: -Infinity, queued: false, eventWhileQueued: false }
    this.files.set(abs, t)
    if (this.init.watch !== false) this.watchDir(abs)
    this.schedule(t, this.components.clock.now())
  }

  private watchDir (abs: string): void {
    const dir = dirname(abs)
    let w = this.watchers.get(dir)
    if (w === undefined) {
      const files = new Set<string>()
      const handle = (this.components.watch ?? nodeWatch)(dir, (name) => { this.onWatchEvent(dir, name) })
      w = { close: handle.close, files }
      this.watchers.set(dir, w)
    }
    w.files.add(abs)
  }

  private onWatchEvent (dir: string, name: string | null): void {
    if (!this.running) return
    const w = this.watchers.get(dir)
    if (w === undefined) return
    const now = this.components.clock.now()
    for (const abs of w.files) {
      if (name !== null && basename(abs) !== name) continue
      const t = this.files.get(abs)
      if (t === undefined) continue
      // during a scan the event may be a write that scan could not see whole (one long write()
      // moves mtime only as it begins, so its stat looked unchanged): it gets a scan of its own
      if (t.queued) t.eventWhileQueued = true
      this.schedule(t, Math.max(now + this.debounceMs, t.lastReadEnd + this.minGapMs))
    }
  }

  /** Moves the file's next scan to `at` if that is earlier than what is scheduled. */
  private schedule (t: Tracked, at: number): void {
    if (t.queued || at >= t.dueAt) return
    const { clock } = this.components
    clock.clearTimeout(t.timer)
    t.dueAt = at
    t.timer = clock.setTimeout(() => {
      t.timer = undefined
      t.dueAt = Infinity
      if (!this.running || this.files.get(t.path) !== t) return
      t.queued = true
      this.chain = this.chain.then(async () => { await this.scanTracked(t.path) })
    }, Math.max(0, at - clock.now()))
  }

  private async scanTracked (path: string): Promise<void> {
    const t = this.files.get(path)
    if (t === undefined || !this.running) return
    let read = true
    try {
      read = (await this.scanOne(path)).scannedBytes > 0
    } catch (err) {
      if (this.running) await this.emit({ file: path, error: err instanceof Error ? err : new Error(errorMessage(err)) })
    } finally {
      t.queued = false
      t.lastScanEnd = this.components.clock.now()
      if (read) t.lastReadEnd = t.lastScanEnd
      if (this.running && this.files.get(path) === t) {
        this.schedule(t, t.lastScanEnd + this.scanIntervalMs)
        if (t.eventWhileQueued) this.schedule(t, Math.max(t.lastScanEnd + this.debounceMs, t.lastReadEnd + this.minGapMs))
        t.eventWhileQueued = false
      }
    }
  }

  private async scanOne (path: string): Promise<ChangeSet> {
    const set = await this.recorder.record(path, this.abort?.signal)
    await this.emit({ file: path, set })
    return set
  }

  private async emit (e: ChangeEvent): Promise<void> {
    for (const fn of [...this.listeners]) {
      try { await fn(e) } catch { /* a listener's failure is its own */ }
    }
  }
}
