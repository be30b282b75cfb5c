/**
 * Target side of replication: accepts sessions on REPLICATION_PROTOCOL and applies the
 * generations they carry to this node's replica stores.
 *
 * Session: hello (source node must be the peer on the connection) → open the store of
 * (source, vm) → targetState → then, in order, generations and control requests:
 *   begin  → beginGeneration (a seed when base is 0: written in place, resumable)
 *   blocks → every block of the frame decoded with its checksum verified, then its contiguous
 *            runs queued for the writer as gathered writes (no copy of the frame's payloads)
 *   end    → the queued writes drained, commit, then ack
 *   haveQuery (1.2.0, inside a generation) → the blocks found in this node's content index
 *            (read back and verified there) queued for the writer like arrived blocks, then
 *            haveAnswer says which; the source leaves those out of its blocks frames
 * Blocks that become durable feed the content index: a seed's once written in place, an
 * incremental generation's once committed (up to INDEX_PENDING_MAX of them per generation).
 * Writes are pipelined (WriteQueue): while the store writes one frame, the loop already reads
 * and verifies the next ones, up to a bounded number of bytes. Every frame passes a
 * GenerationValidator first. A block whose checksum fails is refused (resend + nack; the rest
 * of that generation is read and dropped, nothing of it applied, the session goes on). Anything
 * that breaks framing or generation structure aborts the stream: the writer is discarded (a
 * seed also drops its progress, since we no longer trust what came), and only this session is
 * affected. Storage refusals (disk full, base mismatch) become nacks. Backpressure comes from
 * the write queue and the Channel: while writes lag, the stream is paused.
 * The session holds its store through a registry lease: when the registry removes the store
 * (a finalized replica whose VM moved on, a superseded one) the lease is revoked and the
 * session ends, so the source reconnects into a fresh store; a store found closed anyway ends
 * the session the same way (ReplicaStoreRevokedError) instead of nacking every generation.
 */
import { open as openFile, rm, stat as statPath } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { hashBlocks } from '../../common/blake3.ts'
import type { Libp2p, Stream, Connection } from '@libp2p/interface'
import {
  REPLICATION_PROTOCOLS, CONTROL_PROTOCOL_VERSION, NackCode, SeedMode, nackCodeFor, isProtocolFault, isResendableBlockError,
  type HelloMessage, type HashRequestMessage, type HaveQueryMessage, type ControlMessage, type FileRange
} from '../../protocol/replication/index.ts'
import { durableRanges } from '../../protocol/replication/ranges.ts'
import {
  GenerationValidator, decodeBlock, FileKind, DeltaProtocolError, BlockEncoding,
  type BeginFrame, type Frame
} from '../../protocol/delta/index.ts'
import { ReplicaClosedError, type GenerationWriter, type ReplicaStore, type RetentionPolicy } from '../../storage/replica/index.ts'
import type { Clock } from '../../common/clock.ts'
import { errorMessage } from '../../common/errors.ts'
import type { Logger } from '../log.ts'
import { Channel, type StreamLike } from './channel.ts'
import { ReplicaRegistry, type ReplicaLease } from './replicas.ts'
import { PeerProtocolViolationError, ReplicaApplyAfterAckError, ReplicaStoreRevokedError, ReplicationTimeoutError } from './errors.ts'
import { WriteQueue } from './write-queue.ts'
import type { VmeshMetrics } from '../metrics/registry.ts'
import type { Startable } from '../startable.ts'
import type { ContentIndex } from '../../storage/content-index/index.ts'

/** What a session needs of the node's content index. */
export type ContentIndexLike = Pick<ContentIndex, 'add' | 'fetchMany'>

export interface ReceiverComponents {
  clock: Clock
  log: Logger
  replicas: ReplicaRegistry
  /** Configured name of a peer ID (undefined: not in mesh.peers). */
  peerName: (peerId: string) => string | undefined
  /** A replica's state was published (session open, generation committed): replication's change event. */
  onApplied?: (source: string, vm: string) => void
  /**
   * The recovery-point policy of `vm` in this node's own config (its home), used when the
   * source's hello carries none (an older source). Undefined: the store keeps what it has.
   */
  retentionOf?: (vm: string) => RetentionPolicy | undefined
  metrics?: VmeshMetrics
  /** Blocks held on this node by content (haveQuery answers); absent: every block is received. */
  contentIndex?: ContentIndexLike
}

export interface ReceiverInit {
  /** Time allowed for the hello. @default 30000 */
  helloTimeoutMs?: number
  /** Hashes per hashResponse frame. @default 4096 */
  hashesPerFrame?: number
  /** Observer for tests and bandwidth measurements: bytes received per (source, vm). */
  onBytes?: (source: string, vm: string, bytes: number) => void
}

