/**
 * The QEMU dirty-bitmap change source of one VM: a QemuBitmapTracker per disk, driven from the
 * change tracker's rounds, feeding a ToldScanSource (storage/changes/told-scan.ts) that keeps
 * the hash scan's manifest true and falls back to the hash scan on a gap.
 *
 * Flow of one round for a disk (ToldProducer.beforeAnswer):
 *   QMP socket (vms[].qmp, else the qemu driver's record of the VM) ─ none, or nothing answers
 *     ─▶ not live: the hash scan answers (a VM that is off changes nothing: the stat check makes
 *        that free); the tracker is dropped, so the next live round starts a new chain
 *   first live round ─▶ find the image's format node (query-block), start the tracker (a
 *        bitmap, chain since = null: the told source answers in full = one hash scan)
 *   every live round ─▶ rotate (QMP transaction + NBD block status): the ranges are told; a
 *        lost bitmap (QEMU restarted) restarts the chain inside the tracker (one hash scan again)
 * One QMP connection per VM and round (qmp-session.ts; dropped after the round, because a QMP
 * monitor serves one client at a time and the qemu driver or an operator may need it), and
 * the dirty map read in-process (nbd-map.ts): no process per round, one QMP handshake. Bitmaps are added
 * at the VM's block size (bitmapGranularity), so a VM at `blockSize: 4KiB` reads 4 KiB per
 * 4 KiB written, not QEMU's default 64 KiB.
 * Other files of the VM (configuration, NVRAM) are not written through QEMU's block layer:
 * the hash scan answers for them.
 *
 * Fleecing (one-disk VMs, `fleece: true`, the default): the disk's round is a QemuPointCapture
 * instead (qemu-fleece.ts): one QMP transaction rotates the bitmap and starts copy-before-write
 * into a scratch qcow2, so the point is the disk at that instant. The point is held (PointGate,
 * point-gate.ts) until the next round: the told answer's layout is read from it, and the
 * senders read every pending range of the disk from it, so each generation is consistent. A
 * round waits until no sender reads the held point, releases it, and takes the next one.
 * Most rounds take the point by copy instead (qemu-fleece.ts copyPoint, budget `pointCopyBudget`):
 * the changed blocks read while no guest write completes, kept in memory (point-copy.ts); a
 * sender whose pending ranges the copy does not hold (a target further behind) reads the live
 * file for that generation, which is then fuzzy.
 * Only a disk whose file keeps its size is fleeced (raw, fixed VHD/VHDX: see checkFleeceable);
 * QEMU refusing fleecing (an old QEMU, a job on the node) → plain bitmaps for that disk, fuzzy
 * generations, logged once; the guest is never paused by the daemon (the pause fallback of
 * QemuPointCapture would hold the guest stopped for as long as a sender reads).
 * Without fleecing, generations are fuzzy: the data is read from the live file after the rotation.
 */
import { createHash } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { Clock } from '../../common/clock.ts'
import { errorMessage } from '../../common/errors.ts'
import type { VmConfig } from '../../config/load.ts'
import { HashScanSource, ToldRangesSource, type ChangeOptions, type ChangeSet, type ChangeSource, type ChangeToken } from '../../storage/changes/index.ts'
import { ToldScanSource, type AnswerKind } from '../../storage/changes/told-scan.ts'
import { mkdir } from 'node:fs/promises'
import { fileMayGrow, readDiskLayout, type LayoutSnapshot } from '../../storage/formats/layout.ts'
import type { Range } from '../../storage/changes/range.ts'
import { QemuBitmapTracker, bitmapGranularity, formatNodeOf, type DirtyMapReader } from '../hypervisor/qemu-bitmaps.ts'
import { FleecingRefusedError, QemuPointCapture, type PointCapture, type PointStats } from '../hypervisor/qemu-fleece.ts'
import { PointCopy, copyPlan } from '../hypervisor/point-copy.ts'
import { removeStaleJobsAndNodes, removedAny, type StaleRemoved } from '../hypervisor/qemu-stale.ts'
import type { CommandRunner } from '../hypervisor/run.ts'
import { PointGate, type HeldPoint, type PointLease } from './point-gate.ts'
import type { QmpReply } from '../hypervisor/qmp.ts'
import { QmpSession } from '../hypervisor/qmp-session.ts'
import type { Logger } from '../log.ts'

