/**
 * QEMU/KVM change capture through dirty bitmaps: QEMU records which bytes of a block node the
 * guest wrote; we rotate the bitmap per generation and read the old one through QEMU's NBD
 * server (`qemu:dirty-bitmap:` metadata context, read in-process by nbd-map.ts), then tell a
 * ToldRangesSource the ranges between the two reference points (the bitmaps' names).
 *
 * Flow of rotate():
 *   transaction { block-dirty-bitmap-add NEXT, block-dirty-bitmap-disable CUR }  (one instant)
 *   block-export-add (read-only NBD export of the node, exposing CUR) → block status → ranges
 *   block-export-del; block-dirty-bitmap-remove CUR; tell(since = last told point, until = NEXT)
 *   reading failed → block-dirty-bitmap-merge CUR into NEXT (nothing is lost: the next round
 *   reports it) and the chain point stays where it was.
 *   CUR missing (QEMU restarted, bitmap lost) → a new chain (since = null): the told source
 *   answers the next round in full (one hash scan), then bitmaps again.
 *
 * Granularity: every bitmap is added with `granularity` = the VM's block size (bitmapGranularity):
 * QEMU's default is the image's cluster size or 64 KiB, and with a VM at `blockSize: 4KiB` a
 * random 4 KiB write then still cost a 64 KiB read (the capture bench's 17× bytes read per
 * byte changed). Finer than the block size gains nothing (ranges are widened to blocks
 * downstream), coarser loses precision, so the two are the same number.
 *
 * The bitmap sits on the image's *format* node (vhdx/vpc), so its offsets are virtual-disk
 * offsets and ToldRangesSource maps them to the file (payload, BAT, bitmaps, headers, log,
 * footer: storage/formats/layout.ts). The protocol (file) node would give file offsets and see
 * the format's metadata writes directly, but it cannot be read: QEMU's NBD server unshares the
 * RESIZE permission on the node it exports, and the format driver of a dynamic VHD/VHDX holds
 * RESIZE on its file node to grow it ("Permission conflict on node 'file0'", tested with QEMU
 * 7.2) — and a bitmap on a file node is not visible through an export of the format node.
 *
 * Not done here: a consistent point in time (fleecing: qemu-fleece.ts); the data is read from
 * the live file, so generations are fuzzy (`consistent: false`).
 */
import { resolve } from 'node:path'
import { stat } from 'node:fs/promises'
import type { Clock } from '../../common/clock.ts'
import { errorMessage } from '../../common/errors.ts'
import type { Range } from '../../storage/changes/range.ts'
import type { Tell } from '../../storage/changes/told.ts'
import { HypervisorCommandFailedError, HypervisorOutputError, QemuNbdServerBusyError } from './errors.ts'
import { readNbdMap } from './nbd-map.ts'
import type { QmpReply } from './qmp.ts'
import { removeStaleBitmaps, removedAny, type StaleRemoved } from './qemu-stale.ts'

/** Reads the dirty extents of `bitmap` from `exportName` on the NBD server at `socket`. */
export type DirtyMapReader = (socket: string, exportName: string, bitmap: string, o: { timeoutMs: number, signal?: AbortSignal }) => Promise<Range[]>

/** The in-process NBD block-status reader (nbd-map.ts). */
export const nbdDirtyMap: DirtyMapReader = async (socket, exportName, bitmap, o) =>
  await readNbdMap(socket, exportName, `qemu:dirty-bitmap:${bitmap}`, o)

/** QEMU accepts a bitmap granularity that is a power of two from 512 B to 2 GiB. */
const MIN_GRANULARITY = 512
const MAX_GRANULARITY = 2 ** 31

/**
 * The dirty-bitmap granularity for a VM tracked in `blockSizeBytes` blocks: the block size
 * itself (a finer bitmap is widened to blocks anyway; a coarser one reads more than changed).
 * A value QEMU would refuse is a RangeError here, before any QMP command.
 */
export function bitmapGranularity (blockSizeBytes: number): number {
  if (!Number.isSafeInteger(blockSizeBytes) || blockSizeBytes < MIN_GRANULARITY || blockSizeBytes > MAX_GRANULARITY || (blockSizeBytes & (blockSizeBytes - 1)) !== 0) {
    throw new RangeError(`no QEMU dirty-bitmap granularity for a block size of ${blockSizeBytes} bytes (a power of two from 512 B to 2 GiB)`)
  }
  return blockSizeBytes
}

