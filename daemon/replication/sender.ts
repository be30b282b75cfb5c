/**
 * Sender of one VM to one target: a session loop that keeps a replication stream open while
 * the target is reachable and ships generations over it.
 *
 * Session: hello → targetState → reconcile (logic.ts) with our books → then, while the VM's
 * generation G is ahead of what the target acknowledged: collect the target's pending ranges,
 * mark them in flight as generation G, stream begin / blocks / end through the bandwidth
 * limiter, and wait for ack (→ acknowledge) or nack (→ requeue, back off; disk full waits for
 * the target's retryAfterMs). A dropped stream requeues at the next reconcile; the loop
 * reconnects with capped backoff. One slow target never holds back another: each has its own
 * loop, stream and limiter.
 *
 * Consistency: a generation is announced consistent only if every file of the VM still has the
 * stat of the last quiet scan; after reading, the stats are checked again before `end` is sent.
 * If a file moved meanwhile the stream is aborted (nothing of the generation is applied) and
 * the same data goes again, announced fuzzy.
 *
 * Seed resume: when the target reports a seed of ours in progress, we ask hashes of its durable
 * ranges, skip blocks whose hash equals our manifest's, and resend the rest under the same
 * generation number (so the store resumes instead of starting over).
 *
 * Content index (1.2.0 streams): the blocks of every generation are offered by hash first
 * (have.ts); the ones the target already holds anywhere are copied there and not sent.
 */
import { open as openFile, stat as statFile } from 'node:fs/promises'
import { hashBlocks } from '../../common/blake3.ts'
import { clipRanges } from '../../common/ranges.ts'
import { AbortedError, errorMessage } from '../../common/errors.ts'
import { nodeScanIO, type FileStat } from '../../storage/changes/file-io.ts'
import { encodeGeneration, zeroChecksum, type BlocksFrame, type ChangedBlock } from '../../protocol/delta/index.ts'
import {
  CONTROL_PROTOCOL_VERSION, helloCarriesRetention, streamCarriesHaveQuery, NackCode, SeedMode, errorFromRejection, nackCodeName,
  ReplicationRefusedError, type HashResponseMessage, type HaveAnswerMessage, type TargetStateMessage, type ReplicationItem
} from '../../protocol/replication/index.ts'
import type { Clock } from '../../common/clock.ts'
import type { Logger } from '../log.ts'
import type { TargetStatus } from '../status.ts'
import type { VmeshMetrics } from '../metrics/registry.ts'
import type { BandwidthLimiter } from '../bandwidth/limiter.ts'
import type { Startable } from '../startable.ts'
import { Channel, type StreamLike } from './channel.ts'
import { GenerationTurnedFuzzyError, ReplicationStreamClosedError, ReplicationTimeoutError, ReplicationUnexpectedMessageError, VerifyFailedError } from './errors.ts'
import { innerBlocks, isConsistentCapture, lagMs, nextGenerationNumber, reconcile, rpoMs, targetStateOf, type FileCapture } from './logic.ts'
import type { SenderSource, SourceFile } from './source-view.ts'
import { AdaptiveEncoder } from './encoder.ts'
import { readChangedBlocks } from './block-reader.ts'
import { SUB_BLOCK, refineBlocks, type SubHashes } from './sub-blocks.ts'
import { InflightPacer, type PacerInit, type PacerStats } from './pacer.ts'
import { offerByHash, type HaveLink } from './have.ts'
import type { PointLease } from './point-gate.ts'

const READ_CHUNK = 1024 * 1024
/** Blocks whose hashes are asked for at once (seed resume, verify): 64 KiB of hashes. */
const HASH_WINDOW = 4096
/** Ping period while waiting for an ack, and the silence after which the target counts as hung. */
const PING_MS = 10_000
const DEAD_MS = 60_000
/** Raw bytes per blocks frame (measured: 1 MiB ≈ 1.5× the throughput of 4 MiB on loopback). */
const FRAME_PAYLOAD = 1024 * 1024
/** Pending bytes per generation whose sub-block hashes are asked (64 Ki hashes, 1 MiB of them). */
const REFINE_MAX_BYTES = 256 * 1024 * 1024
/** Hash requests outstanding at once while refining. */
const REFINE_WINDOW = 64
/** A change set beyond this many seconds of the link goes as chunks (each durable on ack). */
const CHUNK_SECONDS = 3
/**
 * Sub-block refinement only while the measured path is slower than this (bytes/s). It costs a
 * round trip and the target's read and hash of every changed range; on loopback it put ~0.4 s
 * of hash answers before each 1 %-changed generation of a 2 GiB disk (21 MB) and doubled the
 * incremental time (bench replicate: 1.9 s against 0.63–0.72 s before it), while sending those
 * 21 MB takes 0.17 s at 1 Gbit/s. Below ~400 Mbit/s the saving (up to 16× for scattered 4 KiB
 * writes) wins; WAN links are far below. Unknown rate (a new session's first generation): refine.
 */
const REFINE_BELOW_BYTES_PER_SEC = 50 * 1000 * 1000
/** At most one consistency point (see mayMarkConsistent) per this many ms. */
const CONSISTENCY_RETRY_MS = 5_000
/** Longest wait at the start of a generation for a scan that would otherwise make it fuzzy (ms). */
const START_SCAN_WAIT_MS = 2_000
/**
 * How long a generation waits for a fleeced disk's change round to end before it reads the live
 * file instead (fuzzy). A round is a few QMP commands and a dirty map read: well under this.
 */
const POINT_WAIT_MS = 5_000
const MIN_CHUNK_BYTES = 4 * 1024 * 1024
const MAX_CHUNK_BYTES = 512 * 1024 * 1024
/** Smallest blocks frame the pacer splits to: a frame is the unit its probes acknowledge. */
const MIN_FRAME_PAYLOAD = 64 * 1024

interface Included {
  file: SourceFile
  ranges: Array<{ offset: number, length: number }>
  before: FileStat
  /** The consistent point the file is read from (a fleeced disk), else the live file. */
  point?: PointLease
}

export interface VerifyReport {
  target: string
  files: Array<{ path: string, blocks: number, mismatched: Array<{ offset: number, length: number }> }>
  mismatchedBlocks: number
  repaired: boolean
}

export interface SenderComponents {
  clock: Clock
  log: Logger
  /** The VM this sender ships (its VmSource). */
  source: SenderSource
  /** Opens a replication stream to a peer by name. */
  dial: (peer: string, signal: AbortSignal) => Promise<StreamLike>
  /** Paces this (VM, target) stream. */
  limiter?: BandwidthLimiter
  metrics?: VmeshMetrics
}

export interface SenderInit {
  /** The target node's name. */
  target: string
  /** This node's name, sent in the hello. */
  nodeName: string
  /** Tuning of the in-flight bound (pacer.ts); defaults fit links from a few Mbit/s to 10 Gbit/s. */
  pacing?: PacerInit
}

