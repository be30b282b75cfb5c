/**
 * One consistent point in time per generation of a disk QEMU holds open: a dirty bitmap on the
 * image's format node (what the guest wrote) and fleecing of the image's *file* node —
 * copy-before-write into a scratch qcow2 — so the file is read as it was at the instant of the
 * bitmap rotation while the guest keeps writing. Falls back to pausing the guest (stop/cont)
 * only when fleecing is refused, and measures the pause.
 *
 * Copy mode (`copy`, see copyPoint): after the first point of a chain, a round whose changed
 * blocks fit the copy budget reads them right after the rotation and keeps them in memory; the
 * new bitmap's dirty count, asked after the reads, proves no guest write completed meanwhile
 * (else the round starts again with those writes, and after COPY_ATTEMPTS is fleeced). That is
 * the same crash-consistent point without a job, a scratch image or QEMU copying a 64 KiB
 * cluster before each first write under a held point (17 bytes read per byte changed on the
 * capture bench, QEMU 7.2 copies at no finer grain).
 *
 * Flow of capture():
 *   scratch.qcow2: a copy of an empty qcow2 of the file node's size now (no backing in its
 *     header), made once per size with qemu-img and copied per point (a process per point cost
 *     more CPU than the rest of the round)
 *   blockdev-add  fl: qcow2 on the scratch file, backing = the file node
 *   transaction { block-dirty-bitmap-add NEXT, block-dirty-bitmap-disable CUR   (format node),
 *                 blockdev-backup sync=none  file node → fl }            (one instant: the point)
 *     the backup job copies a cluster's old bytes into the scratch before a write overwrites
 *     it, so reading fl gives the file as it was at the point (fl's own clusters, else its
 *     backing = the live file, untouched there since the point).
 *   CUR's extents: a short-lived read-only export of the format node with CUR, block status (nbd-map.ts)
 *   (virtual offsets); then fl exported over NBD and opened with NbdReader: `view` (size = the
 *   file's size at the point). The ranges are told (virtual, consistent) to the told source,
 *   whose changes(..., { view }) maps them through the layout read from the view.
 *   release(ok): export, job, fl and scratch removed; ok → CUR removed; not ok → CUR merged
 *   into NEXT (the next point reports those ranges again).
 *   The file grew between the size query and the transaction (the backup action refuses
 *   different sizes): a new scratch of the new size (not block_resize: a grown overlay reads
 *   zeros past its old end, not its backing). Refused otherwise (an old QEMU, a job already on
 *   the node): pause mode from then on — stop, size, the transaction without the backup job,
 *   read, cont. CUR missing (QEMU restarted): a new chain (since = null: read everything).
 *
 * Why the bitmap stays on the format node: a bitmap on the file node would give file offsets
 * with every metadata write, but an NBD export marks its bitmap busy, and QEMU 7.2 aborts
 * (bdrv_dirty_bitmap_truncate: !busy) when the file node grows under a busy bitmap — which a
 * dynamic VHD/VHDX does whenever the guest writes a new block. The format node's size is the
 * virtual size: it never grows. Why fleece the file node: the replica is a byte copy of the
 * *file*, so payload, BAT, log and headers must come from one instant; the file node's RESIZE
 * conflict that stops exporting it does not arise — the export is of fl, whose backing link
 * shares RESIZE and WRITE.
 * Why `blockdev-backup sync=none` and not a hand-built copy-before-write + snapshot-access
 * graph: inserting a filter under the format node (blockdev-reopen) is not a transaction
 * action, so the bitmap rotation and the start of copy-before-write could not be one instant;
 * the backup action is, and in QEMU 7.2 it is the same copy-before-write filter underneath.
 */
import { copyFile, rm } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import type { Clock } from '../../common/clock.ts'
import { AbortedError, errorMessage } from '../../common/errors.ts'
import { totalBytes, type Range } from '../../storage/changes/range.ts'
import { FileReader, checkSpan, type ByteReader } from '../../storage/formats/reader.ts'
import type { Tell } from '../../storage/changes/told.ts'
import { HypervisorCommandFailedError, HypervisorOutputError } from './errors.ts'
import { NbdReader } from './nbd-reader.ts'
import type { PointCopy } from './point-copy.ts'
import { ensureNbdServer, formatNodeOf, nbdDirtyMap, qmpFailure, qmpOk, type DirtyMapReader } from './qemu-bitmaps.ts'
import type { QmpReply } from './qmp.ts'
import { removeStaleBitmaps, removeStaleJobsAndNodes, removedAny, type StaleRemoved } from './qemu-stale.ts'
import { defaultRunner } from './run.ts'
import type { CommandRunner } from './run.ts'