interface Session { channel: Channel, done: Promise<void> }

/** Verified bytes queued for the store before the session stops reading (bounded memory). */
const MAX_QUEUED_WRITE_BYTES = 8 * 1024 * 1024
/** One gathered write: at most this many bytes and parts (IOV_MAX is 1024). */
const RUN_MAX_BYTES = 8 * 1024 * 1024
const RUN_MAX_PARTS = 512
/** Blocks of one incremental generation remembered for the content index until its commit. */
const INDEX_PENDING_MAX = 65536

export class ReplicationReceiver {
  private readonly sessions = new Map<string, Session>()
  private readonly all = new Set<Channel>()
  private running = false
  private libp2p: Libp2p | undefined
  private readonly closedBytes = new Map<string, number>()
  /** Sessions aborted because the peer's bytes were bad (tests read it). */
  protocolErrors = 0
  /** Blocks and bytes copied from this node's content index instead of received (haveQuery). */
  readonly copied = { blocks: 0, bytes: 0 }
  private protocols: readonly string[] = REPLICATION_PROTOCOLS

  constructor (private readonly components: ReceiverComponents, private readonly init: ReceiverInit = {}) {}

  /** `protocols`: the IDs to answer (replicationProtocols: 1.2.0 only with a content index). */
  async start (libp2p?: Libp2p, protocols: readonly string[] = REPLICATION_PROTOCOLS): Promise<void> {
    if (this.running) return
    this.running = true
    this.libp2p = libp2p
    this.protocols = protocols
    await libp2p?.handle([...protocols], (stream: Stream, connection: Connection) => {
      void this.accept(stream as unknown as StreamLike, connection.remotePeer.toString())
    }, { maxInboundStreams: 1024, maxOutboundStreams: 1024, runOnLimitedConnection: false })
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    await this.libp2p?.unhandle([...this.protocols]).catch(() => {})
    for (const ch of this.all) ch.abort(new Error('receiver stopping'))
    await Promise.all([...this.sessions.values()].map(async s => { await s.done.catch(() => {}) }))
  }

  /** Runs one inbound session to its end (exported for tests with fake streams). */
  async accept (stream: StreamLike, remotePeerId: string): Promise<void> {
    const log = this.components.log
    const from = this.components.peerName(remotePeerId)
    if (from === undefined || !this.running) { stream.abort(new Error('not an allowed peer')); return }
    const channel = new Channel(stream, {
      answerPing: (ping) => ({ type: 'pong', nonce: ping.nonce, echoTimestampMs: ping.timestampMs, timestampMs: Math.max(0, Math.floor(this.components.clock.wallNow())) }),
      onProtocolError: (err) => {
        this.protocolErrors++
        log.warn({ peer: from, err: errorMessage(err), code: (err as { code?: string }).code }, 'replication peer sent bytes that do not decode; stream aborted')
      }
    })
    this.all.add(channel)
    let key: string | undefined
    let lease: ReplicaLease | undefined
    let resolveDone!: () => void
    const done = new Promise<void>(resolve => { resolveDone = resolve })
    try {
      const hello = await this.expectHello(channel)
      if (hello === null) return
      if (hello.sourceNode !== from || !ReplicaRegistry.isSafeName(hello.vm)) {
        await channel.sendItem({ type: 'refuse', generation: 0, code: NackCode.ProtocolError, message: 'source node does not match the connection, or bad VM name' })
        await channel.close()
        return
      }
      if (hello.protocolVersion !== CONTROL_PROTOCOL_VERSION) {
        log.warn({ peer: from, vm: hello.vm, protocolVersion: hello.protocolVersion, supported: CONTROL_PROTOCOL_VERSION, code: 'ERR_REPLICATION_UNSUPPORTED_VERSION' }, 'replication session refused: unsupported protocol version')
        await channel.sendItem({ type: 'refuse', generation: 0, code: NackCode.ProtocolError, message: `protocol version ${hello.protocolVersion} not supported` })
        await channel.close()
        return
      }
      key = `${from}/${hello.vm}`
      const prev = this.sessions.get(key)
      if (prev !== undefined) { prev.channel.abort(new Error('superseded by a new session')); await prev.done.catch(() => {}) }
      this.sessions.set(key, { channel, done })
      const held = await this.components.replicas.acquire(from, hello.vm)
      lease = held
      const onRevoked = (): void => {
        log.info({ peer: from, vm: hello.vm, reason: errorMessage(held.revoked.reason) }, 'replica store taken from the session; it ends and its source reconnects')
        channel.abort(held.revoked.reason instanceof Error ? held.revoked.reason : new ReplicaStoreRevokedError(errorMessage(held.revoked.reason)))
      }
      // revoked between acquire() and here (a removal that ran first) counts as well
      if (held.revoked.aborted) onRevoked()
      else held.revoked.addEventListener('abort', onRevoked, { once: true })
      const store = held.store
      await this.adoptRetention(store, from, hello)
      const { clock, log: sessionLog, metrics, onApplied, contentIndex } = this.components
      const runner = new SessionRunner({
        clock,
        log: sessionLog,
        channel,
        store,
        replicas: this.components.replicas,
        revoked: held.revoked,
        onProtocolError: () => { this.protocolErrors++ },
        onCopied: (blocks, bytes) => { this.copied.blocks += blocks; this.copied.bytes += bytes },
        ...(contentIndex !== undefined ? { contentIndex } : {}),
        ...(metrics !== undefined ? { metrics } : {}),
        ...(onApplied !== undefined ? { onApplied } : {}),
        ...(this.init.onBytes !== undefined ? { onBytes: this.init.onBytes } : {})
      }, { hello, from, ...(this.init.hashesPerFrame !== undefined ? { hashesPerFrame: this.init.hashesPerFrame } : {}) })
      runner.start()
      await runner.done
    } catch (err) {
      if (!channel.closed) log.warn({ peer: from, err: errorMessage(err) }, 'replication session failed')
      else log.debug({ peer: from, err: errorMessage(err) }, 'replication session ended')
      channel.abort(err instanceof Error ? err : new Error(errorMessage(err)))
    } finally {
      this.all.delete(channel)
      if (key !== undefined) this.closedBytes.set(key, (this.closedBytes.get(key) ?? 0) + channel.bytesIn)
      if (key !== undefined && this.sessions.get(key)?.channel === channel) this.sessions.delete(key)
      // after the session's writer is gone: a removal waiting for this lease may close the store now
      lease?.release()
      resolveDone()
    }
  }

