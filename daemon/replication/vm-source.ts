/**
 * Source side of one VM: change tracking over its disks and files, the VM generation counter,
 * per-target dirty maps, and one TargetSender per replicateTo peer.
 *
 * Flow: the ChangeTracker scans (hash scan, format-aware for disks) → dirty maps marked for
 * every target → our listener bumps the generation G when the scan found changes (or a size
 * change) → senders wake up and ship whatever their target still lacks as generation G. The
 * scan loop never waits for a sender, and senders never wait for each other.
 *
 * Scans are bracketed (scanSeq / scanBusy) so a sender can tell whether the manifest it relies
 * on for consistency moved while it was reading.
 */
import { join, resolve } from 'node:path'
import type { AbstractLevel } from 'abstract-level'
import type { Clock } from '../../common/clock.ts'
import { errorMessage } from '../../common/errors.ts'
import type { VmConfig } from '../../config/load.ts'
import { HashScanSource, formatRangesOf, inlineHasher, poolHasher, wholeFile, type ChangeSource } from '../../storage/changes/index.ts'
import { ChangeTracker, type ChangeEvent } from './change-tracker.ts'
import { Manifest } from '../../storage/manifest/manifest.ts'
import { binarySublevel } from '../../storage/manifest/db.ts'
import { DirtyMaps } from '../../storage/dirty/index.ts'
import type { WorkerPool } from '../../storage/workers/pool.ts'
import { FileKind } from '../../protocol/delta/index.ts'
import type { Logger } from '../log.ts'
import type { CaptureStatus, VmStatus } from '../status.ts'
import { scanRpoBoundMs } from './logic.ts'
import type { VmeshMetrics } from '../metrics/registry.ts'
import type { BandwidthLimiter } from '../bandwidth/limiter.ts'
import type { ScanReadBudget } from '../bandwidth/scan-budget.ts'
import { Books } from './books.ts'
import { ToldSourceRunner } from './told-source-runner.ts'
import { RctSourceRunner, type RctRunnerComponents } from './rct-source-runner.ts'
import { parseToldScanToken } from '../../storage/changes/told-scan.ts'
import { TargetSender } from './sender.ts'
import type { SenderSource, SourceFile } from './source-view.ts'
import type { PointLease } from './point-gate.ts'
import type { StreamLike } from './channel.ts'

export interface VmSourceComponents {
  clock: Clock
  log: Logger
  /** The node's source database; this VM uses its own sublevel. */
  db: AbstractLevel<any, any, any> // eslint-disable-line @typescript-eslint/no-explicit-any
  pool?: WorkerPool
  /** Opens a replication stream to a peer by name. */
  dial: (peer: string, signal: AbortSignal) => Promise<StreamLike>
  limiterFor?: (peer: string, vm: string) => BandwidthLimiter
  metrics?: VmeshMetrics
  /** The host's hash-scan read budget (shared by every VM); absent: scans read unbounded. */
  scanBudget?: ScanReadBudget
  /** Present: the disks' changes come from QEMU dirty bitmaps (told-source-runner.ts) whenever this names a socket QEMU answers on. */
  qmpSocket?: () => Promise<string | undefined>
  /** Folder for fleecing scratch images (bitmap VMs with one disk and `fleece`); absent: no fleecing. */
  fleeceDir?: string
  /** Present: the disks' changes come from Hyper-V RCT (rct-source-runner.ts) while the VM runs here. */
  rct?: Pick<RctRunnerComponents, 'rct' | 'vmId'> & { stateFile: string }
}

/** Default shortest gap between hash scans of a file (each reads it). */
export const SCAN_GAP_MS = 250
/**
 * Default shortest gap between told rounds (bitmaps, RCT): a round costs the source ~40 ms of CPU
 * whatever it carries (capture bench, 2026-12-08), so rounds every 250 ms were 14 % of a core
 * under 10 small writes a second; 500 ms halves that and keeps write → durable p99 under 1 s.
 */
export const TOLD_GAP_MS = 500