export type CaptureMode = 'fleece' | 'pause' | 'copy'

/** Attempts at a copied point before the round is fleeced instead (each lost to a write that completed meanwhile). */
const COPY_ATTEMPTS = 3

export interface PointCaptureComponents {
  clock: Clock
  /** Runs one QMP command on the VM's monitor. */
  qmp: (command: string, args?: Record<string, unknown>) => Promise<QmpReply>
  /** Where committed ranges go (file space, consistent), if anywhere. */
  told?: { tell: (file: string, t: Tell) => void }
  /** Runs qemu-img. @default defaultRunner */
  run?: CommandRunner
  /** Reads a bitmap's dirty extents. @default nbdDirtyMap */
  map?: DirtyMapReader
  /** Hears what an earlier process left in QEMU (bitmaps, a fleecing job, nodes, scratch files) and the first capture removed. */
  onStaleRemoved?: (r: StaleRemoved) => void
}

export interface PointCaptureInit {
  /** The image file QEMU holds open. */
  file: string
  /** Unix socket of QEMU's NBD server (started here unless already running). */
  nbdSocket: string
  /** Folder for the scratch qcow2 images (same host; holds only the bytes overwritten during a read). */
  scratchDir: string
  /** Prefix of our bitmap, node, job and export names. @default 'vmesh' */
  prefix?: string
  /** 'auto': fleece, pause only when fleecing is refused. @default 'auto' */
  mode?: 'auto' | CaptureMode
  /** Bitmap granularity in bytes (qemu-bitmaps.ts bitmapGranularity). @default QEMU's */
  granularityBytes?: number
  /** Per dirty-map read / qemu-img call. @default 30000 */
  timeoutMs?: number
  /**
   * Copy mode (see copyPoint): a point is the changed blocks read while no guest write
   * completes, kept in `cache`, instead of a fleecing job. `plan` gives the file ranges holding
   * the virtual ranges (aligned to the cache's blocks); null, or more than the cache's budget:
   * that round is fleeced. Only for a file that keeps its size. @default undefined (fleece every point)
   */
  copy?: { plan: (virtual: Range[]) => Range[] | null, cache: PointCopy }
}

/** How the points of a capture were taken (status, bench). */
export interface PointStats {
  /** Points taken by copy. */
  copied: number
  /** Points taken by fleecing (the first of a chain, copy refused, too large, or lost to writes). */
  fleeced: number
  /** Copy attempts lost to a guest write that completed while the blocks were read. */
  raced: number
  /** Rounds whose change set was over the copy budget. */
  tooLarge: number
}
/** One point in time of the file, open for reading until release(). */
export interface PointCapture {
  /** The bitmap rotation this point is (the told chain's reference point). */
  readonly point: string
  /** The previous point (null: a new chain: `ranges` is the whole file). */
  readonly since: string | null
  /** Virtual-disk ranges the guest wrote between `since` and this point (empty when `since` is null). */
  readonly virtualRanges: Range[]
  /** The file's size at the point. */
  readonly fileSize: number
  readonly mode: CaptureMode
  /** Wall time the guest was paused for this point (0 with fleecing); final after release(). */
  pauseMs: number
  /** The file as it was at the point (for ToldRangesSource.changes' `view` and format parsing). */
  readonly view: ByteReader
  /** Bytes of the file as they were at the point (clipped to `fileSize`). */
  read: (offset: number, length: number) => Promise<Buffer>
  /** Copy mode: whether `read` can serve every byte of `ranges` (otherwise it fails for them). Absent: it serves the whole file. */
  covers?: (ranges: readonly Range[]) => boolean
  /** ok: the point was used (its bitmap dropped); not ok: its changes are reported again with the next point. Idempotent. */
  release: (ok: boolean) => Promise<void>
}

/** Why fleecing could not be used (logged once; pause mode follows). */
export class FleecingRefusedError extends HypervisorCommandFailedError {
  constructor (desc: string) { super('qmp', null, desc, 'fleecing (transaction with blockdev-backup sync=none)') }
}