export class TargetSender implements Startable {
  private ac = new AbortController()
  private loop: Promise<void> | undefined
  private channel: Channel | undefined
  private pacer: InflightPacer | undefined
  /** While a change set goes as chunks: the times of the full set (what its last chunk carries). */
  private chunkOf: { createdAtMs: number, consistent: boolean, captureStartMs?: number } | undefined
  private connected = false
  private error: string | undefined
  /** The target's applied generation as last reported or acknowledged. */
  private applied = 0
  private seeding = false
  private forceFuzzy = false
  /**
   * The target's newest applied generation is fuzzy (from its targetState, then from each ack):
   * until a consistent one follows, the replica's recovery point lags behind what it holds.
   */
  private ackedFuzzy = false
  private lastConsistencyPointMs = -Infinity
  /** The path's delivery rate as this session's pacer last measured it (bytes/s; 0: not yet). */
  private pathRate = 0
  private nextNumber: number | undefined
  private readonly skip = new Map<string, Set<number>>()
  /** Per file with a skip set: the manifest generation its hashes were compared at. */
  private readonly skipSince = new Map<string, number>()
  private knownSizes = new Map<string, number>()
  private pendingBytes = 0
  private seedTotal = 0
  private seedSent = 0
  private sentTotal = 0
  private rate = 0
  private rateMark = { at: 0, sent: 0 }
  private requestId = 1
  /** resend / nack that arrived while a haveAnswer was awaited: the ack wait reads them first */
  private early: ReplicationItem[] = []
  /** Blocks and bytes the target copied from its content index instead of receiving them. */
  private heldByTarget = { blocks: 0, bytes: 0 }
  private lastVerify: { atMs: number, mismatchedBlocks: number } | undefined
  private verifyQueue: Array<{ repair: boolean, onBytes?: (n: number) => void, resolve: (r: VerifyReport) => void, reject: (e: unknown) => void }> = []
  /** The generation being sent: the bytes of its ranges, and how many of them were read so far. */
  private sending: GenerationProgress | undefined

  private readonly vm: SenderSource
  readonly target: string

  constructor (private readonly components: SenderComponents, private readonly init: SenderInit) {
    this.vm = components.source
    this.target = init.target
  }

  private get log (): Logger { return this.components.log }
  private get clock (): Clock { return this.components.clock }

  start (): void {
    if (this.loop !== undefined) return
    this.ac = new AbortController()
    this.rateMark = { at: this.clock.now(), sent: this.sentTotal }
    this.loop = this.run()
  }

  async stop (): Promise<void> {
    this.ac.abort(new AbortedError('sender stopping'))
    this.channel?.abort(new Error('sender stopping'))
    await this.loop
    this.loop = undefined
    for (const v of this.verifyQueue.splice(0)) v.reject(new VerifyFailedError('sender stopped'))
  }

  /**
   * Runs a verify at the next moment the target is in sync; `onBytes` is told each stretch of
   * the source files compared (their sum is the files' sizes).
   */
  async verify (repair: boolean, timeoutMs: number, onBytes?: (n: number) => void): Promise<VerifyReport> {
    return await new Promise<VerifyReport>((resolve, reject) => {
      const entry = { repair, ...(onBytes !== undefined ? { onBytes } : {}), resolve, reject }
      this.verifyQueue.push(entry)
      const t = this.clock.setTimeout(() => {
        const i = this.verifyQueue.indexOf(entry)
        if (i >= 0) { this.verifyQueue.splice(i, 1); reject(new VerifyFailedError(`target ${this.target} was not in sync within ${timeoutMs} ms`)) }
      }, timeoutMs)
      const done = (): void => { this.clock.clearTimeout(t) }
      entry.resolve = (r) => { done(); resolve(r) }
      entry.reject = (e) => { done(); reject(e) }
      this.vm.notify()
    })
  }

  status (): TargetStatus {
    const book = this.vm.books.target(this.target)
    const now = this.clock.now()
    if (now - this.rateMark.at >= 1000) {
      const inst = (this.sentTotal - this.rateMark.sent) * 1000 / (now - this.rateMark.at)
      this.rate = this.rate === 0 ? inst : 0.5 * this.rate + 0.5 * inst
      this.rateMark = { at: now, sent: this.sentTotal }
    }
    const current = this.vm.generation
    const state = targetStateOf({ connected: this.connected, error: this.error, acked: book.acked, current, pendingBytes: this.pendingBytes, seeding: this.seeding, midChangeSet: this.midChangeSet })
    const lag = lagMs(this.clock.wallNow(), book.acked, current, g => this.vm.books.meta(g)?.createdAtMs)
    this.components.metrics?.replication.setState(this.vm.name, this.target, state)
    this.components.metrics?.replication.setAckedGeneration(this.vm.name, this.target, book.acked)
    const rpo = rpoMs(this.clock.wallNow(), book.acked, current, g => this.vm.books.meta(g)?.captureStartMs, this.vm.capturedThroughMs())
    this.components.metrics?.replication.setLag(this.vm.name, this.target, lag / 1000)
    this.components.metrics?.replication.setRpo(this.vm.name, this.target, rpo === null ? Number.NaN : rpo / 1000)
    this.components.metrics?.replication.setPendingBytes(this.vm.name, this.target, this.pendingBytes)
    this.components.metrics?.replication.setRate(this.vm.name, this.target, Math.round(this.rate))
    return {
      node: this.target,
      state,
      ackedGeneration: book.acked,
      lagMs: lag,
      rpoMs: rpo,
      bytesPending: this.pendingBytes,
      rateBytesPerSec: Math.round(this.rate),
      ...(this.seeding ? { seedProgress: this.seedTotal > 0 ? Math.min(1, this.seedSent / this.seedTotal) : 0 } : {}),
      ...(this.error !== undefined ? { error: this.error } : {}),
      ...(this.lastVerify !== undefined ? { lastVerify: this.lastVerify } : {}),
      ...(this.pacer !== undefined ? { pacing: pacingOf(this.pacer.stats()) } : {})
    }
  }

  private async run (): Promise<void> {
    const signal = this.ac.signal
    let backoff = 250
    // bounded by the abort signal: every pass either runs a session or sleeps
    while (!signal.aborted) {
      try {
        await this.session(signal)
        backoff = 250
      } catch (err) {
        if (signal.aborted) break
        if (err instanceof GenerationTurnedFuzzyError) {
          this.log.info({ vm: this.vm.name, target: this.target }, 'a file changed while a consistent generation was read; resending it as fuzzy')
          this.forceFuzzy = true
          backoff = 0
        } else {
          // unreachable or dropped peers are "disconnected"; refusals and local failures are errors
          const network = !this.connected || err instanceof ReplicationStreamClosedError || err instanceof ReplicationTimeoutError || (err as { code?: string }).code === 'ERR_ABORTED'
          this.log.debug({ vm: this.vm.name, target: this.target, err: errorMessage(err) }, 'replication session ended')
          this.error = !network || err instanceof ReplicationRefusedError ? errorMessage(err) : undefined
        }
      } finally {
        this.connected = false
        this.channel?.abort(new Error('session over'))
        this.channel = undefined
      }
      await this.refreshPending().catch(() => {})
      try { await this.clock.sleep(backoff, signal) } catch { break }
      backoff = Math.min(Math.max(backoff * 2, 250), 5000)
    }
  }