  /**
   * The source's `recoveryPoints` (in its hello; else this node's own config of the VM) become
   * the store's retention. Pruning by a new policy runs in the background: a first policy may
   * drop thousands of points, and the source waits for targetState meanwhile.
   */
  private async adoptRetention (store: ReplicaStore, from: string, hello: HelloMessage): Promise<void> {
    const r = hello.retention
    const policy = r !== undefined ? { maxPoints: r.count, keepAllWithinMs: r.keepAllWithinMs, hourlyBeyond: r.hourlyBeyond } : this.components.retentionOf?.(hello.vm)
    if (policy === undefined || store.state().finalized) return
    try {
      if (!await store.setRetention(policy)) return
      this.components.log.info({ peer: from, vm: hello.vm, retention: policy, fromSource: r !== undefined }, 'replica retention policy set')
      void store.applyRetention().then((dropped) => {
        if (dropped.length > 0) this.components.log.info({ peer: from, vm: hello.vm, dropped: dropped.length }, 'recovery points pruned by the new retention policy')
      })
    } catch (err) {
      this.components.log.warn({ peer: from, vm: hello.vm, err: errorMessage(err) }, 'could not set the replica retention policy; the previous one stays')
    }
  }

  private async expectHello (channel: Channel): Promise<HelloMessage | null> {
    const ms = this.init.helloTimeoutMs ?? 30_000
    const ac = new AbortController()
    const t = this.components.clock.setTimeout(() => ac.abort(new ReplicationTimeoutError('no hello')), ms)
    try {
      const item = await channel.next(ac.signal)
      if (item === null) return null
      if (item.type !== 'hello') throw new PeerProtocolViolationError(`expected hello, got ${item.type}`)
      return item
    } finally {
      this.components.clock.clearTimeout(t)
    }
  }

  /** Whether a session from `source` for `vm` is open now. */
  hasSession (source: string, vm: string): boolean { return this.sessions.has(`${source}/${vm}`) }

  /** Stream bytes received from `source` for `vm` since start (closed and live sessions). */
  bytesReceived (source: string, vm: string): number {
    const key = `${source}/${vm}`
    return (this.closedBytes.get(key) ?? 0) + (this.sessions.get(key)?.channel.bytesIn ?? 0)
  }
}

interface SessionComponents {
  clock: Clock
  log: Logger
  channel: Channel
  /** The store of (source, vm) this session applies to. */
  store: ReplicaStore
  replicas: Pick<ReplicaRegistry, 'diskFree' | 'seedDirOf'>
  /** Aborted when the registry takes the store back (the channel is aborted too). */
  revoked?: AbortSignal
  /** The peer broke the protocol (counted by the receiver). */
  onProtocolError: () => void
  onApplied?: (source: string, vm: string) => void
  onBytes?: (source: string, vm: string, bytes: number) => void
  metrics?: VmeshMetrics
  contentIndex?: ContentIndexLike
  /** Blocks copied from the content index into a generation (counted when queued). */
  onCopied?: (blocks: number, bytes: number) => void
}