export class QemuPointCapture {
  private current: string | null = null
  private told: string | null = null
  private nodes: Nodes | null = null
  private seq = 0
  private readonly epoch: string
  private readonly prefix: string
  private mode: CaptureMode
  private startedServer = false
  /** An empty qcow2 of `size` bytes, copied to make each point's scratch. */
  private template: { size: number, path: string } | null = null
  /** Why fleecing was given up (null while it works). */
  fleecingRefused: string | null = null
  /** Why copy mode was given up (null while it works or when not configured). */
  copyRefused: string | null = null
  /** The NBD server was started or found ours (checked again after any failed capture). */
  private serverUp = false
  readonly stats: PointStats = { copied: 0, fleeced: 0, raced: 0, tooLarge: 0 }

  constructor (private readonly components: PointCaptureComponents, private readonly init: PointCaptureInit) {
    this.prefix = init.prefix ?? 'vmesh'
    this.epoch = Math.round(components.clock.wallNow()).toString(36)
    this.mode = init.mode === 'pause' ? 'pause' : 'fleece'
  }

  /** The mode the next capture uses. */
  get nextMode (): CaptureMode { return this.mode }

  /**
   * Freezes the file at this instant and opens it for reading. The first capture (and the
   * first after QEMU lost our bitmap) has `since: null` and the whole file as its ranges.
   */
  async capture (signal?: AbortSignal): Promise<PointCapture> {
    if (this.nodes === null) {
      // a point an earlier process held keeps copying writes into its scratch, and hides the
      // image file from query-block: gone first (qemu-stale.ts)
      const stale = await removeStaleJobsAndNodes(this.components.qmp, { prefix: this.prefix, keepEpoch: this.epoch, scratchDir: this.init.scratchDir }, async (ms) => { await this.components.clock.sleep(ms) })
      this.nodes = await this.findNodes()
      await removeStaleBitmaps(this.components.qmp, { prefix: this.prefix, keepEpoch: this.epoch, formatNode: this.nodes.fmt }, stale)
      if (removedAny(stale)) this.components.onStaleRemoved?.(stale)
    }
    if (!this.serverUp) {
      const r = await ensureNbdServer(this.components.qmp, this.init.nbdSocket)
      if (r.error !== undefined) this.fail('nbd-server-start', r)
      if (r.started) this.startedServer = true
      this.serverUp = true
    }
    for (let attempt = 0; ; attempt++) {
      try {
        if (this.init.copy !== undefined && this.copyRefused === null && this.current !== null && this.mode === 'fleece') {
          const p = await this.copyPoint(this.nodes, this.init.copy, signal)
          if (p !== null) return p
        }
        return await this.tryCapture(this.nodes, signal)
      } catch (err) {
        this.serverUp = false
        if (err instanceof SizeRaceError && attempt < 20) continue
        if (err instanceof BitmapLostError) {
          // QEMU restarted (or someone removed our bitmap): what was written meanwhile is
          // unknown, so a new chain; the node name may have changed too.
          this.current = null
          this.told = null
          this.nodes = await this.findNodes()
          continue
        }
        if (err instanceof FleecingRefusedError && this.init.mode !== 'fleece' && this.mode === 'fleece') {
          this.fleecingRefused = errorMessage(err)
          this.mode = 'pause'
          continue
        }
        throw err
      }
    }
  }

  /** Removes our bitmap, the scratch template, and stops the NBD server if we started it (QEMU forgets both when it exits). */
  async stop (): Promise<void> {
    const t = this.template
    this.template = null
    if (t !== null) await rm(t.path, { force: true }).catch(() => {})
    const cur = this.current
    const node = this.nodes?.fmt
    this.current = null
    this.told = null
    if (cur !== null && node !== undefined) await this.components.qmp('block-dirty-bitmap-remove', { node, name: cur }).catch(() => {})
    if (this.startedServer) await this.components.qmp('nbd-server-stop').catch(() => {})
    this.startedServer = false
  }

  private async findNodes (): Promise<Nodes> {
    return { fmt: await formatNodeOf(this.components.qmp, this.init.file), file: await fileNodeOf(this.components.qmp, this.init.file) }
  }