  private async refreshPending (): Promise<void> {
    this.pendingBytes = await this.vm.dirty.dirtyBytes(this.target) + await this.vm.dirty.inFlightBytes(this.target)
  }

  private async session (signal: AbortSignal): Promise<void> {
    const dialTimer = this.timeout(10_000, signal)
    let stream
    try {
      stream = await this.components.dial(this.target, dialTimer.signal)
    } finally { dialTimer.clear() }
    // one pacer per session: a new connection may take another path
    const pacer = new InflightPacer(this.clock, this.init.pacing)
    const ch = new Channel(stream, {
      onProtocolError: (err) => { this.log.warn({ vm: this.vm.name, target: this.target, err: errorMessage(err) }, 'target sent bytes that do not decode; stream aborted') },
      onPong: (pong) => { pacer.onPong(pong.nonce) },
      onEnded: () => { pacer.end(new ReplicationStreamClosedError('stream ended while waiting to send')) }
    })
    this.channel = ch
    this.pacer = pacer
    this.pathRate = 0
    this.early = []
    const helloFiles = []
    for (const f of this.vm.files) {
      const st = await statFile(f.path).catch(() => null)
      helloFiles.push({ fileId: f.fileId, path: f.path, kind: f.kind, size: st?.size ?? 0, blockSize: this.vm.blockSize })
    }
    // the VM's recovery-point policy, for the target's store, where the stream can carry it
    const rp = this.vm.vm.recoveryPoints
    const retention = rp !== undefined && helloCarriesRetention(stream.protocol) ? { retention: { count: rp.count, keepAllWithinMs: rp.keepAllWithinMs, hourlyBeyond: rp.hourlyBeyond } } : {}
    await ch.sendItem({ type: 'hello', protocolVersion: CONTROL_PROTOCOL_VERSION, vm: this.vm.name, sourceNode: this.init.nodeName, files: helloFiles, seedMode: this.vm.vm.seed === 'existing' ? SeedMode.Existing : SeedMode.Full, ...retention })
    // seed: existing may make the target copy pre-placed files before it answers
    const ts = await this.expect(ch, 'targetState', this.vm.vm.seed === 'existing' ? 3_600_000 : 30_000, signal) as TargetStateMessage
    this.connected = true
    await this.reconcileWith(ts, ch, signal)
    this.knownSizes = new Map()
    // bounded by the abort signal and the channel's life
    while (!signal.aborted) {
      if (ch.closed) throw ch.error ?? new ReplicationStreamClosedError()
      const verify = this.verifyQueue[0]
      if (verify !== undefined && this.inSync()) {
        this.verifyQueue.shift()
        try {
          verify.resolve(await this.runVerify(ch, verify.repair, signal, verify.onBytes))
        } catch (err) {
          verify.reject(err)
          // a source file that moved during the verify is the caller's retry, not a broken session
          if (!(err instanceof VerifyFailedError)) throw err
        }
        continue
      }
      if (this.vm.ready && this.vm.generation > this.vm.books.target(this.target).acked) {
        await this.sendGeneration(ch, signal)
        continue
      }
      await this.refreshPending()
      if (this.ackedFuzzy && await this.mayMarkConsistent()) {
        this.lastConsistencyPointMs = this.clock.now()
        await this.vm.consistencyPoint()
        continue
      }
      await this.vm.changed(1000, signal)
    }
  }

  /**
   * Whether a generation without changes would be a true recovery point for this target: it
   * holds everything (nothing dirty or in flight), no scan runs, and every file's current stat
   * is the settled one its manifest was built from — the same test a generation's end check
   * makes. Without it, a VM whose seed or last generation went fuzzy while nothing changed
   * (a seed read within the settle margin of the file's last write, a scan that began during the
   * end check) kept no recovery point until its disk changed again: a failover finalized at the
   * fuzzy generation, and the site report had no RPO for it (bench failover --site-runs).
   */
  private async mayMarkConsistent (): Promise<boolean> {
    const vm = this.vm
    if (!vm.ready || vm.scanBusy > 0 || vm.generation > vm.books.target(this.target).acked) return false
    if (this.pendingBytes > 0 || this.clock.now() - this.lastConsistencyPointMs < CONSISTENCY_RETRY_MS) return false
    const seq = vm.scanSeq
    const c = await this.fileCaptures()
    if (c === null) return false
    return isConsistentCapture(c.captures, { seqBefore: c.generations, seqAfter: c.generations, busyBefore: false, busyAfter: vm.scanBusy > 0 || vm.scanSeq !== seq })
  }

  /** Each file's current stat beside its manifest's, and the sum of the manifest generations; null when a file is gone. */
  private async fileCaptures (): Promise<{ captures: FileCapture[], generations: number } | null> {
    let generations = 0
    const captures: FileCapture[] = []
    for (const f of this.vm.files) {
      const before = await nodeScanIO.stat(f.path).catch(() => null)
      if (before === null) return null
      const meta = await this.vm.manifest.file(f.path).meta()
      captures.push({ manifestStat: meta?.stat ?? null, scanning: meta?.scanning ?? true, before })
      generations += meta?.generation ?? 0
    }
    return { captures, generations }
  }

  /**
   * A scan running as a generation starts may already have committed its manifest (the stat it
   * vouches for) but not yet marked the dirty maps: a capture read then would vouch for changes
   * it does not carry, so a busy scan makes the generation fuzzy. When that scan is the only
   * thing in the way — every file's manifest stat is settled and still the file's — it is
   * usually a stat check or the tail of a scan that just committed: wait for it (bounded), so a
   * scan that merely overlaps the start does not cost the target a recovery point.
   */
  private async letScanFinish (signal: AbortSignal): Promise<void> {
    const vm = this.vm
    const until = this.clock.now() + START_SCAN_WAIT_MS
    // bounded by the deadline: each pass waits for a scan event or 100 ms
    while (vm.scanBusy > 0 && this.clock.now() < until && !signal.aborted) {
      const c = await this.fileCaptures()
      if (c === null || !isConsistentCapture(c.captures, { seqBefore: 0, seqAfter: 0, busyBefore: false, busyAfter: false })) return
      // checked again right before waiting: the scan may have ended during the reads above,
      // and its notification would then be lost (the wait registers synchronously from here)
      if (vm.scanBusy === 0) return
      await vm.changed(100, signal)
    }
  }