/** A block that may go into the content index once durable. */
interface Indexable { fileId: number, offset: number, length: number, hash: Uint8Array }

interface SessionInit {
  hello: HelloMessage
  /** The source node (the peer on the connection). */
  from: string
  /** Hashes per hashResponse frame. @default 4096 */
  hashesPerFrame?: number
}

/** One session's state machine over the channel: start() runs it, `done` settles at its end. */
class SessionRunner implements Startable {
  private validator: GenerationValidator | undefined
  private writer: GenerationWriter | undefined
  private begin: BeginFrame | undefined
  /** seed: existing pre-loaded local copies as seed progress: the first seed keeps it. */
  private adopted = false
  /** The `<vm>.seed` copy was removed (or found absent) once the replica was whole. */
  private seedDirGone = false
  /** The current generation was refused: read the rest of it, apply nothing. */
  private discarding = false
  private readonly ac = new AbortController()
  /** Where this generation's time went (debug log at commit). */
  private timing = { wait: 0, decode: 0, write: 0, drain: 0, began: 0 }
  private readonly writes = new WriteQueue(MAX_QUEUED_WRITE_BYTES)
  /** An incremental generation's indexable blocks, for the content index after its commit. */
  private indexPending: Indexable[] = []
  /** Blocks and bytes of this generation copied from the content index (debug log). */
  private copiedNow = { blocks: 0, bytes: 0 }

  private readonly ch: Channel
  private readonly store: ReplicaStore
  private readonly hello: HelloMessage
  private readonly from: string
  private running: Promise<void> | undefined

  constructor (private readonly c: SessionComponents, private readonly init: SessionInit) {
    this.ch = c.channel
    this.store = c.store
    this.hello = init.hello
    this.from = init.from
  }

  private get log (): Logger { return this.c.log }

  /** Settles when the session has ended (rejects with what ended it, unless stopped). */
  get done (): Promise<void> { return this.running ?? Promise.resolve() }

  start (): void { this.running ??= this.run() }

  /** Ends the session: the stream is aborted, nothing of a generation in progress is applied. */
  async stop (): Promise<void> {
    this.ch.abort(new Error('session stopping'))
    await this.running?.catch(() => {})
  }

  private async run (): Promise<void> {
    try {
      if (this.hello.seedMode === SeedMode.Existing) await this.preload()
      await this.ch.sendItem(await this.targetState())
      this.publish()
      for (;;) {
        const tw = this.c.clock.now()
        const item = await this.ch.next()
        this.timing.wait += this.c.clock.now() - tw
        if (item === null) break
        if (isControl(item)) await this.onControl(item)
        else await this.onFrame(item)
      }
    } catch (err) {
      if (err instanceof DeltaProtocolError || isProtocolFault(err)) {
        this.c.onProtocolError()
        this.log.warn({ peer: this.from, vm: this.hello.vm, err: errorMessage(err), code: (err as { code?: string }).code }, 'replication peer broke the protocol; stream aborted, nothing of the generation applied')
        await this.dropWriter(true)
      }
      throw err
    } finally {
      this.ac.abort()
      await this.dropWriter(false)
    }
  }

  private publish (): void {
    const s = this.store.state()
    this.c.metrics?.replica.setAppliedGeneration(s.vm, s.source, s.appliedGeneration)
    this.c.onApplied?.(s.source, s.vm)
    // a finalized store is not this source's replica any more: a seed copy next to it was
    // placed for the fresh store this source's next session gets, and must stay for it
    if (s.appliedGeneration > 0 && !s.seeding && !s.finalized && !this.seedDirGone) {
      this.seedDirGone = true
      void this.dropSeedCopy()
    }
  }

  /**
   * The replica is whole (its seed completed): a `<vm>.seed` copy of this source (pre-placed,
   * or a failback's hard links) has served its purpose and only takes space. A later reseed
   * (an empty store) would not use it either: it may be far behind by then.
   */
  private async dropSeedCopy (): Promise<void> {
    const dir = this.c.replicas.seedDirOf(this.from, this.hello.vm)
    const st = await statPath(dir).catch(() => null)
    if (st === null) return
    try {
      await rm(dir, { recursive: true, force: true })
      this.log.info({ peer: this.from, vm: this.hello.vm, dir }, 'seed copy removed: the replica is complete')
    } catch (err) {
      this.log.warn({ peer: this.from, vm: this.hello.vm, dir, err: errorMessage(err) }, 'could not remove the seed copy')
    }
  }