  private async tryCapture (nodes: Nodes, signal?: AbortSignal): Promise<PointCapture> {
    // the copied blocks are of the last copied point; this one moves the chain without them
    this.init.copy?.cache.clear()
    const { qmp, clock } = this.components
    const { fmt, file } = nodes
    const id = `${this.prefix}-fl-${this.epoch}-${++this.seq}`
    const scratch = join(this.init.scratchDir, `${id}.qcow2`)
    const next = this.nextName()
    const cur = this.current
    const fleece = this.mode === 'fleece'
    const cleanup: Array<() => Promise<unknown>> = []
    const undo = async (): Promise<void> => { for (const f of cleanup.reverse()) await f().catch(() => {}) }
    let pausedAt: number | null = null
    let pauseMs = 0
    const resume = async (): Promise<void> => {
      if (pausedAt === null) return
      const r = await qmp('cont')
      pauseMs = clock.now() - pausedAt
      pausedAt = null
      if (r.error !== undefined) this.fail('cont', r)
    }
    try {
      if (!fleece) {
        // paused before the size is taken: the file cannot grow under the overlay
        const s = await qmp('stop')
        if (s.error !== undefined) this.fail('stop', s)
        pausedAt = clock.now()
        cleanup.push(resume)
      }
      const size = await this.nodeSize(file)
      cleanup.push(async () => await rm(scratch, { force: true }))
      await this.emptyScratch(scratch, size, signal)
      await this.ok('blockdev-add', { driver: 'qcow2', 'node-name': id, file: { driver: 'file', filename: scratch }, backing: file, 'read-only': !fleece })
      cleanup.push(async () => await qmp('blockdev-del', { 'node-name': id }))
      const actions: unknown[] = [this.addAction(fmt, next)]
      if (cur !== null) actions.push({ type: 'block-dirty-bitmap-disable', data: { node: fmt, name: cur } })
      if (fleece) actions.push({ type: 'blockdev-backup', data: { device: file, target: id, sync: 'none', 'job-id': id } })
      // The backup action wants the scratch exactly the file's size, and a guest that
      // allocates grows the file meanwhile: then a new scratch of the new size (capture()
      // retries). Not block_resize: a grown overlay reads zeros past its old end, not the
      // backing file's bytes, and the view would lose the newest blocks.
      const t = await qmp('transaction', { actions })
      if (t.error !== undefined) {
        const desc = t.error.desc ?? ''
        if (cur !== null && bitmapLost(desc)) throw new BitmapLostError(desc)
        if (/size|length/i.test(desc) && (await this.nodeSize(file)) !== size) throw new SizeRaceError(desc)
        if (fleece) throw new FleecingRefusedError(desc)
        this.fail('transaction', t)
      }
      if (fleece) cleanup.push(async () => await this.endJob(id))
      this.current = next
      // From here a failure merges CUR back into NEXT (the chain point does not move).
      let virtualRanges: Range[] = []
      let reader: NbdReader
      try {
        if (cur !== null) virtualRanges = await this.readDirty(fmt, cur, signal)
        await this.ok('block-export-add', { type: 'nbd', id, 'node-name': id, name: id, writable: false })
        cleanup.push(async () => await qmp('block-export-del', { id, mode: 'hard' }))
        reader = await NbdReader.open(this.init.nbdSocket, id, { timeoutMs: this.init.timeoutMs ?? 30_000, ...(signal !== undefined ? { signal } : {}) })
        const r = reader
        cleanup.push(async () => await r.close())
        if (r.size !== size) throw new HypervisorOutputError('nbd', `fleecing export is ${r.size} bytes, the file was ${size}`)
      } catch (err) {
        await this.mergeBack(fmt, cur, next)
        throw err
      }
      const since = cur === null ? null : this.told
      this.components.told?.tell(resolve(this.init.file), { since, until: next, ranges: virtualRanges, space: 'virtual', consistent: true })
      this.told = next
      if (fleece) this.stats.fleeced++
      const view: ByteReader = {
        size,
        read: async (offset, length) => { checkSpan(offset, length, size); return await reader.read(offset, length) }
      }
      let released = false
      const capture: PointCapture = {
        point: next,
        since,
        virtualRanges,
        fileSize: size,
        mode: fleece ? 'fleece' : 'pause',
        pauseMs: 0,
        view,
        read: async (offset, length) => await reader.read(offset, length),
        release: async (ok) => {
          if (released) return
          released = true
          await undo()
          capture.pauseMs = pauseMs
          if (!ok) { await this.mergeBack(fmt, cur, next); return }
          if (cur !== null) await qmp('block-dirty-bitmap-remove', { node: fmt, name: cur }).catch(() => {})
        }
      }
      return capture
    } catch (err) {
      // before the transaction: NEXT was never added; after it: merged back above
      await undo()
      throw err
    }
  }