  private inSync (): boolean {
    return this.vm.ready && this.vm.generation <= this.vm.books.target(this.target).acked && this.vm.scanBusy === 0
  }

  private async reconcileWith (ts: TargetStateMessage, ch: Channel, signal: AbortSignal): Promise<void> {
    const book = this.vm.books.target(this.target)
    const r = reconcile(book, ts, { existing: this.vm.vm.seed === 'existing' })
    this.log.info({ vm: this.vm.name, target: this.target, reconcile: r.kind, targetApplied: ts.appliedGeneration, seeding: ts.seeding?.generation ?? null, acked: book.acked, inFlight: book.inFlight }, 'replication session open')
    this.skip.clear()
    this.skipSince.clear()
    this.nextNumber = undefined
    switch (r.kind) {
      case 'ack':
        await this.vm.dirty.acknowledge(this.target, r.generation)
        await this.vm.books.setTarget(this.target, { acked: r.generation, inFlight: null })
        break
      case 'requeue':
        await this.vm.dirty.requeue(this.target)
        await this.vm.books.setTarget(this.target, { acked: book.acked, inFlight: null })
        break
      case 'resume-seed':
        await this.vm.dirty.requeue(this.target)
        await this.buildSkipSet(ts, ch, signal)
        this.nextNumber = r.generation
        break
      case 'adopt-seed':
        // every block is a candidate (a pre-loaded copy may hold data where we have zeros)
        await this.untilScanned(signal)
        await this.vm.resetTarget(this.target, true)
        await this.vm.books.setTarget(this.target, { acked: 0, inFlight: null })
        await this.buildSkipSet(ts, ch, signal)
        break
      case 'reseed':
      case 'rebase':
        if (r.kind === 'rebase') await this.untilScanned(signal)
        await this.vm.resetTarget(this.target, r.kind === 'rebase')
        await this.vm.books.setTarget(this.target, { acked: ts.appliedGeneration, inFlight: null })
        break
    }
    this.applied = r.kind === 'ack' ? r.generation : ts.appliedGeneration
    this.ackedFuzzy = ts.seeding === null && ts.appliedConsistentGeneration < this.applied
    this.seeding = this.applied === 0
    const want = nextGenerationNumber(this.vm.generation, r, ts)
    if (r.kind !== 'resume-seed' && want > this.vm.generation) await this.vm.books.bump(this.clock.wallNow(), false, want, this.vm.capturedThroughMs())
    // the target needs at least one generation whenever our books were reset
    if ((r.kind === 'reseed' || r.kind === 'rebase') && this.vm.generation <= ts.appliedGeneration) await this.vm.books.bump(this.clock.wallNow(), false, undefined, this.vm.capturedThroughMs())
    if (r.kind === 'reseed' || r.kind === 'rebase') await this.vm.books.setTarget(this.target, { acked: ts.appliedGeneration, inFlight: null })
    this.error = undefined
  }

  /**
   * Waits until every file of the VM has been scanned once. A VM just adopted from a finalized
   * replica opens its sessions at once, and before that first scan
   * - the manifest is empty, and an absent entry reads as a zero block (buildSkipSet would skip a
   *   target block of zeros where our file holds data);
   * - the dirty maps do not know the files, so resetting a target to "every block" marks nothing,
   *   and the first scan then marks only the non-zero blocks — what an empty target needs, not one
   *   that holds data (adopt-seed, rebase): our zero blocks were never sent over its stale data
   *   (the soak's vm4 on h1: one 4 KiB page of h1's own pre-failover writes left in a block that
   *   was all zeros on the new owner h2).
   */
  private async untilScanned (signal: AbortSignal): Promise<void> {
    while (!this.vm.ready && !signal.aborted) await this.vm.changed(1000, signal)
    signal.throwIfAborted()
  }

  /** Hashes of the target's durable seed ranges vs our manifest: blocks to skip when resending. */
  private async buildSkipSet (ts: TargetStateMessage, ch: Channel, signal: AbortSignal): Promise<void> {
    const bs = this.vm.blockSize
    // our side of the comparison is the manifest: only once every file has been scanned
    await this.untilScanned(signal)
    let compared = 0
    for (const r of ts.seeding?.durableRanges ?? []) {
      const file = this.vm.files.find(f => f.fileId === r.fileId)
      if (file === undefined) continue
      const { first, end } = innerBlocks(r, bs)
      // read before the entries: an entry a scan rewrites from here on has a later generation
      if (!this.skipSince.has(file.path)) this.skipSince.set(file.path, (await this.vm.manifest.file(file.path).meta())?.generation ?? 0)
      const set = this.skip.get(file.path) ?? new Set<number>()
      const zero = zeroChecksum(bs)
      // windows of HASH_WINDOW blocks: memory stays bounded whatever the disk size
      for (let w = first; w < end; w += HASH_WINDOW) {
        const wEnd = Math.min(end, w + HASH_WINDOW)
        const theirs = await this.requestHashes(ch, file.fileId, w * bs, (wEnd - w) * bs, signal)
        const ours = new Map<number, Uint8Array | null>()
        for await (const e of this.vm.manifest.file(file.path).entries(w, wEnd)) ours.set(e.index, e.hash)
        theirs.forEach((h, i) => {
          const idx = w + i
          if (Buffer.compare(ours.get(idx) ?? zero, h) === 0) set.add(idx)
        })
        compared += theirs.length
      }
      this.skip.set(file.path, set)
    }
    let skipped = 0
    for (const s of this.skip.values()) skipped += s.size
    this.log.info({ vm: this.vm.name, target: this.target, compared, skipped }, 'seed resumes; blocks the target already holds are skipped')
  }

  /**
   * A skipped block is one whose manifest hash equalled the target's when the skip set was
   * built. A scan that rehashed it since (the file changed) marked it dirty — but if that mark
   * came before this generation's inFlight, it merged into the block's pending bit, which the
   * ack of a generation that skipped the block clears: the write is lost (found by the chaos
   * soak: a write 88 ms before an adopt-seed session, missing from every later recovery point).
   * So, after inFlight, every skipped block the manifest changed since is sent after all; a scan
   * that commits later marks it after inFlight, and that mark survives the ack.
   */
  private async dropRehashedSkips (): Promise<void> {
    for (const [path, set] of this.skip) {
      const since = this.skipSince.get(path)
      if (since === undefined || set.size === 0) continue
      const meta = await this.vm.manifest.file(path).meta()
      if (meta !== null && meta.generation === since && !meta.scanning) continue
      let lo = Infinity
      let hi = -1
      for (const i of set) { if (i < lo) lo = i; if (i > hi) hi = i }
      let dropped = 0
      for await (const e of this.vm.manifest.file(path).entries(lo, hi + 1)) if (e.generation > since && set.delete(e.index)) dropped++
      if (dropped > 0) this.log.info({ vm: this.vm.name, target: this.target, file: path, blocks: dropped }, 'blocks rehashed since the seed comparison are sent after all')
    }
  }

