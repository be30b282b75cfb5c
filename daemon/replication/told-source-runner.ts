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
 *   every live round ─▶ rotate (QMP transaction + nbdinfo): the ranges are told; a lost bitmap
 *        (QEMU restarted) restarts the chain inside the tracker (one hash scan again)
 * Other files of the VM (configuration, NVRAM) are not written through QEMU's block layer:
 * the hash scan answers for them.
 *
 * Generations are fuzzy: the data is read from the live file after the rotation (no fleecing).
 */
import { createHash } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { Clock } from '../../common/clock.ts'
import { errorMessage } from '../../common/errors.ts'
import type { VmConfig } from '../../config/load.ts'
import { HashScanSource, ToldRangesSource, type ChangeOptions, type ChangeSet, type ChangeSource, type ChangeToken } from '../../storage/changes/index.ts'
import { ToldScanSource, type AnswerKind } from '../../storage/changes/told-scan.ts'
import { QemuBitmapTracker, formatNodeOf } from '../hypervisor/qemu-bitmaps.ts'
import { qmpCommand, type QmpReply } from '../hypervisor/qmp.ts'
import type { CommandRunner } from '../hypervisor/run.ts'
import type { Logger } from '../log.ts'

/** Which change source a VM uses on this node. */
export type ChangeSourceKind = 'hash-scan' | 'qemu-bitmap'

/**
 * `changeSource: auto` means bitmaps when QEMU can be reached for the VM: a `qmp` socket is
 * configured, or the `qemu` driver runs VMs here (rounds while it does not run this one use the
 * hash scan).
 */
export function changeSourceKind (vm: Pick<VmConfig, 'changeSource' | 'qmpPath'>, driver: string): ChangeSourceKind {
  if (vm.changeSource === 'scan') return 'hash-scan'
  if (vm.changeSource === 'qemu-bitmap') return 'qemu-bitmap'
  return vm.qmpPath !== undefined || driver === 'qemu' ? 'qemu-bitmap' : 'hash-scan'
}

export interface ToldRunnerComponents {
  clock: Clock
  log: Logger
  hashScan: HashScanSource
  /** The VM's QMP socket now (undefined: QEMU does not run it here). */
  qmpSocket: () => Promise<string | undefined>
  /** Runs nbdinfo. @default defaultRunner */
  run?: CommandRunner
}

export interface ToldRunnerInit {
  vm: string
  /** The VM's disk images (absolute). */
  disks: string[]
  blockSizeBytes: number
  /** Per QMP command. @default 10000 */
  qmpTimeoutMs?: number
}

export interface ToldRunnerStatus {
  /** A QMP socket answered at the last round. */
  live: boolean
  /** Answers made by the hash scan (a gap in the bitmap chain, or the VM not running under QEMU). */
  scanAnswers: number
  /** Answers from bitmaps. */
  toldAnswers: number
}

interface DiskState { tracker: QemuBitmapTracker | null, socket: string | null }

export class ToldSourceRunner {
  /** The VM's change source: told (with the hash scan behind it) for disks, the hash scan for other files. */
  readonly source: ChangeSource
  private readonly scan: ToldScanSource
  private readonly disks = new Map<string, DiskState>()
  private live = false
  private scanAnswers = 0
  private toldAnswers = 0

  constructor (private readonly components: ToldRunnerComponents, private readonly init: ToldRunnerInit) {
    for (const d of init.disks) this.disks.set(resolve(d), { tracker: null, socket: null })
    const told = new ToldRangesSource({}, { blockSizeBytes: init.blockSizeBytes })
    this.scan = new ToldScanSource({ told, hashScan: components.hashScan, producer: { beforeAnswer: async (file, signal) => await this.round(file, told, signal) } })
    this.source = {
      changes: async (file: string, since: ChangeToken | null, opts?: ChangeOptions): Promise<ChangeSet> => {
        if (!this.disks.has(resolve(file))) return await components.hashScan.changes(file, since, opts)
        const set = await this.scan.changes(file, since, opts)
        if (this.scan.lastAnswer(file) === 'told') this.toldAnswers++
        else if (set.scannedBytes > 0) this.scanAnswers++
        return set
      }
    }
  }

  /** How the last answer for `file` was made (undefined before the first). */
  lastAnswer (file: string): AnswerKind | undefined { return this.scan.lastAnswer(resolve(file)) }

  status (): ToldRunnerStatus { return { live: this.live, scanAnswers: this.scanAnswers, toldAnswers: this.toldAnswers } }

  /** Removes our bitmaps (QEMU drops them anyway when it exits). */
  async stop (): Promise<void> {
    for (const d of this.disks.values()) {
      const t = d.tracker
      d.tracker = null
      await t?.stop().catch(() => {})
    }
  }

  /** One producer round for `file`: false when QEMU cannot be reached for it. */
  private async round (file: string, told: ToldRangesSource, signal?: AbortSignal): Promise<boolean> {
    const d = this.disks.get(resolve(file))
    if (d === undefined) return false
    const socket = await this.components.qmpSocket()
    if (socket === undefined) return await this.notLive(d, file, 'no QMP socket for the VM')
    const qmp = async (command: string, args?: Record<string, unknown>): Promise<QmpReply> =>
      await qmpCommand(socket, command, args, { clock: this.components.clock, timeoutMs: this.init.qmpTimeoutMs ?? 10_000, ...(signal !== undefined ? { signal } : {}) })
    try {
      if (d.tracker === null || d.socket !== socket) {
        const node = await formatNodeOf(qmp, file)
        d.tracker = new QemuBitmapTracker({ clock: this.components.clock, qmp, told, ...(this.components.run !== undefined ? { run: this.components.run } : {}) }, { file: resolve(file), node, nbdSocket: nbdSocketFor(socket) })
        d.socket = socket
        this.components.log.info({ vm: this.init.vm, file, blockNode: node }, 'QEMU dirty bitmap started; one hash scan, then bitmaps')
      }
      await d.tracker.rotate(signal)
    } catch (err) {
      if (signal?.aborted === true) throw err
      // Unreachable is normal (the VM is off); anything else (nbdinfo missing, QEMU does not
      // hold this file, an odd answer) is worth a warning — either way this round is answered
      // by the hash scan rather than not at all, and the next one starts a new chain.
      if (!unreachable(err)) this.components.log.warn({ vm: this.init.vm, file, err: errorMessage(err) }, 'dirty bitmap round failed; the hash scan answers')
      return await this.notLive(d, file, errorMessage(err))
    }
    this.live = true
    return true
  }

  private async notLive (d: DiskState, file: string, why: string): Promise<false> {
    if (d.tracker !== null) this.components.log.info({ vm: this.init.vm, file, why }, 'QEMU unreachable; the hash scan answers until it is back (then a new bitmap chain)')
    await d.tracker?.stop().catch(() => {})
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