/** Which change source a VM uses on this node. */
export type ChangeSourceKind = 'hash-scan' | 'qemu-bitmap' | 'hyperv-rct'

/**
 * `changeSource: auto` means bitmaps when QEMU can be reached for the VM: a `qmp` socket is
 * configured, or the `qemu` driver runs VMs here (rounds while it does not run this one use the
 * hash scan). `rct` is explicit only (rct-source-runner.ts): it has not run on a real Hyper-V host.
 */
export function changeSourceKind (vm: Pick<VmConfig, 'changeSource' | 'qmpPath'>, driver: string): ChangeSourceKind {
  if (vm.changeSource === 'scan') return 'hash-scan'
  if (vm.changeSource === 'qemu-bitmap') return 'qemu-bitmap'
  if (vm.changeSource === 'rct') return driver === 'hyperv' ? 'hyperv-rct' : 'hash-scan'
  return vm.qmpPath !== undefined || driver === 'qemu' ? 'qemu-bitmap' : 'hash-scan'
}

export interface ToldRunnerComponents {
  clock: Clock
  log: Logger
  hashScan: HashScanSource
  /** The VM's QMP socket now (undefined: QEMU does not run it here). */
  qmpSocket: () => Promise<string | undefined>
  /** Reads a bitmap's dirty extents. @default nbdDirtyMap (in-process NBD block status) */
  map?: DirtyMapReader
  /** The QMP connection to a socket. @default a QmpSession (one long-lived connection) */
  qmpSession?: (socket: string) => QmpLink
  /** Runs qemu-img (fleecing scratch images). @default defaultRunner */
  run?: CommandRunner
}

/** What the runner needs of a QMP connection (QmpSession; a fake in tests). */
export interface QmpLink {
  command: (command: string, args?: Record<string, unknown>, signal?: AbortSignal) => Promise<QmpReply>
  /** Frees the monitor until the next command. */
  disconnect: () => Promise<void>
  close: () => void
}

export interface ToldRunnerInit {
  vm: string
  /** The VM's disk images (absolute). */
  disks: string[]
  blockSizeBytes: number
  /** Per QMP command. @default 10000 */
  qmpTimeoutMs?: number
  /**
   * Fleece the disk (one consistent point per round) with scratch images in this folder; only
   * for a VM with one disk (points of several disks would be different instants).
   * @default undefined (fuzzy generations)
   */
  fleeceScratchDir?: string
  /**
   * Budget of a fleeced disk's copied points (qemu-fleece.ts copyPoint): a round whose changed
   * blocks fit is a point read while no guest write completes, kept in memory (0: every point
   * is a fleecing job). @default 16 MiB
   */
  copyMaxBytes?: number
}

/** @see ToldRunnerInit.copyMaxBytes */
export const DEFAULT_COPY_MAX_BYTES = 16 * 1024 * 1024

export interface ToldRunnerStatus {
  /** A QMP socket answered at the last round. */
  live: boolean
  /** Answers made by the hash scan (a gap in the bitmap chain, or the VM not running under QEMU). */
  scanAnswers: number
  /** Answers from bitmaps. */
  toldAnswers: number
  /** Generations are read from fleecing points (consistent); false: from the live file (fuzzy). */
  fleecing?: boolean
  /** How the fleeced disk's points were taken (copied, fleecing jobs, copies lost to a write). */
  points?: PointStats
}

interface DiskState {
  tracker: QemuBitmapTracker | null
  socket: string | null
  /** Fleecing: the point capture (instead of the tracker), its held point, and why it was given up. */
  capture: QemuPointCapture | null
  gate: PointGate
  /** The point the round taking place replaces (released at the round's start). */
  replacing: { point: HeldPoint, ok: boolean } | null
  view: PointCapture['view'] | undefined
  fleeceRefused: string | null
  /** The fixed file's layout (read when fleecing was checked): copied points map through it. */
  layout: LayoutSnapshot | null
}

/**
 * The change source a told runner hands to VmSource: its own disks go through the told source
 * (answered from told ranges, or by a hash scan when told cannot), any other file straight to
 * the hash scan; `counted` hears which kind answered (a scan that read nothing is not counted).
 */