  private async requestHashes (ch: Channel, fileId: number, offset: number, length: number, signal: AbortSignal): Promise<Uint8Array[]> {
    const requestId = this.requestId++ >>> 0
    await ch.sendItem({ type: 'hashRequest', requestId, fileId, offset, length, blockSize: this.vm.blockSize })
    const out: Uint8Array[] = []
    // bounded: every response has `last` eventually or the channel ends
    for (;;) {
      const m = await this.expect(ch, 'hashResponse', 120_000, signal) as HashResponseMessage
      if (m.requestId !== requestId) continue
      out.push(...m.hashes)
      if (m.last) return out
    }
  }

  private async expect (ch: Channel, type: ReplicationItem['type'], timeoutMs: number, signal: AbortSignal): Promise<ReplicationItem> {
    const timer = this.timeout(timeoutMs, signal)
    try {
      return await this.expectUntil(ch, type, timer.signal, () => !signal.aborted && timer.signal.aborted, timeoutMs)
    } finally { timer.clear() }
  }

  /**
   * An AbortSignal that fires after `ms` on the injected clock or when `parent` aborts; clear()
   * detaches it from both. Not AbortSignal.any([parent, …]): on Node 20 every any() call adds an
   * entry to the parent's dependant set that is only dropped when the parent aborts, and
   * `parent` here is this sender's lifetime signal — one entry per dial and per awaited reply
   * (each ack, each hash window) for as long as the sender runs, a leak the chaos soak found.
   */
  private timeout (ms: number, parent: AbortSignal): { signal: AbortSignal, clear: () => void } {
    const ac = new AbortController()
    const onParent = (): void => { ac.abort(parent.reason) }
    if (parent.aborted) onParent(); else parent.addEventListener('abort', onParent, { once: true })
    const h = this.clock.setTimeout(() => { ac.abort(new ReplicationTimeoutError(`timed out after ${ms} ms`)) }, ms)
    return { signal: ac.signal, clear: () => { this.clock.clearTimeout(h); parent.removeEventListener('abort', onParent) } }
  }

  private async expectUntil (ch: Channel, type: ReplicationItem['type'], t: AbortSignal, timedOut: () => boolean, timeoutMs: number): Promise<ReplicationItem> {
    // bounded: each pass consumes one item of the channel
    for (;;) {
      let item: ReplicationItem | null
      try { item = await ch.next(t) } catch (err) {
        if (timedOut()) throw new ReplicationTimeoutError(`no ${type} from ${this.target} within ${timeoutMs} ms`)
        throw err
      }
      if (item === null) throw new ReplicationStreamClosedError(`target closed the stream while we waited for ${type}`)
      if (item.type === type) return item
      if (item.type === 'refuse') throw errorFromRejection(item)
      if (item.type === 'pong' || item.type === 'ping') continue
      if ((type === 'ack' || type === 'haveAnswer') && (item.type === 'nack' || item.type === 'resend')) return item
      throw new ReplicationUnexpectedMessageError(`expected ${type}, got ${item.type}`)
    }
  }

  private async sendGeneration (ch: Channel, signal: AbortSignal): Promise<void> {
    const tPrep = this.clock.now()
    await this.letScanFinish(signal)
    // leased before the pending ranges are read, and no change round runs until released: the
    // ranges are exactly those up to the point the disk is read from. Not for a seed: it may
    // take hours on a WAN link, and a point held that long stops every target's rounds and grows
    // its scratch with each first write; a seed of a running VM reads the live file (fuzzy) and
    // the told generations after it are consistent
    const points = this.applied === 0 ? new Map<string, PointLease>() : await this.leasePoints(signal)
    try {
      await this.shipGeneration(ch, signal, tPrep, points)
    } finally {
      for (const p of points.values()) p.release()
    }
  }

  /** Leases on the points of the VM's fleeced disks (none when it has none). */
  private async leasePoints (signal: AbortSignal): Promise<Map<string, PointLease>> {
    const out = new Map<string, PointLease>()
    const leasePoint = this.vm.leasePoint
    if (leasePoint === undefined) return out
    try {
      for (const f of this.vm.files) {
        const l = await leasePoint.call(this.vm, f.path, POINT_WAIT_MS, signal)
        if (l !== undefined) out.set(f.path, l)
      }
    } catch (err) {
      for (const p of out.values()) p.release()
      throw err
    }
    return out
  }