  /**
   * A point taken by copy, without fleecing and without pausing the guest:
   *   transaction { block-dirty-bitmap-add NEXT, block-dirty-bitmap-disable CUR }   (instant T)
   *   CUR's extents → plan → those file ranges read from the file (the guest keeps writing)
   *   NEXT's dirty count (query-block): 0 → no guest write completed since T, so every byte
   *     read is the file at this moment (a write still in flight may or may not be in it —
   *     as after a power cut: crash-consistent). Not 0 → CUR merged into NEXT, again (at most
   *     COPY_ATTEMPTS times, then null: the caller fleeces this round).
   * QEMU marks a block dirty when its write completes, before the guest hears of it, so a
   * write that changed a byte we read either completed before the count (seen) or had not
   * been acknowledged to the guest yet.
   * The blocks go into the cache, which keeps older points' blocks that were not written since
   * (point-copy.ts): a sender's pending ranges are read from it when it covers them.
   * Costs per point: 4 QMP commands and the changed blocks read once (no scratch image, no
   * copy-before-write of 64 KiB clusters, no job, no second export). Null when the change set
   * cannot be mapped or is over the cache's budget, or writes kept completing in the window.
   */
  private async copyPoint (nodes: Nodes, copy: NonNullable<PointCaptureInit['copy']>, signal?: AbortSignal): Promise<PointCapture | null> {
    const { fmt } = nodes
    const { cache } = copy
    // one open file per point: the window's reads and the told source's layout reads after it
    const file = await FileReader.open(this.init.file)
    let handedOver = false
    try {
      for (let attempt = 0; attempt < COPY_ATTEMPTS; attempt++) {
        const p = await this.copyAttempt(fmt, copy, file, signal)
        if (p === 'raced') continue
        handedOver = p !== null
        return p
      }
      cache.clear()
      return null
    } finally {
      if (!handedOver) await file.close().catch(() => {})
    }
  }

  /** One attempt of copyPoint: the point, null (not by copy this round), or 'raced' (a write completed in the window; merged back). */
  private async copyAttempt (fmt: string, copy: NonNullable<PointCaptureInit['copy']>, file: FileReader, signal?: AbortSignal): Promise<PointCapture | null | 'raced'> {
    const { qmp } = this.components
    const { cache } = copy
    const cur = this.current as string
    const next = this.nextName()
    const t = await qmp('transaction', { actions: [this.addAction(fmt, next), { type: 'block-dirty-bitmap-disable', data: { node: fmt, name: cur } }] })
    if (t.error !== undefined) {
      cache.clear()
      if (bitmapLost(t.error.desc ?? '')) throw new BitmapLostError(t.error.desc ?? '')
      this.fail('transaction', t)
    }
    this.current = next
    let virtualRanges: Range[]
    let planned: Range[] | null
    const bufs: Uint8Array[] = []
    try {
      virtualRanges = await this.readDirty(fmt, cur, signal)
      planned = copy.plan(virtualRanges)
      if (planned === null || totalBytes(planned) > cache.maxBytes) {
        this.stats.tooLarge++
        await this.mergeBack(fmt, cur, next)
        cache.clear()
        return null
      }
      for (const r of planned) {
        if (signal?.aborted === true) throw new AbortedError('reading a copied point aborted', { cause: signal.reason })
        bufs.push(await file.read(r.offset, r.length))
      }
      const dirty = await this.dirtyBytes(fmt, next)
      if (dirty === null) {
        this.copyRefused = `QEMU does not report the dirty count of bitmap ${next}`
        await this.mergeBack(fmt, cur, next)
        cache.clear()
        return null
      }
      if (dirty > 0) {
        this.stats.raced++
        await this.mergeBack(fmt, cur, next)
        return 'raced'
      }
    } catch (err) {
      cache.clear()
      await this.mergeBack(fmt, cur, next).catch(() => {})
      throw err
    }
    cache.nextPoint()
    planned.forEach((r, i) => { cache.put(r.offset, bufs[i] as Uint8Array) })
    const since = this.told
    this.components.told?.tell(resolve(this.init.file), { since, until: next, ranges: virtualRanges, space: 'virtual', consistent: true })
    this.told = next
    this.stats.copied++
    return this.copiedPoint(fmt, cur, next, since, virtualRanges, file, cache)
  }