  private async targetState (): Promise<ControlMessage> {
    const s = this.store.state()
    const seed = this.store.seedProgress()
    const idOf = new Map(this.hello.files.map(f => [f.path, f.fileId]))
    let seeding = null
    if (seed !== null) {
      const ranges: FileRange[] = []
      for (const [path, rs] of Object.entries(seed.files)) {
        const fileId = idOf.get(path)
        if (fileId === undefined) continue
        for (const r of rs) if (r.length > 0) ranges.push({ fileId, offset: r.offset, length: r.length })
      }
      seeding = { generation: seed.generation, durableRanges: durableRanges(ranges, 4096) }
    }
    return {
      type: 'targetState',
      vm: this.hello.vm,
      appliedGeneration: s.appliedGeneration,
      appliedConsistentGeneration: Math.min(s.appliedConsistentGeneration, s.appliedGeneration),
      seeding,
      diskFree: await this.c.replicas.diskFree()
    }
  }

  /**
   * seed: existing. Copies the operator's pre-placed files (`<replicas>/<source>/<vm>.seed/<file
   * name>`, e.g. restored from a backup) into the empty store as seed progress, so the source
   * compares hashes and sends only the blocks that differ.
   */
  private async preload (): Promise<void> {
    const st = this.store.state()
    if (st.appliedGeneration !== 0 || st.seeding) return
    const dir = this.c.replicas.seedDirOf(this.from, this.hello.vm)
    const found: Array<{ fileId: number, path: string, size: number }> = []
    for (const f of this.hello.files) {
      const local = join(dir, basename(f.path))
      const s = await statPath(local).catch(() => null)
      if (s?.isFile() === true) found.push({ fileId: f.fileId, path: local, size: Math.min(s.size, f.size) })
    }
    if (found.length === 0) return
    const w = await this.store.beginGeneration({
      generation: 1,
      baseGeneration: 0,
      consistent: false,
      createdAtMs: Math.max(0, Math.floor(this.c.clock.wallNow())),
      files: this.hello.files.map(f => ({ fileId: f.fileId, path: f.path, size: f.size, kind: f.kind === FileKind.WholeFile ? 'whole-file' : 'disk' }))
    })
    try {
      const buf = Buffer.allocUnsafe(4 * 1024 * 1024)
      for (const f of found) {
        const fh = await openFile(f.path, 'r')
        try {
          for (let at = 0; at < f.size;) {
            this.c.revoked?.throwIfAborted()
            const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, f.size - at), at)
            if (bytesRead <= 0) break
            await w.writeBlock(f.fileId, at, buf.subarray(0, bytesRead))
            at += bytesRead
          }
        } finally { await fh.close() }
      }
      await w.checkpoint()
    } finally {
      await w.abort()
    }
    this.adopted = true
    this.log.info({ peer: this.from, vm: this.hello.vm, files: found.map(f => f.path) }, 'seed: existing — pre-placed files loaded; only differing blocks will be sent')
  }

  private async onControl (msg: ControlMessage): Promise<void> {
    switch (msg.type) {
      case 'ping':
        await this.ch.sendItem({ type: 'pong', nonce: msg.nonce, echoTimestampMs: msg.timestampMs, timestampMs: Math.max(0, Math.floor(this.c.clock.wallNow())) })
        return
      case 'hashRequest':
        await this.answerHashes(msg)
        return
      case 'haveQuery':
        await this.answerHave(msg)
        return
      case 'hello':
        throw new PeerProtocolViolationError('second hello in one session')
      default:
        // pongs and anything a newer source may send are ignored
    }
  }

  /** Hashes the replica's blocks (seeding files included), streamed in bounded frames. */
  private async answerHashes (req: HashRequestMessage): Promise<void> {
    const per = this.init.hashesPerFrame ?? 4096
    const file = this.hello.files.find(f => f.fileId === req.fileId)
    const state = this.store.state()
    const path = file !== undefined ? state.files[file.path] : undefined
    const size = file !== undefined ? state.sizes[file.path] ?? 0 : 0
    const end = Math.min(size, req.offset + req.length)
    let at = req.offset
    let hashes: Uint8Array[] = []
    let chunkStart = at
    const flush = async (last: boolean): Promise<void> => {
      await this.ch.sendItem({ type: 'hashResponse', requestId: req.requestId, fileId: req.fileId, offset: chunkStart, blockSize: req.blockSize, hashes, last })
      hashes = []
      chunkStart = at
    }
    if (path !== undefined && at < end) {
      const fh = await openFile(path, 'r')
      try {
        const buf = Buffer.allocUnsafe(Math.min(req.blockSize * 64, 4 * 1024 * 1024))
        const blocksPerRead = Math.floor(buf.length / req.blockSize)
        // bounded: each pass advances `at` by at least one block
        while (at < end) {
          const want = Math.min(blocksPerRead * req.blockSize, end - at)
          const { bytesRead } = await fh.read(buf, 0, want, at)
          if (bytesRead < want) buf.fill(0, bytesRead, want)
          for (const h of hashBlocks(buf, req.blockSize, want)) {
            hashes.push(h)
            at = Math.min(at + req.blockSize, end)
            if (hashes.length >= per && at < end) await flush(false)
          }
        }
      } finally { await fh.close() }
    }
    await flush(true)
  }

  /**
   * haveQuery: copies the blocks this node holds by content (the index reads each candidate back
   * and checks its hash) into the generation, queued behind the writes before them — to the
   * store they are blocks like any other, so the replica ends exactly as if they had arrived
   * (journal, undo and crash rules unchanged). Answers which ones; all false when no index, or
   * the generation is being refused. The copies come ahead of the data stream's lower offsets,
   * so an incremental generation with copies captures its undo log at commit (early-undo.ts).
   */
  private async answerHave (q: HaveQueryMessage): Promise<void> {
    const v = this.validator
    const begin = this.begin
    if (v === undefined || begin === undefined) throw new PeerProtocolViolationError('haveQuery outside a generation')
    if (q.generation !== begin.generation) throw new PeerProtocolViolationError(`haveQuery for generation ${q.generation} inside ${begin.generation}`)
    const file = v.file(q.fileId)
    if (file === undefined) throw new PeerProtocolViolationError(`haveQuery for undeclared fileId ${q.fileId}`)
    for (const b of q.blocks) {
      if (b.length > file.blockSize || b.offset + b.length > file.size) throw new PeerProtocolViolationError(`haveQuery block [${b.offset}, +${b.length}) outside file ${q.fileId} (size ${file.size}, blockSize ${file.blockSize})`)
    }
    const w = this.writer
    const index = this.c.contentIndex
    if (index === undefined || this.discarding || w === undefined || this.writes.failed) {
      await this.ch.sendItem({ type: 'haveAnswer', queryId: q.queryId, held: q.blocks.map(() => false) })
      return
    }
    const found = await index.fetchMany(q.blocks.map(b => ({ hash: b.hash, length: b.length })), this.ac.signal)
    const hits: Array<{ offset: number, data: Uint8Array }> = []
    const indexable: Indexable[] = []
    let bytes = 0
    found.forEach((data, i) => {
      const b = q.blocks[i]
      if (data === undefined || b === undefined) return
      hits.push({ offset: b.offset, data })
      bytes += data.byteLength
      if (isIndexable(file, b.offset, b.length)) indexable.push({ fileId: q.fileId, offset: b.offset, length: b.length, hash: Uint8Array.from(b.hash) })
    })
    if (hits.length > 0) {
      const runs = gatherRuns(hits)
      const fileId = q.fileId
      const seeding = begin.baseGeneration === 0
      await this.writes.push(bytes, async () => {
        for (const run of runs) await w.writeBlock(fileId, run.offset, run.parts)
        if (seeding) this.indexNow(indexable)
      })
      if (!seeding) this.indexAfterCommit(indexable)
      this.copiedNow.blocks += hits.length
      this.copiedNow.bytes += bytes
      this.c.onCopied?.(hits.length, bytes)
    }
    await this.ch.sendItem({ type: 'haveAnswer', queryId: q.queryId, held: found.map(d => d !== undefined) })
  }

  /** Blocks now in the replica files (a seed's, written in place): into the content index. */
  private indexNow (blocks: Indexable[]): void {
    const index = this.c.contentIndex
    if (index === undefined || blocks.length === 0) return
    const files = this.store.state().files
    const pathOf = new Map((this.begin?.files ?? []).map(f => [f.fileId, files[f.path]]))
    for (const b of blocks) {
      const path = pathOf.get(b.fileId)
      if (path !== undefined) index.add(b.hash, { path, offset: b.offset, length: b.length })
    }
  }

  /** An incremental generation's blocks: into the content index once it is committed (bounded; beyond, they are simply not indexed). */
  private indexAfterCommit (blocks: Indexable[]): void {
    if (this.c.contentIndex === undefined) return
    for (const b of blocks) {
      if (this.indexPending.length >= INDEX_PENDING_MAX) return
      this.indexPending.push(b)
    }
  }

  private async onFrame (frame: Frame): Promise<void> {
    if (frame.type === 'begin') {
      this.timing = { wait: 0, decode: 0, write: 0, drain: 0, began: this.c.clock.now() }
      this.validator = new GenerationValidator()
      this.validator.accept(frame)
      this.begin = frame
      this.discarding = false
      this.indexPending = []
      this.copiedNow = { blocks: 0, bytes: 0 }
      if (frame.vm !== this.hello.vm) throw new PeerProtocolViolationError(`generation for ${frame.vm} in a session for ${this.hello.vm}`)
      try {
        this.writer = await this.store.beginGeneration({
          generation: frame.generation,
          baseGeneration: frame.baseGeneration,
          consistent: frame.consistent,
          createdAtMs: frame.createdAtMs,
          files: frame.files.map(f => ({ fileId: f.fileId, path: f.path, size: f.size, kind: f.kind === FileKind.WholeFile ? 'whole-file' : 'disk' }))
        }, { signal: this.ac.signal, ...(this.adopted && frame.baseGeneration === 0 ? { keepSeedProgress: true } : {}) })
      } catch (err) {
        await this.refuse(frame.generation, err)
      }
      return
    }
    const v = this.validator
    if (v === undefined) throw new PeerProtocolViolationError(`${frame.type} before begin`)
    v.accept(frame)
    const gen = this.begin?.generation ?? 0
    if (frame.type === 'blocks') {
      const w = this.writer
      if (this.discarding || w === undefined) { this.ch.release(frame); return }
      if (this.writes.failed) { this.ch.release(frame); await this.refuseQueued(gen); return }
      const file = v.file(frame.fileId)
      // every block of the frame is verified before any of it is queued
      const td = this.c.clock.now()
      let lz4Bytes = 0
      for (const e of frame.entries) if (e.encoding === BlockEncoding.Lz4) lz4Bytes += e.length
      const into = lz4Bytes > 0 ? Buffer.allocUnsafe(lz4Bytes) : undefined
      let intoAt = 0
      const decoded: Array<{ offset: number, data: Uint8Array }> = []
      const indexable: Indexable[] = []
      const indexing = this.c.contentIndex !== undefined && file !== undefined
      let raw = 0
      for (const e of frame.entries) {
        try {
          const data = decodeBlock(e, { maxLength: file?.blockSize ?? 1, sharedZero: true, ...(into !== undefined ? { into: into.subarray(intoAt) } : {}) })
          if (e.encoding === BlockEncoding.Lz4) intoAt += e.length
          decoded.push({ offset: e.offset, data })
          raw += e.length
          // the checksum was verified against the data: it is the block's content hash (a copy:
          // the frame's buffer goes back to the pool)
          if (indexing && e.encoding !== BlockEncoding.Zero && isIndexable(file, e.offset, e.length)) indexable.push({ fileId: frame.fileId, offset: e.offset, length: e.length, hash: Uint8Array.from(e.checksum) })
        } catch (err) {
          if (!isResendableBlockError(err)) throw err
          this.ch.release(frame)
          await this.ch.sendItem({ type: 'resend', generation: gen, fileId: frame.fileId, offset: e.offset, length: e.length })
          await this.refuse(gen, err, true)
          return
        }
      }
      const tw = this.c.clock.now()
      this.timing.decode += tw - td
      const runs = gatherRuns(decoded)
      const fileId = frame.fileId
      const seeding = this.begin?.baseGeneration === 0
      await this.writes.push(raw, async () => {
        for (const run of runs) await w.writeBlock(fileId, run.offset, run.parts)
        if (seeding) this.indexNow(indexable)
      }, () => { this.ch.release(frame) })
      if (!seeding) this.indexAfterCommit(indexable)
      this.timing.write += this.c.clock.now() - tw
      this.c.onBytes?.(this.from, this.hello.vm, frame.entries.reduce((n, e) => n + e.payload.byteLength, 0))
      return
    }
    if (frame.type === 'resize') {
      const w = this.writer
      if (this.discarding || w === undefined) return
      if (this.writes.failed) { await this.refuseQueued(gen); return }
      const { fileId, size } = frame
      await this.writes.push(0, async () => { await w.setSize(fileId, size) })
      return
    }
    // end: the validator checked counts and digest
    const w = this.writer
    this.validator = undefined
    // the pool sized for a stream of frames is not needed between generations
    this.ch.trimPool()
    if (this.discarding || w === undefined) {
      this.writer = undefined
      this.discarding = false
      return
    }
    const tq = this.c.clock.now()
    if (!await this.writes.drain().then(() => true, () => false)) {
      await this.refuseQueued(gen)
      this.discarding = false
      return
    }
    this.timing.drain = this.c.clock.now() - tq
    this.writer = undefined
    // the ack goes out as soon as the generation is durable (redo journal and commit record
    // synced): the source moves on while the in-place writes, their fsync and the state switch
    // finish; the next generation's frames wait in the channel until this commit returns
    let ackSent: Promise<void> | undefined
    let durableMs = 0
    const tc = this.c.clock.now()
    const ack = (): void => {
      if (ackSent !== undefined) return
      durableMs = this.c.clock.now() - tc
      ackSent = this.ch.sendItem({ type: 'ack', generation: gen, durable: true, appliedAtMs: Math.max(0, Math.floor(this.c.clock.wallNow())) }).then(() => {})
      ackSent.catch(() => {})
    }
    try {
      const r = await w.commit({ onDurable: ack })
      // committed: the files hold the generation's blocks now
      const pending = this.indexPending
      this.indexPending = []
      this.indexNow(pending)
      const t = this.timing
      this.log.debug({ vm: this.hello.vm, generation: r.generation, bytes: r.dataBytes, copiedFromIndexBlocks: this.copiedNow.blocks, copiedFromIndexBytes: this.copiedNow.bytes, waitMs: Math.round(t.wait), verifyMs: Math.round(t.decode), queueWaitMs: Math.round(t.write), drainMs: Math.round(t.drain), durableMs: Math.round(durableMs), commitMs: Math.round(this.c.clock.now() - tc), totalMs: Math.round(this.c.clock.now() - t.began) }, 'generation applied')
      ack()
      await ackSent
      this.publish()
    } catch (err) {
      if (ackSent === undefined) {
        await this.refuse(gen, err)
        this.discarding = false
        return
      }
      // acknowledged as durable, then not applied (recovery will settle it): a nack now would
      // contradict the ack, so the session ends and the next one reconciles from targetState
      throw new ReplicaApplyAfterAckError(`generation ${gen} was acknowledged as durable but its apply failed: ${errorMessage(err)}`, { cause: err })
    }
  }

  /** A queued write failed: refuse the generation with that failure. */
  private async refuseQueued (generation: number): Promise<void> {
    await this.refuse(generation, this.writes.error)
  }

  /** Nacks the current generation and drops its writer; later frames of it are ignored. */
  private async refuse (generation: number, err: unknown, badData = false): Promise<void> {
    if (err instanceof ReplicaClosedError || err instanceof ReplicaStoreRevokedError) {
      // a nack would leave the source sending into this store again and again: end the session
      if (err instanceof ReplicaClosedError) this.log.error({ peer: this.from, vm: this.hello.vm, generation }, 'a receiving session reached a closed replica store; the session ends')
      this.discarding = true
      await this.dropWriter(false)
      throw err instanceof ReplicaStoreRevokedError ? err : new ReplicaStoreRevokedError(`the replica store of ${this.hello.vm} from ${this.from} is closed`, { cause: err })
    }
    const code = nackCodeFor(err)
    this.log.warn({ peer: this.from, vm: this.hello.vm, generation, code: NackCode[code], err: errorMessage(err) }, 'generation refused')
    this.discarding = true
    await this.dropWriter(badData)
    await this.ch.sendItem({
      type: 'nack',
      generation,
      code,
      message: errorMessage(err).slice(0, 200).replace(/\0/g, ''),
      ...(code === NackCode.DiskFull ? { retryAfterMs: 5000 } : {})
    })
  }

  private async dropWriter (discardSeedProgress: boolean): Promise<void> {
    const w = this.writer
    this.writer = undefined
    // queued writes finish (or fail) first: a writer refuses to be aborted mid-call
    await this.writes.reset()
    // a session that merely ended (link cut, peer gone) keeps every seed block it wrote: they
    // were verified on arrival, and a resumed seed compares hashes before skipping anything
    if (w?.seeding === true && !discardSeedProgress) await w.checkpoint().catch(() => {})
    if (w !== undefined) await w.abort(discardSeedProgress ? { discardSeedProgress: true } : {}).catch(() => {})
  }
}