  private async shipGeneration (ch: Channel, signal: AbortSignal, tPrep: number, points: Map<string, PointLease>): Promise<void> {
    const vm = this.vm
    const t = this.target
    let number = this.nextNumber ?? vm.generation
    const base = this.applied
    const seeding = base === 0
    const busyBefore = vm.scanBusy > 0
    let seqBefore = 0
    const captures: FileCapture[] = []
    const included: Included[] = []
    for (const f of vm.files) {
      const ranges: Array<{ offset: number, length: number }> = []
      if (vm.dirty.files().some(x => x.file === f.path)) for await (const r of vm.dirty.pending(t, f.path)) ranges.push(r)
      let point = points.get(f.path)
      if (point !== undefined && !point.covers(clipRanges(ranges, point.fileSize))) {
        // a copied point holds the blocks of its recent rounds only: a target further behind
        // reads the live file for this generation (fuzzy), and is consistent again once caught up
        point.release()
        points.delete(f.path)
        point = undefined
      }
      const live = await nodeScanIO.stat(f.path)
      // a fleeced disk is the point: its size, whatever the live file has become since
      const before = point !== undefined ? { ...live, size: point.fileSize } : live
      const meta = await vm.manifest.file(f.path).meta()
      captures.push({ manifestStat: meta?.stat ?? null, scanning: meta?.scanning ?? true, before, ...(point !== undefined ? { point: true } : {}) })
      seqBefore += meta?.generation ?? 0
      const clipped = clipRanges(ranges, before.size)
      if (seeding || clipped.length > 0 || this.knownSizes.get(f.path) !== before.size) included.push({ file: f, ranges: clipped, before, ...(point !== undefined ? { point } : {}) })
    }
    // a change set bigger than a few seconds of the link goes as chunks, each its own generation
    // and durable on the target when acked: a link that drops more often than the whole set
    // takes loses only the chunk on the wire, and the next session goes on with the rest
    let partial = false
    if (!seeding && this.nextNumber === undefined) {
      let left = this.chunkBytes()
      let all = 0
      for (const inc of included) for (const r of inc.ranges) all += r.length
      if (all > left) {
        partial = true
        for (const inc of included) {
          const taken = takeRanges(inc.ranges, left, vm.blockSize)
          inc.ranges = taken.ranges
          left -= taken.bytes
        }
      }
    }
    if (partial) {
      // the chunk holds no new capture point: its meta keeps the acked one's capture start (the
      // RPO does not move); the rest follows under a number with the full change set's times
      const m = vm.books.meta(number)
      this.chunkOf ??= { createdAtMs: m?.createdAtMs ?? Math.round(this.clock.wallNow()), consistent: m?.consistent ?? false, ...(m?.captureStartMs !== undefined ? { captureStartMs: m.captureStartMs } : {}) }
      number = await vm.books.bump(this.chunkOf.createdAtMs, false, undefined, vm.books.meta(vm.books.target(t).acked)?.captureStartMs)
    }
    const consistent = !partial && !this.forceFuzzy && isConsistentCapture(captures, { seqBefore, seqAfter: seqBefore, busyBefore, busyAfter: vm.scanBusy > 0 })
    await vm.books.setTarget(t, { acked: vm.books.target(t).acked, inFlight: number })
    for (const inc of included) if (inc.ranges.length > 0) await vm.dirty.inFlight(t, number, inc.file.path, inc.ranges)
    await this.dropRehashedSkips()
    const createdAtMs = vm.books.meta(number)?.createdAtMs ?? Math.round(this.clock.wallNow())
    let total = 0
    for (const inc of included) for (const r of inc.ranges) total += r.length
    if (seeding) { this.seedTotal = total; this.seedSent = 0 }
    const progress: GenerationProgress = { generation: number, totalBytes: total, readBytes: 0 }
    this.sending = progress
    this.log.debug({ vm: vm.name, target: t, generation: number, base, consistent, files: included.length, bytes: total }, 'sending generation')
    const limiter = this.components.limiter
    const pacer = this.pacer ?? new InflightPacer(this.clock, this.init.pacing)
    // an incremental generation sends only the 4 KiB pieces that differ from the target's copy
    const subHashes = seeding || !refinePays(this.pathRate) ? undefined : await this.fetchSubHashes(ch, included, signal)
    // blocks the target holds anywhere (its content index) are offered by hash first
    const have = streamCarriesHaveQuery(ch.stream.protocol) ? this.haveLink(ch, signal) : undefined
    const heldBefore = this.heldByTarget.bytes
    this.early = []
    const frames = encodeGeneration({
      vm: vm.name,
      generation: number,
      baseGeneration: base,
      consistent,
      createdAtMs,
      files: included.map(inc => ({ fileId: inc.file.fileId, path: inc.file.path, size: inc.before.size, blockSize: vm.blockSize, kind: inc.file.kind })),
      readBlocks: (fileId) => {
        const inc = included.find(x => x.file.fileId === fileId) as Included
        const theirs = subHashes?.get(fileId)
        let blocks = countRead(this.readBlocks(inc, signal), progress)
        if (have !== undefined) {
          blocks = offerByHash(blocks, {
            fileId,
            generation: number,
            blockSize: vm.blockSize,
            fileSize: inc.before.size,
            link: have,
            nextQueryId: () => this.requestId++ >>> 0,
            onHeld: (n, bytes) => {
              this.heldByTarget.blocks += n
              this.heldByTarget.bytes += bytes
              if (seeding) this.seedSent += bytes
            }
          })
        }
        return theirs !== undefined ? refineBlocks(blocks, theirs) : blocks
      },
      // frames of 1 MiB: big enough to amortize headers, small enough that the buffers they are
      // built and reassembled in are recycled by the allocator instead of freshly mapped (GC
      // and page faults dominated with 4 MiB frames)
      maxFramePayloadBytes: FRAME_PAYLOAD,
      encode: new AdaptiveEncoder().encode,
      signal
    })
    const t0 = this.clock.now()
    let sendMs = 0
    let endCheckMs = 0
    for await (const frame of frames) {
      if (frame.type === 'end' && consistent) {
        const te = this.clock.now()
        // a scan running now may be about to report changes: let it finish first, then read the
        // stats and manifest generations; if a scan began or ended while they were read
        // (scanSeq moved), wait for it and read again (bounded). A scan that committed nothing
        // new leaves the capture consistent; without the retry, any scan that merely started
        // during these reads made it fuzzy — under load, often enough that an idle VM's seed
        // was never a recovery point (planned.test.ts's --point case)
        let after: FileCapture[] = []
        let seqAfter = 0
        let busyAfter = true
        for (let round = 0; round < 5 && busyAfter; round++) {
          for (let i = 0; i < 100 && vm.scanBusy > 0; i++) await vm.changed(100, signal)
          const scans = vm.scanSeq
          after = []
          seqAfter = 0
          for (let i = 0; i < vm.files.length; i++) {
            const f = vm.files[i] as SourceFile
            const c = captures[i] as FileCapture
            after.push({ ...c, after: await nodeScanIO.stat(f.path) })
            seqAfter += (await vm.manifest.file(f.path).meta())?.generation ?? 0
          }
          busyAfter = vm.scanBusy > 0 || vm.scanSeq !== scans
        }
        if (!isConsistentCapture(after, { seqBefore, seqAfter, busyBefore, busyAfter })) {
          throw new GenerationTurnedFuzzyError(`a file of ${vm.name} changed while generation ${number} was read`)
        }
        endCheckMs = this.clock.now() - te
      }
      const ts = this.clock.now()
      if (frame.type !== 'blocks') {
        pacer.onSent(await ch.sendItem(frame, limiter, signal))
      } else {
        // in pieces the pacer can acknowledge: each is followed by a probe (ping), and waits
        // until the bytes in flight fall under about two round trips of the measured rate
        for (const piece of splitBlocksFrame(frame, this.frameBytes(pacer))) {
          await pacer.waitForRoom(signal)
          pacer.onSent(await ch.sendItem(piece, limiter, signal))
          pacer.onSent(await ch.sendItem({ type: 'ping', nonce: pacer.probe(), timestampMs: Math.max(0, Math.floor(this.clock.now())) }))
          let raw = 0
          for (const e of piece.entries) raw += e.length
          this.sentTotal += raw
          if (seeding) this.seedSent += raw
          this.components.metrics?.replication.addSentBytes(vm.name, t, raw)
        }
      }
      sendMs += this.clock.now() - ts
    }
    const t1 = this.clock.now()
    // everything is read: the next change round may replace the points
    for (const p of points.values()) p.release()
    // kept past the pacer's 3 s window: an idle pause must not make a LAN look unmeasured
    const measured = pacer.stats().btlBwBytesPerSec
    if (measured > 0) this.pathRate = measured
    // the answer: ack or nack (resend requests come before a nack); while waiting, pings every
    // PING_MS prove the target alive (it answers them ahead of its apply queue): silence for
    // DEAD_MS ends the session instead of waiting forever on a hung peer
    let lastIn = ch.bytesIn
    let lastHeard = this.clock.now()
    for (;;) {
      let reply: ReplicationItem
      try {
        reply = this.early.shift() ?? await this.expect(ch, 'ack', PING_MS, signal)
      } catch (err) {
        if (!(err instanceof ReplicationTimeoutError)) throw err
        if (ch.bytesIn !== lastIn) { lastIn = ch.bytesIn; lastHeard = this.clock.now() }
        if (this.clock.now() - lastHeard >= DEAD_MS) throw new ReplicationTimeoutError(`no answer from ${t} for ${DEAD_MS} ms while generation ${number} was applied`)
        await ch.sendItem({ type: 'ping', nonce: pacer.probe(), timestampMs: Math.max(0, Math.floor(this.clock.now())) })
        continue
      }
      if (reply.type === 'resend') {
        const f = vm.files.find(x => x.fileId === reply.fileId)
        if (f !== undefined) await vm.dirty.markChanged(f.path, [{ offset: reply.offset, length: reply.length }], (await nodeScanIO.stat(f.path)).size)
        continue
      }
      if (reply.type === 'ack') {
        if (reply.generation !== number) throw new ReplicationUnexpectedMessageError(`ack of ${reply.generation}, sent ${number}`)
        await vm.dirty.acknowledge(t, number)
        await vm.books.setTarget(t, { acked: number, inFlight: null })
        this.applied = number
        this.seeding = false
        this.nextNumber = undefined
        this.forceFuzzy = false
        this.ackedFuzzy = !consistent
        this.skip.clear()
        this.skipSince.clear()
        this.error = undefined
        for (const inc of included) this.knownSizes.set(inc.file.path, inc.before.size)
        const full = this.chunkOf
        if (partial && full !== undefined) {
          // the rest of the change set: a generation carrying its capture times
          await vm.books.bump(full.createdAtMs, full.consistent, undefined, full.captureStartMs)
        } else if (!partial) this.chunkOf = undefined
        await this.refreshPending()
        this.log.debug({ vm: vm.name, target: t, generation: number, consistent, bytes: total, heldByTargetBytes: this.heldByTarget.bytes - heldBefore, prepMs: Math.round(t0 - tPrep), streamMs: Math.round(t1 - t0), sendWaitMs: Math.round(sendMs), endCheckMs: Math.round(endCheckMs), ackWaitMs: Math.round(this.clock.now() - t1) }, 'generation acknowledged')
        return
      }
      if (reply.type === 'nack') {
        await vm.dirty.requeue(t)
        await vm.books.setTarget(t, { acked: vm.books.target(t).acked, inFlight: null })
        this.error = `nack of generation ${reply.generation}: ${nackCodeName(reply.code)}${reply.message !== '' ? ` (${reply.message})` : ''}`
        this.log.warn({ vm: vm.name, target: t, generation: number, code: nackCodeName(reply.code), message: reply.message }, 'target refused a generation')
        if (reply.code === NackCode.BaseMismatch || reply.code === NackCode.ProtocolError) throw errorFromRejection(reply)
        await this.clock.sleep(Math.min(Math.max(reply.retryAfterMs ?? 1000, 250), 30_000), signal)
        return
      }
    }
  }