  /** The PointCapture of a copied point: reads from the cache (the told source's layout reads fall back to the live file, see below). */
  private copiedPoint (fmt: string, cur: string, next: string, since: string | null, virtualRanges: Range[], file: FileReader, cache: PointCopy): PointCapture {
    const size = file.size
    let released = false
    const view: ByteReader = {
      size,
      // the told source reads the layout and its metadata fingerprints here. A fixed image's
      // layout does not move; a metadata block that did change since the last point is in
      // the answer's ranges, which then are not covered: that target's generation reads the
      // live file and is fuzzy (the sender asks covers() first).
      read: async (offset, length) => {
        checkSpan(offset, length, size)
        if (cache.covers([{ offset, length }])) return cache.read(offset, length)
        return await file.read(offset, length)
      }
    }
    const capture: PointCapture = {
      point: next,
      since,
      virtualRanges,
      fileSize: size,
      mode: 'copy',
      pauseMs: 0,
      view,
      read: async (offset, length) => cache.read(offset, Math.max(0, Math.min(length, size - offset))),
      covers: (ranges) => cache.covers(ranges),
      release: async (ok) => {
        if (released) return
        released = true
        await file.close().catch(() => {})
        if (!ok) { await this.mergeBack(fmt, cur, next); return }
        await this.components.qmp('block-dirty-bitmap-remove', { node: fmt, name: cur }).catch(() => {})
      }
    }
    return capture
  }

  /** Bytes `bitmap` on `fmt` holds dirty now (query-block), null when QEMU does not say. */
  private async dirtyBytes (fmt: string, bitmap: string): Promise<number | null> {
    const r = await this.components.qmp('query-block')
    if (r.error !== undefined || !Array.isArray(r.return)) throw new HypervisorOutputError('qmp query-block', r.error?.desc ?? 'not an array')
    for (const d of r.return as Array<{ inserted?: { 'node-name'?: unknown, 'dirty-bitmaps'?: unknown }, 'dirty-bitmaps'?: unknown }>) {
      if (d.inserted?.['node-name'] !== fmt) continue
      const lists = [d.inserted['dirty-bitmaps'], d['dirty-bitmaps']]
      for (const l of lists) {
        if (!Array.isArray(l)) continue
        const b = (l as Array<{ name?: unknown, count?: unknown }>).find(x => x.name === bitmap)
        if (b !== undefined) return Number.isSafeInteger(b.count) && (b.count as number) >= 0 ? b.count as number : null
      }
    }
    return null
  }

  /** The dirty extents of `bitmap` (virtual offsets), through a short-lived read-only export of the format node. */
  private async readDirty (fmt: string, bitmap: string, signal?: AbortSignal): Promise<Range[]> {
    const id = `${this.prefix}-map-${this.epoch}-${this.seq}`
    await this.ok('block-export-add', { type: 'nbd', id, 'node-name': fmt, name: id, writable: false, bitmaps: [bitmap] })
    try {
      return await this.readMap(id, bitmap, signal)
    } finally {
      await this.components.qmp('block-export-del', { id, mode: 'hard' }).catch(() => {})
    }
  }

  /** CUR's changes go to NEXT; the told chain stays at its last point. */
  private async mergeBack (node: string, cur: string | null, next: string): Promise<void> {
    if (cur === null) {
      // no previous point: the next capture must read everything again
      await this.components.qmp('block-dirty-bitmap-remove', { node, name: next }).catch(() => {})
      this.current = null
      return
    }
    await this.ok('block-dirty-bitmap-merge', { node, target: next, bitmaps: [cur] })
    await this.components.qmp('block-dirty-bitmap-remove', { node, name: cur }).catch(() => {})
  }