export interface VmSourceInit {
  vm: VmConfig
  nodeName: string
  /** Delay from a file-system event to the scan it triggers (a burst of writes is caught whole, and the change reaches the target soon after it ends). @default 100 */
  debounceMs?: number
  /** Shortest gap between scans of one file. @default the VM's captureGapMs, else TOLD_GAP_MS for a told source and SCAN_GAP_MS for the hash scan */
  minGapMs?: number
  /** Use fs.watch. @default true */
  watch?: boolean
}

export type { SourceFile } from './source-view.ts'

/**
 * The LevelDB sublevel of a VM's books. Sublevel names must be bytes above '"' (34): a VM name
 * may hold spaces (common on Hyper-V), so it is percent-encoded — which leaves every name
 * without a space as it always was.
 */
export function vmSublevelName (vm: string): string { return `vm-${encodeURIComponent(vm)}` }

export class VmSource implements SenderSource {
  readonly name: string
  readonly files: SourceFile[]
  readonly manifest: Manifest
  readonly hashScan: HashScanSource
  readonly dirty: DirtyMaps
  readonly books: Books
  readonly blockSize: number
  private tracker: ChangeTracker | undefined
  /** The QEMU dirty-bitmap or Hyper-V RCT source, when the VM uses one. */
  readonly told: ToldSourceRunner | RctSourceRunner | undefined
  private readonly senders = new Map<string, TargetSender>()
  private readonly sizes = new Map<string, number>()
  private readonly scanned = new Set<string>()
  /** When each file's scan in progress started (for the scan's debug log). */
  private readonly scanStarted = new Map<string, number>()
  /** Wall time each file's scan in progress began, and that of its last completed scan (the RPO's capture points). */
  private readonly captureStarting = new Map<string, number>()
  private readonly captureStart = new Map<string, number>()
  private waiters: Array<() => void> = []
  private running = false
  private bumping: Promise<void> = Promise.resolve()
  private verifyTimer: ReturnType<Clock['setTimeout']> | undefined
  /** Incremented when a scan starts and when it ends. */
  scanSeq = 0
  scanBusy = 0
  vm: VmConfig

  constructor (readonly components: VmSourceComponents, readonly init: VmSourceInit) {
    this.vm = init.vm
    this.name = init.vm.name
    this.blockSize = init.vm.blockSizeBytes
    this.files = [
      ...init.vm.disks.map((p, i) => ({ fileId: i, path: resolve(p), kind: FileKind.Disk })),
      ...init.vm.files.map((p, i) => ({ fileId: init.vm.disks.length + i, path: resolve(p), kind: FileKind.WholeFile }))
    ]
    const vmDb = binarySublevel(components.db, vmSublevelName(this.name))
    this.manifest = new Manifest(binarySublevel(vmDb, 'manifest'))
    const disks = new Set(this.files.filter(f => f.kind === FileKind.Disk).map(f => f.path))
    this.hashScan = new HashScanSource({
      manifest: this.manifest,
      clock: components.clock,
      hasher: components.pool !== undefined ? poolHasher(components.pool) : inlineHasher,
      rangesOf: async (path, size) => disks.has(resolve(path)) ? await formatRangesOf(path, size) : await wholeFile(path, size),
      ...(components.scanBudget !== undefined ? { readBudget: components.scanBudget } : {})
    }, { blockSizeBytes: this.blockSize, quietBudgetMs: init.vm.quietBudgetMs, budgetFlow: this.name })
    this.dirty = new DirtyMaps({ db: binarySublevel(vmDb, 'dirty') }, { blockSizeBytes: this.blockSize })
    this.books = new Books(binarySublevel(vmDb, 'books'))
    this.trackerDb = vmDb
    if (components.rct !== undefined) {
      this.told = new RctSourceRunner({ clock: components.clock, log: components.log, hashScan: this.hashScan, rct: components.rct.rct, vmId: components.rct.vmId }, { vm: this.name, disks: [...disks], blockSizeBytes: this.blockSize, stateFile: components.rct.stateFile })
    } else if (components.qmpSocket !== undefined) {
      const fleece = components.fleeceDir !== undefined && init.vm.fleece && disks.size === 1 ? { fleeceScratchDir: join(components.fleeceDir, vmSublevelName(this.name)), copyMaxBytes: init.vm.pointCopyBudgetBytes } : {}
      this.told = new ToldSourceRunner({ clock: components.clock, log: components.log, hashScan: this.hashScan, qmpSocket: components.qmpSocket }, { vm: this.name, disks: [...disks], blockSizeBytes: this.blockSize, ...fleece })
    }
  }