  /**
   * The target's SUB_BLOCK hashes over the pending ranges (up to REFINE_MAX_BYTES of them,
   * REFINE_WINDOW requests outstanding): what sub-blocks.ts compares each changed block with.
   */
  private async fetchSubHashes (ch: Channel, included: Included[], signal: AbortSignal): Promise<Map<number, SubHashes> | undefined> {
    const bs = this.vm.blockSize
    if (bs <= SUB_BLOCK || bs % SUB_BLOCK !== 0) return undefined
    const out = new Map<number, SubHashes>()
    const queue: Array<{ fileId: number, offset: number, length: number }> = []
    let budget = REFINE_MAX_BYTES
    for (const inc of included) {
      for (const r of inc.ranges) {
        if (budget <= 0) break
        const offset = Math.floor(r.offset / SUB_BLOCK) * SUB_BLOCK
        const end = Math.min(r.offset + r.length, offset + budget)
        queue.push({ fileId: inc.file.fileId, offset, length: end - offset })
        budget -= end - offset
      }
    }
    if (queue.length === 0) return undefined
    const open = new Set<number>()
    let asked = 0
    let hashes = 0
    // bounded: every request is answered by responses ending in `last`, or the channel ends
    while (asked < queue.length || open.size > 0) {
      while (asked < queue.length && open.size < REFINE_WINDOW) {
        const q = queue[asked++] as typeof queue[number]
        const requestId = this.requestId++ >>> 0
        open.add(requestId)
        await ch.sendItem({ type: 'hashRequest', requestId, fileId: q.fileId, offset: q.offset, length: q.length, blockSize: SUB_BLOCK })
      }
      const m = await this.expect(ch, 'hashResponse', 120_000, signal) as HashResponseMessage
      if (!open.has(m.requestId)) continue
      if (m.blockSize === SUB_BLOCK && m.offset % SUB_BLOCK === 0) {
        let map = out.get(m.fileId)
        if (map === undefined) { map = new Map(); out.set(m.fileId, map) }
        const first = m.offset / SUB_BLOCK
        m.hashes.forEach((h, i) => { map.set(first + i, h) })
        hashes += m.hashes.length
      }
      if (m.last) open.delete(m.requestId)
    }
    this.log.debug({ vm: this.vm.name, target: this.target, requests: queue.length, hashes }, 'sub-block hashes of the target fetched')
    return out
  }

  /**
   * The channel as have.ts sees it: queries go out between frames; an answer is awaited in
   * stream order, and a resend or nack that comes first (the target refused the generation) is
   * kept for the ack wait.
   */
  private haveLink (ch: Channel, signal: AbortSignal): HaveLink {
    return {
      query: async (msg) => { await ch.sendItem(msg) },
      answer: async (queryId) => {
        // bounded: each pass consumes one item of the channel
        for (;;) {
          const m = await this.expect(ch, 'haveAnswer', 120_000, signal)
          if (m.type === 'resend' || m.type === 'nack') { this.early.push(m); continue }
          const a = m as HaveAnswerMessage
          if (a.queryId !== queryId) throw new ReplicationUnexpectedMessageError(`haveAnswer for query ${a.queryId}, expected ${queryId}`)
          return a.held
        }
      }
    }
  }

  /** Blocks and bytes the target copied from its content index instead of receiving them (status, tests). */
  heldByTargetTotals (): Readonly<{ blocks: number, bytes: number }> { return this.heldByTarget }

  /** Pending bytes per chunk of a big change set: about CHUNK_SECONDS of the measured rate. */
  private chunkBytes (): number {
    const bw = this.pacer?.stats().btlBwBytesPerSec ?? 0
    return Math.max(MIN_CHUNK_BYTES, Math.min(MAX_CHUNK_BYTES, Math.floor(bw * CHUNK_SECONDS)))
  }