  /** Cancels the fleecing job and waits until QEMU has dropped it (its target can then be deleted). */
  private async endJob (id: string): Promise<void> {
    await this.components.qmp('block-job-cancel', { device: id, force: true })
    for (let i = 0; i < 200; i++) {
      const r = await this.components.qmp('query-block-jobs')
      if (!Array.isArray(r.return) || !(r.return as Array<{ device?: string }>).some(j => j.device === id)) return
      await new Promise(resolve => setTimeout(resolve, 10))
    }
  }

  private async nodeSize (node: string): Promise<number> {
    const r = await this.components.qmp('query-named-block-nodes', { flat: true })
    const n = Array.isArray(r.return) ? (r.return as Array<{ 'node-name'?: string, image?: { 'virtual-size'?: unknown } }>).find(x => x['node-name'] === node) : undefined
    const s = n?.image?.['virtual-size']
    if (!Number.isSafeInteger(s) || (s as number) < 0) throw new HypervisorOutputError('qmp query-named-block-nodes', `no size for node ${node}`)
    return s as number
  }

  private async readMap (exportName: string, bitmap: string, signal?: AbortSignal): Promise<Range[]> {
    const map = this.components.map ?? nbdDirtyMap
    return await map(this.init.nbdSocket, exportName, bitmap, { timeoutMs: this.init.timeoutMs ?? 30_000, ...(signal !== undefined ? { signal } : {}) })
  }

  /** `path` becomes an empty qcow2 of `size` bytes: a copy of the template (made when the size is new). */
  private async emptyScratch (path: string, size: number, signal?: AbortSignal): Promise<void> {
    if (this.template?.size !== size) {
      const old = this.template
      this.template = null
      if (old !== null) await rm(old.path, { force: true })
      const t = join(this.init.scratchDir, `${this.prefix}-empty-${this.epoch}-${size}.qcow2`)
      await this.runTool(['qemu-img', 'create', '-q', '-f', 'qcow2', t, String(size)], signal)
      this.template = { size, path: t }
    }
    await copyFile(this.template.path, path)
  }

  private async runTool (argv: string[], signal?: AbortSignal): Promise<void> {
    const run = this.components.run ?? defaultRunner
    const r = await run(argv, { timeoutMs: this.init.timeoutMs ?? 30_000, ...(signal !== undefined ? { signal } : {}) })
    if (r.code !== 0) throw new HypervisorCommandFailedError(argv[0] as string, r.code, r.stderr.slice(-2000), 'creating the fleecing scratch image')
  }

  /** The transaction action that adds our next bitmap on the format node. */
  private addAction (fmt: string, name: string): { type: string, data: Record<string, unknown> } {
    const g = this.init.granularityBytes
    return { type: 'block-dirty-bitmap-add', data: { node: fmt, name, persistent: false, ...(g !== undefined ? { granularity: g } : {}) } }
  }

  private nextName (): string { return `${this.prefix}-p-${this.epoch}-${++this.seq}` }

  private async ok (command: string, args: Record<string, unknown>): Promise<unknown> { return await qmpOk(this.components.qmp, command, args) }

  private fail (command: string, r: QmpReply): never { throw qmpFailure(command, r) }
}

interface Nodes { fmt: string, file: string }


class SizeRaceError extends Error {}
class BitmapLostError extends Error {}

/** QEMU's answer when our current bitmap is gone (QEMU restarted, or someone removed it). */
function bitmapLost (desc: string): boolean { return /bitmap/i.test(desc) && /not found/i.test(desc) }

/**
 * The protocol (file) node under which QEMU holds `file` (query-named-block-nodes: driver
 * `file`/`host_device` with that filename), for VMs started with -drive (auto-named nodes) or
 * outside vmesh.
 */
export async function fileNodeOf (qmp: PointCaptureComponents['qmp'], file: string): Promise<string> {
  const r = await qmp('query-named-block-nodes', { flat: true })
  if (r.error !== undefined || !Array.isArray(r.return)) throw new HypervisorOutputError('qmp query-named-block-nodes', r.error?.desc ?? 'not an array')
  const want = resolve(file)
  for (const n of r.return as Array<{ drv?: unknown, file?: unknown, 'node-name'?: unknown }>) {
    if ((n.drv === 'file' || n.drv === 'host_device') && typeof n.file === 'string' && typeof n['node-name'] === 'string' && resolve(n.file) === want) return n['node-name']
  }
  throw new HypervisorOutputError('qmp query-named-block-nodes', `no protocol node has ${file} open`)
}