export function routedSource (disks: { has: (file: string) => boolean }, scan: ToldScanSource, hashScan: ChangeSource, counted: (kind: 'told' | 'scan') => void): ChangeSource {
  return {
    changes: async (file: string, since: ChangeToken | null, opts?: ChangeOptions): Promise<ChangeSet> => {
      if (!disks.has(resolve(file))) return await hashScan.changes(file, since, opts)
      const set = await scan.changes(file, since, opts)
      if (scan.lastAnswer(file) === 'told') counted('told')
      else if (set.scannedBytes > 0) counted('scan')
      return set
    }
  }
}

export class ToldSourceRunner {
  readonly kind = 'qemu-bitmap' as const
  /** The VM's change source: told (with the hash scan behind it) for disks, the hash scan for other files. */
  readonly source: ChangeSource
  private readonly scan: ToldScanSource
  private readonly disks = new Map<string, DiskState>()
  private live = false
  /** The VM's one QMP connection, and the socket it is for. */
  private link: { socket: string, qmp: QmpLink } | null = null
  private readonly granularity: number
  private scanAnswers = 0
  private toldAnswers = 0

  constructor (private readonly components: ToldRunnerComponents, private readonly init: ToldRunnerInit) {
    for (const d of init.disks) this.disks.set(resolve(d), { tracker: null, socket: null, capture: null, gate: new PointGate(components.clock), replacing: null, view: undefined, fleeceRefused: null, layout: null })
    this.granularity = bitmapGranularity(init.blockSizeBytes)
    const told = new ToldRangesSource({}, { blockSizeBytes: init.blockSizeBytes })
    this.scan = new ToldScanSource({
      told,
      hashScan: components.hashScan,
      producer: {
        beforeAnswer: async (file, signal) => await this.round(file, told, signal),
        view: (file) => this.disks.get(resolve(file))?.view
      }
    })
    this.source = routedSource(this.disks, this.scan, components.hashScan, (kind) => { if (kind === 'told') this.toldAnswers++; else this.scanAnswers++ })
  }

  /** How the last answer for `file` was made (undefined before the first). */
  lastAnswer (file: string): AnswerKind | undefined { return this.scan.lastAnswer(resolve(file)) }

  /** Why the last answer for `file` was a gap scan (logs). */
  gapReason (file: string): string | undefined { return this.scan.gapReason(resolve(file)) }

  status (): ToldRunnerStatus {
    const captures = [...this.disks.values()].flatMap(d => d.capture !== null ? [d.capture] : [])
    return { live: this.live, scanAnswers: this.scanAnswers, toldAnswers: this.toldAnswers, fleecing: captures.length > 0, ...(captures[0] !== undefined ? { points: { ...captures[0].stats } } : {}) }
  }

  private fleeces (d: DiskState): boolean { return this.init.fleeceScratchDir !== undefined && this.disks.size === 1 && d.fleeceRefused === null }

  /**
   * Before a change round of `file` (ahead of the scan counters, so a round waiting here is not
   * a busy scan): waits until no sender reads the disk's held point. The caller ends the round
   * with afterRound(), also when it fails.
   */
  async beforeRound (file: string, signal?: AbortSignal): Promise<void> {
    const d = this.disks.get(resolve(file))
    if (d === undefined || !this.fleeces(d)) return
    const prev = await d.gate.beginRound(signal)
    if (prev !== null) d.replacing = prev
  }

  /** The round's answer was recorded in the dirty maps (recorded) and was one instant (consistent). */
  afterRound (file: string, recorded: boolean, consistent: boolean): void {
    this.disks.get(resolve(file))?.gate.endRound(recorded, consistent)
  }

  /**
   * A lease on the disk's point for one generation: every pending range of `file` read from it
   * is that instant. Undefined (read the live file: fuzzy) without a consistent recorded point,
   * or when a round does not end within `maxWaitMs`.
   */
  async lease (file: string, maxWaitMs: number, signal?: AbortSignal): Promise<PointLease | undefined> {
    const d = this.disks.get(resolve(file))
    if (d === undefined || d.capture === null) return undefined
    return await d.gate.lease(maxWaitMs, signal)
  }

  /** Removes our bitmaps and fleecing points (QEMU drops them anyway when it exits). */
  async stop (): Promise<void> {
    for (const d of this.disks.values()) {
      const t = d.tracker
      d.tracker = null
      await t?.stop().catch(() => {})
      await this.dropPoint(d, false)
    }
    this.link?.qmp.close()
    this.link = null
  }