  private readonly trackerDb: AbstractLevel<any, any, any> // eslint-disable-line @typescript-eslint/no-explicit-any

  get generation (): number { return this.books.generation }
  /** Every file has been scanned at least once since start (or earlier). */
  get ready (): boolean { return this.files.every(f => this.scanned.has(f.path)) }

  async start (): Promise<void> {
    if (this.running) return
    this.running = true
    this.components.scanBudget?.register(this.name)
    await this.dirty.open()
    await this.books.load()
    for (const f of this.dirty.files()) this.sizes.set(f.file, f.fileSize)
    // files scanned before a restart count as scanned: their manifest and token survive
    for (const f of this.files) if ((await this.manifest.file(f.path).meta())?.generation !== undefined && this.sizes.has(f.path)) this.scanned.add(f.path)
    const told = this.told instanceof ToldSourceRunner ? this.told : undefined
    const counting: ChangeSource = {
      changes: async (file, since, opts) => {
        // a fleeced disk's round first waits for its senders to finish reading the held point;
        // that wait is not a busy scan (a sender's end check would wait for it: a deadlock)
        await told?.beforeRound(file, opts?.signal)
        this.scanBusy++
        this.scanSeq++
        this.scanStarted.set(resolve(file), this.components.clock.now())
        this.captureStarting.set(resolve(file), this.components.clock.wallNow())
        // a told source's token carries the hash scan's: switching back to the scan keeps it
        try {
          return this.told !== undefined ? await this.told.source.changes(file, since, opts) : await this.hashScan.changes(file, parseToldScanToken(since).hs, opts)
        } catch (err) {
          told?.afterRound(file, false, false)
          throw err
        }
      }
    }
    this.tracker = new ChangeTracker({
      clock: this.components.clock,
      db: this.trackerDb,
      dirty: this.dirty,
      source: counting,
      ...(this.init.watch === false ? { watch: () => ({ close: () => {} }) } : {})
    }, {
      blockSizeBytes: this.blockSize,
      scanIntervalMs: this.vm.scanIntervalMs,
      quietBudgetMs: this.vm.quietBudgetMs,
      debounceMs: this.init.debounceMs ?? 100,
      minGapMs: this.init.minGapMs ?? this.vm.captureGapMs ?? (this.told !== undefined ? TOLD_GAP_MS : SCAN_GAP_MS),
      files: this.files.map(f => f.path)
    })
    this.tracker.onChange(async (e) => { await this.onScan(e) })
    for (const t of this.vm.replicateTo) await this.addTarget(t)
    await this.tracker.start()
    this.scheduleVerify()
  }

  /** verifyInterval: compare every target block by block, repairing what differs. */
  private scheduleVerify (): void {
    const every = this.vm.verifyIntervalMs
    if (every === undefined || !this.running) return
    this.verifyTimer = this.components.clock.setTimeout(() => {
      void (async () => {
        for (const s of [...this.senders.values()]) {
          if (!this.running) return
          try {
            const r = await s.verify(true, every)
            if (r.mismatchedBlocks > 0) this.components.log.warn({ vm: this.name, target: s.target, mismatchedBlocks: r.mismatchedBlocks }, 'periodic verify found blocks that differ; they are being resent')
            else this.components.log.info({ vm: this.name, target: s.target }, 'periodic verify: replica identical')
          } catch (err) {
            this.components.log.info({ vm: this.name, target: s.target, err: errorMessage(err) }, 'periodic verify skipped')
          }
        }
      })().finally(() => { this.scheduleVerify() })
    }, every)
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    this.components.scanBudget?.unregister(this.name)
    this.components.clock.clearTimeout(this.verifyTimer)
    await Promise.all([...this.senders.values()].map(async s => { await s.stop() }))
    this.senders.clear()
    await this.tracker?.stop()
    this.tracker = undefined
    await this.told?.stop()
    this.notify()
    await this.bumping
    await this.dirty.close()
  }

