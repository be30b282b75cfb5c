/**
 * QEMU/KVM change capture through dirty bitmaps: QEMU records which bytes of a block node the
 * guest wrote; we rotate the bitmap per generation and read the old one through QEMU's NBD
 * server (`qemu:dirty-bitmap:` metadata context, read with libnbd's `nbdinfo --map`), then tell
 * a ToldRangesSource the ranges between the two reference points (the bitmaps' names).
 *
 * Flow of rotate():
 *   transaction { block-dirty-bitmap-add NEXT, block-dirty-bitmap-disable CUR }  (one instant)
 *   block-export-add (read-only NBD export of the node, exposing CUR) → nbdinfo --map → ranges
 *   block-export-del; block-dirty-bitmap-remove CUR; tell(since = last told point, until = NEXT)
 *   reading failed → block-dirty-bitmap-merge CUR into NEXT (nothing is lost: the next round
 *   reports it) and the chain point stays where it was.
 *   CUR missing (QEMU restarted, bitmap lost) → a new chain (since = null): the told source
 *   answers the next round in full (one hash scan), then bitmaps again.
 *
 * The bitmap sits on the image's *format* node (vhdx/vpc), so its offsets are virtual-disk
 * offsets and ToldRangesSource maps them to the file (payload, BAT, bitmaps, headers, log,
 * footer: storage/formats/layout.ts). The protocol (file) node would give file offsets and see
 * the format's metadata writes directly, but it cannot be read: QEMU's NBD server unshares the
 * RESIZE permission on the node it exports, and the format driver of a dynamic VHD/VHDX holds
 * RESIZE on its file node to grow it ("Permission conflict on node 'file0'", tested with QEMU
 * 7.2) — and a bitmap on a file node is not visible through an export of the format node.
 *
 * Why nbdinfo (libnbd) and not an NBD client in TypeScript: the dirty-bitmap context needs
 * NBD structured replies and meta-context negotiation, which libnbd implements and is packaged
 * everywhere QEMU is; a command with a timeout is also easy to test against recorded output.
 *
 * Not done here: a consistent point in time (fleecing or a guest pause); the data is read from
 * the live file, so generations are fuzzy (`consistent: false`).
 */
import { resolve } from 'node:path'
import type { Clock } from '../../common/clock.ts'
import { errorMessage } from '../../common/errors.ts'
import type { Range } from '../../storage/changes/range.ts'
import type { Tell } from '../../storage/changes/told.ts'
import { HypervisorCommandFailedError, HypervisorOutputError } from './errors.ts'
import type { QmpReply } from './qmp.ts'
import { defaultRunner } from './run.ts'
import type { CommandRunner } from './run.ts'

export interface QemuBitmapComponents {
  clock: Clock
  /** Runs one QMP command on the VM's monitor (e.g. qmpCommand bound to its socket). */
  qmp: (command: string, args?: Record<string, unknown>) => Promise<QmpReply>
  /** Where the ranges go (a ToldRangesSource). */
  told: { tell: (file: string, t: Tell) => void }
  /** Runs nbdinfo. @default defaultRunner */
  run?: CommandRunner
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
  /** Per nbdinfo call. @default 30000 */
  timeoutMs?: number
}

/** A QMP command answered with an error. */
export class QmpCommandError extends HypervisorCommandFailedError {
  constructor (readonly command: string, readonly errorClass: string, desc: string) {
    super('qmp', null, desc, `qmp ${command}`)
  }
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

  /** Starts the NBD server if needed and a new chain: a fresh bitmap, told as `since: null`. */
  async start (): Promise<void> {
    const r = await this.components.qmp('nbd-server-start', { addr: { type: 'unix', data: { path: this.init.nbdSocket } } })
    if (r.error !== undefined && !/already running/i.test(r.error.desc ?? '')) this.fail('nbd-server-start', r)
    const name = this.nextName()
    await this.ok('block-dirty-bitmap-add', { node: this.init.node, name, persistent: false })
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
        { type: 'block-dirty-bitmap-add', data: { node: this.init.node, name: next, persistent: false } },
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
      const run = this.components.run ?? defaultRunner
      const uri = `nbd+unix:///${id}?socket=${this.init.nbdSocket}`
      const r = await run(['nbdinfo', '--json', `--map=qemu:dirty-bitmap:${bitmap}`, uri], { timeoutMs: this.init.timeoutMs ?? 30_000, ...(signal !== undefined ? { signal } : {}) })
      if (r.code !== 0) throw new HypervisorCommandFailedError('nbdinfo', r.code, r.stderr.slice(-2000), 'reading the dirty bitmap')
      return parseDirtyMap(r.stdout)
    } finally {
      await this.components.qmp('block-export-del', { id, mode: 'hard' }).catch(() => {})
    }
  }

  private nextName (): string {
    this.seq++
    return `${this.prefix}-${this.epoch}-${this.seq}`
  }

  private async ok (command: string, args: Record<string, unknown>): Promise<unknown> {
    const r = await this.components.qmp(command, args)
    if (r.error !== undefined) this.fail(command, r)
    return r.return
  }

  private fail (command: string, r: QmpReply): never {
    throw new QmpCommandError(command, r.error?.class ?? 'GenericError', r.error?.desc ?? errorMessage(r.error))
  }
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

/**
 * Dirty ranges from `nbdinfo --json --map=qemu:dirty-bitmap:NAME`: an array of
 * `{ offset, length, type }` where bit 0 of `type` set means dirty. Anything else is a typed
 * error, never a guess (a wrong "clean" would lose writes).
 */
export function parseDirtyMap (stdout: string): Range[] {
  let doc: unknown
  try { doc = JSON.parse(stdout) } catch (err) { throw new HypervisorOutputError('nbdinfo --map', 'not JSON', { cause: err }) }
  if (!Array.isArray(doc)) throw new HypervisorOutputError('nbdinfo --map', 'not an array')
  const out: Range[] = []
  for (const e of doc) {
    const { offset, length, type } = (e ?? {}) as { offset?: unknown, length?: unknown, type?: unknown }
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || !Number.isSafeInteger(type) || (offset as number) < 0 || (length as number) < 0) {
      throw new HypervisorOutputError('nbdinfo --map', `bad extent ${JSON.stringify(e)}`)
    }
    if (((type as number) & 1) !== 0 && (length as number) > 0) {
      const last = out[out.length - 1]
      if (last !== undefined && last.offset + last.length === offset) last.length += length as number
      else out.push({ offset: offset as number, length: length as number })
    }
  }
  return out
}