  /** The VM's QMP connection to `socket` (a new one when the socket changed). */
  private qmpLink (socket: string): QmpLink {
    if (this.link?.socket === socket) return this.link.qmp
    this.link?.qmp.close()
    const qmp = this.components.qmpSession?.(socket) ?? new QmpSession({ clock: this.components.clock }, { socket, timeoutMs: this.init.qmpTimeoutMs ?? 10_000 })
    this.link = { socket, qmp }
    return qmp
  }

  /** One producer round for `file`: false when QEMU cannot be reached for it. */
  private async round (file: string, told: ToldRangesSource, signal?: AbortSignal): Promise<boolean> {
    const d = this.disks.get(resolve(file))
    if (d === undefined) return false
    // the point this round replaces: nobody reads it now (beforeRound), and its changes were recorded or not
    const prev = d.replacing
    d.replacing = null
    d.view = undefined
    if (prev !== null) await prev.point.release(prev.ok).catch((err: unknown) => { this.components.log.warn({ vm: this.init.vm, file, err: errorMessage(err) }, 'could not release a fleecing point') })
    const socket = await this.components.qmpSocket()
    if (socket === undefined) return await this.notLive(d, file, 'no QMP socket for the VM')
    const link = this.qmpLink(socket)
    const qmp = async (command: string, args?: Record<string, unknown>): Promise<QmpReply> => await link.command(command, args, signal)
    try {
      if (this.fleeces(d) && d.capture === null) await this.checkFleeceable(d, file)
      if (this.fleeces(d)) {
        await this.fleeceRound(d, file, told, socket, link, signal)
      } else {
        if (d.tracker === null || d.socket !== socket) {
          // what an earlier process left (a held fleecing point hides the image from query-block)
          const stale = await removeStaleJobsAndNodes(qmp, { prefix: 'vmesh' }, async (ms) => { await this.components.clock.sleep(ms, signal) })
          if (removedAny(stale)) this.staleRemoved(file)(stale)
          const node = await formatNodeOf(qmp, file)
          d.tracker = new QemuBitmapTracker({
            clock: this.components.clock,
            qmp: async (c, a) => await link.command(c, a),
            told,
            ...(this.components.map !== undefined ? { map: this.components.map } : {}),
            onStaleRemoved: this.staleRemoved(file)
          }, { file: resolve(file), node, nbdSocket: nbdSocketFor(socket), granularityBytes: this.granularity })
          d.socket = socket
          this.components.log.info({ vm: this.init.vm, file, blockNode: node }, 'QEMU dirty bitmap started; one hash scan, then bitmaps')
        }
        await d.tracker.rotate(signal)
      }
    } catch (err) {
      await link.disconnect().catch(() => {})
      if (signal?.aborted === true) throw err
      if (err instanceof FleecingRefusedError) {
        // this QEMU cannot fleece the disk: plain bitmaps from the next round on (fuzzy generations)
        d.fleeceRefused = errorMessage(err)
        this.components.log.warn({ vm: this.init.vm, file, err: d.fleeceRefused }, 'QEMU refused fleecing; generations of this disk are read from the live file (fuzzy)')
      } else if (!unreachable(err)) {
        // Unreachable is normal (the VM is off); anything else (an NBD protocol error, QEMU does not
        // hold this file, an odd answer) is worth a warning — either way this round is answered
        // by the hash scan rather than not at all, and the next one starts a new chain.
        this.components.log.warn({ vm: this.init.vm, file, err: errorMessage(err) }, 'dirty bitmap round failed; the hash scan answers')
      }
      return await this.notLive(d, file, errorMessage(err))
    }
    await link.disconnect().catch(() => {})
    this.live = true
    return true
  }

  /**
   * Fleecing needs a file that keeps its size while a point is held: QEMU 7.2's copy-before-write
   * sizes its bitmaps to the file at the point and aborts the whole VM (hbitmap_set: `last <
   * hb->size`) when the guest's write allocates a block past that end — as a dynamic VHD or
   * VHDX does. So only raw files and fixed images are fleeced; a dynamic one stays fuzzy.
   */
  private async checkFleeceable (d: DiskState, file: string): Promise<void> {
    let why: string | null
    try {
      const snap = await readDiskLayout(file)
      why = fileMayGrow(snap) ? 'the file grows as the guest writes (a dynamic image, or a fixed VHDX with blocks not yet present), and QEMU aborts when a fleeced file grows' : null
      d.layout = why === null ? snap : null
    } catch (err) {
      why = `its layout cannot be read: ${errorMessage(err)}`
    }
    if (why === null) return
    d.fleeceRefused = why
    this.components.log.info({ vm: this.init.vm, file, why }, 'not fleecing this disk; its generations are read from the live file (fuzzy)')
  }