export interface QemuBitmapComponents {
  clock: Clock
  /** Runs one QMP command on the VM's monitor (e.g. qmpCommand bound to its socket). */
  qmp: (command: string, args?: Record<string, unknown>) => Promise<QmpReply>
  /** Where the ranges go (a ToldRangesSource). */
  told: { tell: (file: string, t: Tell) => void }
  /** Reads a bitmap's dirty extents. @default nbdDirtyMap */
  map?: DirtyMapReader
  /** Hears what an earlier process left in QEMU and start() removed (qemu-stale.ts). */
  onStaleRemoved?: (r: StaleRemoved) => void
}

export interface QemuBitmapInit {
  /** The image file, as the told source and the sender know it. */
  file: string
  /** The format node of the image in QEMU (the node the guest's device writes to). */
  node: string
  /** Unix socket of QEMU's NBD server (started here unless already running). */
  nbdSocket: string
  /** Prefix of our bitmap and export names. @default 'vmesh' */
  prefix?: string
  /** Bitmap granularity in bytes (bitmapGranularity of the VM's block size). @default QEMU's (the image's cluster size, else 64 KiB) */
  granularityBytes?: number
  /** Per dirty-map read. @default 30000 */
  timeoutMs?: number
}

/** A QMP command answered with an error. */
export class QmpCommandError extends HypervisorCommandFailedError {
  constructor (readonly command: string, readonly errorClass: string, desc: string) {
    super('qmp', null, desc, `qmp ${command}`)
  }
}

/**
 * Starts QEMU's NBD server on `socket`. QEMU holds one server at a time: "already running" is
 * fine when it is ours (a daemon restart finds its own server, whose socket is still there) and
 * a QemuNbdServerBusyError when another tool's server listens elsewhere — reading our socket
 * would otherwise fail every round with a connection error that says nothing of why.
 * Returns the reply (`started`: this call started it); other errors are left to the caller.
 */