  /** Applies a reloaded VM config: targets added or removed (files and grain need a restart). */
  async reconfigure (vm: VmConfig): Promise<void> {
    this.vm = vm
    for (const t of [...this.senders.keys()]) {
      if (!vm.replicateTo.includes(t)) {
        await this.senders.get(t)?.stop()
        this.senders.delete(t)
        await this.dirty.removeTarget(t)
        await this.books.removeTarget(t)
        this.components.metrics?.replication.forget(this.name, t)
      }
    }
    for (const t of vm.replicateTo) if (!this.senders.has(t)) await this.addTarget(t)
  }

  private async addTarget (t: string): Promise<void> {
    if (!this.dirty.targets().includes(t)) {
      await this.dirty.addTarget(t, (f) => this.hashScan.nonZeroRanges(f))
      await this.books.setTarget(t, { acked: 0, inFlight: null })
    }
    const { clock, log, dial, limiterFor, metrics } = this.components
    const s = new TargetSender({
      clock,
      log,
      source: this,
      dial,
      ...(limiterFor !== undefined ? { limiter: limiterFor(t, this.name) } : {}),
      ...(metrics !== undefined ? { metrics } : {})
    }, { target: t, nodeName: this.init.nodeName })
    this.senders.set(t, s)
    s.start()
  }

  /** Forgets what `t` holds: it gets every non-zero block again (or every block, `all`). */
  async resetTarget (t: string, all: boolean): Promise<void> {
    await this.dirty.removeTarget(t)
    await this.dirty.addTarget(t, all ? undefined : (f) => this.hashScan.nonZeroRanges(f))
  }

  private async onScan (e: ChangeEvent): Promise<void> {
    this.scanBusy = Math.max(0, this.scanBusy - 1)
    this.scanSeq++
    const told = this.told instanceof ToldSourceRunner ? this.told : undefined
    if ('error' in e) {
      told?.afterRound(e.file, false, false)
      this.components.log.warn({ vm: this.name, file: e.file, err: errorMessage(e.error) }, 'scan failed; retried at the next interval')
      this.notify()
      return
    }
    const began = this.captureStarting.get(e.file)
    if (began !== undefined) this.captureStart.set(e.file, began)
    const started = this.scanStarted.get(e.file)
    const why = this.told?.gapReason(e.file)
    this.components.log.debug({ vm: this.name, file: e.file, source: this.told?.lastAnswer(e.file) ?? 'hash-scan', ...(why !== undefined ? { why } : {}), changedRanges: e.set.ranges.length, scannedBytes: e.set.scannedBytes, consistent: e.set.consistent, full: e.set.full, scanMs: started !== undefined ? Math.round(this.components.clock.now() - started) : null }, 'scan')
    const prevSize = this.sizes.get(e.file)
    this.sizes.set(e.file, e.set.fileSize)
    this.scanned.add(e.file)
    if (e.set.ranges.length > 0 || prevSize !== e.set.fileSize) {
      const run = this.bumping.then(async () => { await this.books.bump(this.components.clock.wallNow(), e.set.consistent, undefined, this.capturedThroughMs()) })
      this.bumping = run.catch((err: unknown) => { this.components.log.error({ vm: this.name, err: errorMessage(err) }, 'could not record a generation') })
      await this.bumping
    }
    // the point's changes are in the dirty maps (and its generation recorded): senders may read it
    told?.afterRound(e.file, true, e.set.consistent)
    this.notify()
  }