  /** A fleecing round: the next point of the disk, told and held (beforeRound released the last). */
  private async fleeceRound (d: DiskState, file: string, told: ToldRangesSource, socket: string, link: QmpLink, signal?: AbortSignal): Promise<void> {
    const scratchDir = this.init.fleeceScratchDir as string
    if (d.capture === null || d.socket !== socket) {
      await d.capture?.stop().catch(() => {})
      await mkdir(scratchDir, { recursive: true })
      const copy = this.copyPlan(d)
      d.capture = new QemuPointCapture({
        clock: this.components.clock,
        qmp: async (c, a) => await link.command(c, a),
        told,
        ...(this.components.map !== undefined ? { map: this.components.map } : {}),
        ...(this.components.run !== undefined ? { run: this.components.run } : {}),
        onStaleRemoved: this.staleRemoved(file)
      }, { file: resolve(file), nbdSocket: nbdSocketFor(socket), scratchDir, mode: 'fleece', granularityBytes: this.granularity, ...(copy !== undefined ? { copy } : {}) })
      d.socket = socket
      this.components.log.info({ vm: this.init.vm, file }, 'QEMU dirty bitmap with fleecing started; one hash scan, then consistent points')
    }
    const point = await d.capture.capture(signal)
    d.gate.hold(point)
    d.view = point.view
  }

  /** Copied points (qemu-fleece.ts copyPoint) of the fixed file, unless the budget is 0. */
  private copyPlan (d: DiskState): { plan: (virtual: Range[]) => Range[] | null, cache: PointCopy } | undefined {
    const max = this.init.copyMaxBytes ?? DEFAULT_COPY_MAX_BYTES
    const plan = max > 0 && d.layout !== null ? copyPlan(d.layout, this.init.blockSizeBytes) : null
    return plan === null ? undefined : { plan, cache: new PointCopy(this.init.blockSizeBytes, max) }
  }

  /** Logs what an earlier daemon process left in QEMU for `file` and was removed (qemu-stale.ts). */
  private staleRemoved (file: string): (r: StaleRemoved) => void {
    return (r) => { this.components.log.warn({ vm: this.init.vm, file, ...r }, 'removed what an earlier daemon process left in QEMU') }
  }

  /** Releases the disk's held point (stop, QEMU gone) and forgets the capture. */
  private async dropPoint (d: DiskState, ok: boolean): Promise<void> {
    const held = d.gate.drop()
    const prev = d.replacing
    d.replacing = null
    d.view = undefined
    for (const p of [prev, held]) if (p !== null) await p.point.release(ok && p.ok).catch(() => {})
    const c = d.capture
    d.capture = null
    await c?.stop().catch(() => {})
  }

  private async notLive (d: DiskState, file: string, why: string): Promise<false> {
    if (d.tracker !== null || d.capture !== null) this.components.log.info({ vm: this.init.vm, file, why }, 'QEMU unreachable; the hash scan answers until it is back (then a new bitmap chain)')
    await d.tracker?.stop().catch(() => {})
    if (d.capture !== null) await this.dropPoint(d, false)
    await this.link?.qmp.disconnect().catch(() => {})
    d.tracker = null
    d.socket = null
    this.live = false
    return false
  }
}

/**
 * The NBD server's socket: beside the QMP socket (QEMU can create files there), or in the
 * temp folder when that path is too long for a unix socket. Stable per QMP socket, so a
 * restarted daemon finds the server it started.
 */
function nbdSocketFor (qmpSocket: string): string {
  const p = `${qmpSocket}.nbd`
  if (Buffer.byteLength(p) <= 100) return p
  return join(tmpdir(), `vmesh-nbd-${createHash('sha256').update(qmpSocket).digest('hex').slice(0, 16)}.sock`)
}

/** Nobody listens on the socket (QEMU not running), or it went away mid-command. */
function unreachable (err: unknown): boolean {
  const code = (err as { code?: unknown }).code
  if (code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'EPIPE') return true
  return code === 'ERR_HYPERVISOR_BAD_OUTPUT' && /socket closed early/.test(errorMessage(err))
}