export async function ensureNbdServer (qmp: (cmd: string, args?: Record<string, unknown>) => Promise<QmpReply>, socket: string): Promise<QmpReply & { started: boolean }> {
  const r = await qmp('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } })
  if (r.error === undefined) return { ...r, started: true }
  if (!/already running/i.test(r.error.desc ?? '')) return { ...r, started: false }
  const ours = await stat(socket).then(st => st.isSocket(), () => false)
  if (!ours) throw new QemuNbdServerBusyError(socket)
  return { started: false }
}

/** A QMP reply's error as the typed QmpCommandError. */
export function qmpFailure (command: string, r: QmpReply): QmpCommandError {
  return new QmpCommandError(command, r.error?.class ?? 'GenericError', r.error?.desc ?? errorMessage(r.error))
}

/** Runs a QMP command and returns its `return`, or throws its error as QmpCommandError. */
export async function qmpOk (qmp: (command: string, args?: Record<string, unknown>) => Promise<QmpReply>, command: string, args: Record<string, unknown>): Promise<unknown> {
  const r = await qmp(command, args)
  if (r.error !== undefined) throw qmpFailure(command, r)
  return r.return
}

export class QemuBitmapTracker {
  private current: string | null = null
  /** The last reference point told (null: no chain). */
  private told: string | null = null
  private seq = 0
  private readonly epoch: string
  private readonly prefix: string

  constructor (private readonly components: QemuBitmapComponents, private readonly init: QemuBitmapInit) {
    this.prefix = init.prefix ?? 'vmesh'
    this.epoch = Math.round(components.clock.wallNow()).toString(36)
  }

  /** The bitmap recording writes now (null before start()). */
  get bitmap (): string | null { return this.current }

  /**
   * Starts the NBD server if needed and a new chain: a fresh bitmap, told as `since: null`. An
   * earlier process's bitmaps on the node go first (they would record writes forever).
   */
  async start (): Promise<void> {
    const r = await ensureNbdServer(this.components.qmp, this.init.nbdSocket)
    if (r.error !== undefined) this.fail('nbd-server-start', r)
    const stale = await removeStaleBitmaps(this.components.qmp, { prefix: this.prefix, keepEpoch: this.epoch, formatNode: this.init.node })
    if (removedAny(stale)) this.components.onStaleRemoved?.(stale)
    const name = this.nextName()
    await this.ok('block-dirty-bitmap-add', this.addArgs(name))
    this.current = name
    this.told = name
    this.components.told.tell(this.init.file, { since: null, until: name, ranges: [], space: 'virtual' })
  }

  /**
   * Closes the current bitmap at this instant, opens the next, and tells the told source what the
   * closed one recorded. Returns the ranges told (empty when the chain restarted).
   */
  async rotate (signal?: AbortSignal): Promise<Range[]> {
    const cur = this.current
    if (cur === null) { await this.start(); return [] }
    const next = this.nextName()
    const t = await this.components.qmp('transaction', {
      actions: [
        { type: 'block-dirty-bitmap-add', data: this.addArgs(next) },
        { type: 'block-dirty-bitmap-disable', data: { node: this.init.node, name: cur } }
      ]
    })
    if (t.error !== undefined) {
      if (/not found/i.test(t.error.desc ?? '')) {
        // QEMU (or the VM) restarted: what was written meanwhile is unknown.
        this.current = null
        await this.start()
        return []
      }
      this.fail('transaction', t)
    }
    this.current = next
    let ranges: Range[]
    try {
      ranges = await this.readDirty(cur, signal)
    } catch (err) {
      // Keep the changes: they are reported with the next bitmap's.
      await this.ok('block-dirty-bitmap-merge', { node: this.init.node, target: next, bitmaps: [cur] })
      await this.components.qmp('block-dirty-bitmap-remove', { node: this.init.node, name: cur })
      throw err
    }
    await this.ok('block-dirty-bitmap-remove', { node: this.init.node, name: cur })
    this.components.told.tell(this.init.file, { since: this.told, until: next, ranges, space: 'virtual' })
    this.told = next
    return ranges
  }

  /** Removes our bitmap (QEMU forgets it anyway when it exits). */
  async stop (): Promise<void> {
    const cur = this.current
    this.current = null
    this.told = null
    if (cur !== null) await this.components.qmp('block-dirty-bitmap-remove', { node: this.init.node, name: cur }).catch(() => {})
  }

  /** The dirty extents of `bitmap`, through a short-lived read-only NBD export of the node. */
  private async readDirty (bitmap: string, signal?: AbortSignal): Promise<Range[]> {
    const id = `${this.prefix}-x-${this.epoch}-${this.seq}`
    await this.ok('block-export-add', { type: 'nbd', id, 'node-name': this.init.node, name: id, writable: false, bitmaps: [bitmap] })
    try {
      const map = this.components.map ?? nbdDirtyMap
      return await map(this.init.nbdSocket, id, bitmap, { timeoutMs: this.init.timeoutMs ?? 30_000, ...(signal !== undefined ? { signal } : {}) })
    } finally {
      await this.components.qmp('block-export-del', { id, mode: 'hard' }).catch(() => {})
    }
  }

  /** block-dirty-bitmap-add's arguments for a bitmap of ours. */
  private addArgs (name: string): Record<string, unknown> {
    const g = this.init.granularityBytes
    return { node: this.init.node, name, persistent: false, ...(g !== undefined ? { granularity: g } : {}) }
  }

  private nextName (): string {
    this.seq++
    return `${this.prefix}-${this.epoch}-${this.seq}`
  }

  private async ok (command: string, args: Record<string, unknown>): Promise<unknown> { return await qmpOk(this.components.qmp, command, args) }

  private fail (command: string, r: QmpReply): never { throw qmpFailure(command, r) }
}

/**
 * The format node QEMU opened `file` as (query-block: the device's inserted image), for VMs
 * started with -drive (auto-named nodes) or outside vmesh.
 */
export async function formatNodeOf (qmp: QemuBitmapComponents['qmp'], file: string): Promise<string> {
  const r = await qmp('query-block')
  if (r.error !== undefined || !Array.isArray(r.return)) throw new HypervisorOutputError('qmp query-block', r.error?.desc ?? 'not an array')
  const want = resolve(file)
  for (const d of r.return as Array<{ inserted?: { file?: unknown, 'node-name'?: unknown } }>) {
    const ins = d.inserted
    if (typeof ins?.file === 'string' && typeof ins['node-name'] === 'string' && resolve(ins.file) === want) return ins['node-name']
  }
  throw new HypervisorOutputError('qmp query-block', `no block device has ${file} open`)
}