/**
 * Contiguous blocks as runs of parts for gathered writes (bounded in bytes and parts): each
 * run is written without first being copied into one buffer.
 */
function gatherRuns (blocks: Array<{ offset: number, data: Uint8Array }>): Array<{ offset: number, parts: Uint8Array[] }> {
  const runs: Array<{ offset: number, parts: Uint8Array[] }> = []
  let cur: { offset: number, parts: Uint8Array[], end: number, bytes: number } | undefined
  for (const b of blocks) {
    const n = b.data.byteLength
    if (cur !== undefined && b.offset === cur.end && cur.bytes + n <= RUN_MAX_BYTES && cur.parts.length < RUN_MAX_PARTS) {
      cur.parts.push(b.data)
      cur.end += n
      cur.bytes += n
      continue
    }
    cur = { offset: b.offset, parts: [b.data], end: b.offset + n, bytes: n }
    runs.push(cur)
  }
  return runs.map(r => ({ offset: r.offset, parts: r.parts }))
}

/**
 * Whether a block is one the content index keeps: a whole block at a block boundary (or the
 * file's last, short one) — the unit a source asks for. Sub-block pieces are not.
 */
function isIndexable (file: { blockSize: number, size: number }, offset: number, length: number): boolean {
  return offset % file.blockSize === 0 && (length === file.blockSize || (length < file.blockSize && offset + length === file.size))
}

function isControl (item: { type: string }): item is ControlMessage {
  return item.type !== 'begin' && item.type !== 'blocks' && item.type !== 'resize' && item.type !== 'end'
}