  /** Raw bytes per blocks frame: a quarter of the in-flight cap, so several pieces are in flight. */
  private frameBytes (pacer: InflightPacer): number {
    return Math.max(MIN_FRAME_PAYLOAD, Math.min(FRAME_PAYLOAD, Math.floor(pacer.cap / 4)))
  }

  /** True while a change set goes as chunks and its last chunk is not acknowledged yet. */
  get midChangeSet (): boolean { return this.chunkOf !== undefined }

  /** The generation on its way to the target (until its session ends), with the bytes read of it. */
  generationProgress (): Readonly<GenerationProgress> | undefined { return this.sending }

  /** The pacer's view of the current session (status, tests). */
  pacingStats (): PacerStats | undefined { return this.pacer?.stats() }

  private readBlocks (inc: Included, signal: AbortSignal): AsyncGenerator<ChangedBlock> {
    const skip = this.skip.get(inc.file.path)
    const from = inc.point !== undefined ? { size: inc.point.fileSize, read: inc.point.read } : undefined
    return readChangedBlocks({ path: inc.file.path, ranges: inc.ranges, blockSize: this.vm.blockSize, signal, ...(skip !== undefined ? { skip } : {}), ...(from !== undefined ? { from } : {}) })
  }

  /**
   * Compares every block of every file with the target while it is in sync: the target hashes
   * its replica, we hash the source file; the file must not change meanwhile.
   */
  private async runVerify (ch: Channel, repair: boolean, signal: AbortSignal, onBytes?: (n: number) => void): Promise<VerifyReport> {
    const bs = this.vm.blockSize
    const report: VerifyReport = { target: this.target, files: [], mismatchedBlocks: 0, repaired: false }
    for (const f of this.vm.files) {
      const before = await nodeScanIO.stat(f.path)
      const mismatched: Array<{ offset: number, length: number }> = []
      let total = 0
      const fh = await openFile(f.path, 'r')
      try {
        const buf = Buffer.allocUnsafe(Math.max(bs, Math.floor(READ_CHUNK / bs) * bs))
        // one window of HASH_WINDOW blocks at a time: their hashes, then ours
        for (let w = 0; w < before.size; w += HASH_WINDOW * bs) {
          const wEnd = Math.min(before.size, w + HASH_WINDOW * bs)
          const theirs = await this.requestHashes(ch, f.fileId, w, wEnd - w, signal)
          let idx = 0
          for (let at = w; at < wEnd;) {
            const len = Math.min(buf.length, wEnd - at)
            const { bytesRead } = await fh.read(buf, 0, len, at)
            if (bytesRead < len) buf.fill(0, bytesRead, len)
            const ours = hashBlocks(buf, bs, len)
            for (let k = 0; k < ours.length; k++, idx++) {
              const o = k * bs
              const blen = Math.min(bs, len - o)
              const mine = ours[k] as Uint8Array
              const h = theirs[idx]
              if (h === undefined || Buffer.compare(mine, h) !== 0) {
                total++
                if (mismatched.length < 100_000) mismatched.push({ offset: at + o, length: blen })
              }
            }
            at += len
            onBytes?.(len)
          }
        }
      } finally { await fh.close() }
      const after = await nodeScanIO.stat(f.path)
      if (after.size !== before.size || after.mtimeNs !== before.mtimeNs) throw new VerifyFailedError(`${f.path} changed during verify; try again`)
      report.files.push({ path: f.path, blocks: Math.ceil(before.size / bs), mismatched: mismatched.slice(0, 1000) })
      report.mismatchedBlocks += total
      if (repair && total > 0) {
        // beyond the list's bound, the whole file is resent
        if (total > mismatched.length) await this.vm.dirty.markAll(f.path, before.size)
        else await this.vm.dirty.markChanged(f.path, mismatched, before.size)
        report.repaired = true
      }
    }
    if (report.repaired) {
      await this.vm.books.bump(this.clock.wallNow(), false, undefined, this.vm.capturedThroughMs())
      this.vm.notify()
    }
    this.lastVerify = { atMs: Math.round(this.clock.wallNow()), mismatchedBlocks: report.mismatchedBlocks }
    return report
  }
}

export interface GenerationProgress { generation: number, totalBytes: number, readBytes: number }

/** Counts the bytes of the blocks read for a generation (before sub-block refinement drops some). */
async function * countRead (blocks: AsyncGenerator<ChangedBlock>, p: GenerationProgress): AsyncGenerator<ChangedBlock> {
  for await (const b of blocks) {
    p.readBytes += b.data.length
    yield b
  }
}

/** A blocks frame as consecutive frames of at most `maxRaw` raw bytes each (at least one entry). */
function * splitBlocksFrame (frame: BlocksFrame, maxRaw: number): Generator<BlocksFrame> {
  let raw = 0
  for (const e of frame.entries) raw += e.length
  if (raw <= maxRaw) { yield frame; return }
  let entries: BlocksFrame['entries'] = []
  let n = 0
  for (const e of frame.entries) {
    if (entries.length > 0 && n + e.length > maxRaw) {
      yield { type: 'blocks', fileId: frame.fileId, entries }
      entries = []; n = 0
    }
    entries.push(e)
    n += e.length
  }
  if (entries.length > 0) yield { type: 'blocks', fileId: frame.fileId, entries }
}

function pacingOf (s: PacerStats): NonNullable<TargetStatus['pacing']> {
  const ms = (v: number | undefined): number | null => v === undefined ? null : Math.round(v * 10) / 10
  return { capBytes: s.capBytes, inflightBytes: s.inflightBytes, btlBwBytesPerSec: Math.round(s.btlBwBytesPerSec), minRttMs: ms(s.minRttMs), rttP50Ms: ms(s.rttP50Ms), rttP99Ms: ms(s.rttP99Ms), rttSamples: s.rttSamples }
}

/** Whether asking the target for 4 KiB hashes pays on a path measured at `bytesPerSec` (0: not yet measured). */
export function refinePays (bytesPerSec: number): boolean {
  return bytesPerSec === 0 || bytesPerSec < REFINE_BELOW_BYTES_PER_SEC
}

/** The first `budget` bytes of sorted ranges, cut at a block boundary (at least one block). */
export function takeRanges (ranges: Array<{ offset: number, length: number }>, budget: number, blockSize: number): { ranges: Array<{ offset: number, length: number }>, bytes: number } {
  const out: Array<{ offset: number, length: number }> = []
  let bytes = 0
  for (const r of ranges) {
    if (bytes >= budget) break
    let len = r.length
    if (bytes + len > budget) len = Math.min(r.length, Math.max(blockSize, Math.ceil((budget - bytes) / blockSize) * blockSize))
    out.push({ offset: r.offset, length: len })
    bytes += len
  }
  return { ranges: out, bytes }
}