  /**
   * A lease on the consistent point a fleeced disk is read from (told-source-runner.ts), for one
   * generation; undefined: read the live file.
   */
  async leasePoint (file: string, maxWaitMs: number, signal?: AbortSignal): Promise<PointLease | undefined> {
    return this.told instanceof ToldSourceRunner ? await this.told.lease(file, maxWaitMs, signal) : undefined
  }

  async consistencyPoint (): Promise<number> {
    let g = 0
    const run = this.bumping.then(async () => { g = await this.books.bump(this.components.clock.wallNow(), true, undefined, this.capturedThroughMs()) })
    this.bumping = run.catch((err: unknown) => { this.components.log.error({ vm: this.name, err: errorMessage(err) }, 'could not record a generation') })
    await run
    this.components.log.info({ vm: this.name, generation: g }, 'consistency point: the files are settled and unchanged since a fuzzy generation')
    this.notify()
    return g
  }

  /** Scans every file now (tests, verify) and waits until the results are recorded. */
  async scanAll (): Promise<void> {
    const t = this.tracker
    if (t === undefined) return
    for (const f of this.files) await t.scanNow(f.path)
    await this.bumping
  }

  /** Resolves at the next scan result or generation change (or after `ms`). */
  async changed (ms: number, signal?: AbortSignal): Promise<void> {
    // an abort that came first fires no event: without this, a stopping sender waited out `ms`
    // (forever under a virtual clock, which is how it was found: consistency-point.test.ts)
    if (signal?.aborted === true) return
    await new Promise<void>((resolve) => {
      const t = this.components.clock.setTimeout(finish, ms)
      const onAbort = (): void => { finish() }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.waiters.push(finish)
      const self = this
      function finish (): void {
        self.components.clock.clearTimeout(t)
        signal?.removeEventListener('abort', onAbort)
        // a timeout or an abort leaves the list at once (not at the next notify)
        const i = self.waiters.indexOf(finish)
        if (i >= 0) self.waiters.splice(i, 1)
        resolve()
      }
    })
  }

  /** Callers waiting in changed() now (tests step virtual time while a sender waits, not while it reads). */
  get waiting (): number { return this.waiters.length }

  notify (): void {
    const w = this.waiters
    this.waiters = []
    for (const fn of w) fn()
  }

  sender (t: string): TargetSender | undefined { return this.senders.get(t) }

  /**
   * Every write to the VM's files before this wall time has been captured (is in the current
   * generation or earlier): the oldest start among each file's last completed scan. Undefined
   * until every file has been scanned since this daemon started.
   */
  capturedThroughMs (): number | undefined {
    let t = Infinity
    for (const f of this.files) {
      const s = this.captureStart.get(f.path)
      if (s === undefined) return undefined
      t = Math.min(t, s)
    }
    return Number.isFinite(t) ? t : undefined
  }

  status (): VmStatus {
    return {
      name: this.name,
      owner: this.init.nodeName,
      epoch: 0,
      runningHere: false,
      generation: this.generation,
      targets: [...this.senders.values()].map(s => s.status()),
      replica: null,
      rpoTargetMs: this.vm.rpoMs,
      capture: this.captureStatus()
    }
  }

  /** The change source in use and the RPO it can promise under the host's scan budget. */
  captureStatus (): CaptureStatus {
    let bytes = 0
    for (const f of this.files) bytes += this.sizes.get(f.path) ?? 0
    const budget = this.components.scanBudget
    const rate = budget?.rateBytesPerSec ?? Infinity
    const share = budget?.shareBytesPerSec() ?? Infinity
    return {
      source: this.told === undefined ? 'hash-scan' : this.told.kind === 'rct' ? 'told' : 'qemu-bitmap',
      ...(this.told !== undefined ? this.told.status() : {}),
      scanBytes: bytes,
      scanBudgetBytesPerSec: Number.isFinite(rate) ? rate : null,
      scanShareBytesPerSec: Number.isFinite(share) ? Math.round(share) : null,
      rpoBoundMs: scanRpoBoundMs(bytes, share, this.vm.scanIntervalMs)
    }
  }
}
