/**
 * Target side of replication: accepts sessions on REPLICATION_PROTOCOL and applies the
 * generations they carry to this node's replica stores.
 *
 * Session: hello (source node must be the peer on the connection) → open the store of
 * (source, vm) → targetState → then, in order, generations and control requests:
 *   begin  → beginGeneration (a seed when base is 0: written in place, resumable)
 *   blocks → each block decoded with its checksum verified, then awaited writeBlock
 *   end    → commit, then ack
 * Every frame passes a GenerationValidator first. A block whose checksum fails is refused
 * (resend + nack; the rest of that generation is read and dropped, nothing of it applied, the
 * session goes on). Anything that breaks framing or generation structure aborts the stream: the
 * writer is discarded (a seed also drops its progress, since we no longer trust what came), and
 * only this session is affected. Storage refusals (disk full, base mismatch) become nacks.
 * Backpressure comes from the Channel: while writes lag, the stream is paused.
 */
import { open as openFile, stat as statPath } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { hash as blake3Hash } from 'blake3'
import type { Libp2p, Stream, Connection } from '@libp2p/interface'
import {
  REPLICATION_PROTOCOL, CONTROL_PROTOCOL_VERSION, NackCode, SeedMode, nackCodeFor,
  type HelloMessage, type HashRequestMessage, type ControlMessage, type FileRange
} from '../../protocol/replication/index.ts'
import { durableRanges } from '../../protocol/replication/ranges.ts'
import {
  GenerationValidator, decodeBlock, FileKind, DeltaProtocolError,
  type BeginFrame, type Frame
} from '../../protocol/delta/index.ts'
import type { GenerationWriter, ReplicaStore } from '../../storage/replica/index.ts'
import type { Clock } from '../../common/clock.ts'
import { errorMessage } from '../../common/errors.ts'
import type { Logger } from '../log.ts'
import { Channel, type StreamLike } from './channel.ts'
import { ReplicaRegistry } from './replicas.ts'
import { PeerProtocolViolationError, ReplicationTimeoutError } from './errors.ts'
import type { VmeshMetrics } from '../metrics/registry.ts'

export interface ReceiverComponents {
  clock: Clock
  log: Logger
  replicas: ReplicaRegistry
  /** Configured name of a peer ID (undefined: not in mesh.peers). */
  peerName: (peerId: string) => string | undefined
  metrics?: VmeshMetrics
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

const CHECKSUM_CODES = new Set(['ERR_DELTA_CHECKSUM_MISMATCH', 'ERR_DELTA_DECOMPRESS', 'ERR_DELTA_BAD_ENCODING', 'ERR_DELTA_BLOCK_TOO_LARGE'])

export class ReplicationReceiver {
  private readonly sessions = new Map<string, Session>()
  private readonly all = new Set<Channel>()
  private running = false
  private libp2p: Libp2p | undefined
  private readonly closedBytes = new Map<string, number>()
  /** Sessions aborted because the peer's bytes were bad (tests read it). */
  protocolErrors = 0

  constructor (private readonly components: ReceiverComponents, private readonly init: ReceiverInit = {}) {}

  async start (libp2p?: Libp2p): Promise<void> {
    if (this.running) return
    this.running = true
    this.libp2p = libp2p
    await libp2p?.handle(REPLICATION_PROTOCOL, (stream: Stream, connection: Connection) => {
      void this.accept(stream as unknown as StreamLike, connection.remotePeer.toString())
    }, { maxInboundStreams: 1024, maxOutboundStreams: 1024, runOnLimitedConnection: false })
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    await this.libp2p?.unhandle(REPLICATION_PROTOCOL).catch(() => {})
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
        await channel.sendItem({ type: 'refuse', generation: 0, code: NackCode.ProtocolError, message: `protocol version ${hello.protocolVersion} not supported` })
        await channel.close()
        return
      }
      key = `${from}/${hello.vm}`
      const prev = this.sessions.get(key)
      if (prev !== undefined) { prev.channel.abort(new Error('superseded by a new session')); await prev.done.catch(() => {}) }
      this.sessions.set(key, { channel, done })
      const store = await this.components.replicas.open(from, hello.vm)
      await new SessionRunner(this, channel, store, hello, from).run()
    } catch (err) {
      if (!channel.closed) log.warn({ peer: from, err: errorMessage(err) }, 'replication session failed')
      else log.debug({ peer: from, err: errorMessage(err) }, 'replication session ended')
      channel.abort(err instanceof Error ? err : new Error(errorMessage(err)))
    } finally {
      this.all.delete(channel)
      if (key !== undefined) this.closedBytes.set(key, (this.closedBytes.get(key) ?? 0) + channel.bytesIn)
      if (key !== undefined && this.sessions.get(key)?.channel === channel) this.sessions.delete(key)
      resolveDone()
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

  /** Stream bytes received from `source` for `vm` since start (closed and live sessions). */
  bytesReceived (source: string, vm: string): number {
    const key = `${source}/${vm}`
    return (this.closedBytes.get(key) ?? 0) + (this.sessions.get(key)?.channel.bytesIn ?? 0)
  }

  /** @internal */
  get deps (): ReceiverComponents & { init: ReceiverInit } { return { ...this.components, init: this.init } }
}

/** One session's state machine over the channel. */
class SessionRunner {
  private validator: GenerationValidator | undefined
  private writer: GenerationWriter | undefined
  private begin: BeginFrame | undefined
  /** seed: existing pre-loaded local copies as seed progress: the first seed keeps it. */
  private adopted = false
  /** The current generation was refused: read the rest of it, apply nothing. */
  private discarding = false
  private readonly ac = new AbortController()
  /** Where this generation's time went (debug log at commit). */
  private timing = { wait: 0, decode: 0, write: 0, began: 0 }

  constructor (private readonly rx: ReplicationReceiver, private readonly ch: Channel, private readonly store: ReplicaStore, private readonly hello: HelloMessage, private readonly from: string) {}

  private get log (): Logger { return this.rx.deps.log }

  async run (): Promise<void> {
    try {
      if (this.hello.seedMode === SeedMode.Existing) await this.preload()
      await this.ch.sendItem(await this.targetState())
      this.publish()
      for (;;) {
        const tw = this.rx.deps.clock.now()
        const item = await this.ch.next()
        this.timing.wait += this.rx.deps.clock.now() - tw
        if (item === null) break
        if (isControl(item)) await this.onControl(item)
        else await this.onFrame(item)
      }
    } catch (err) {
      if (err instanceof DeltaProtocolError || isProtocolCode(err)) {
        this.rx.protocolErrors++
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
    this.rx.deps.metrics?.replica.setAppliedGeneration(s.vm, s.source, s.appliedGeneration)
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
      diskFree: await this.rx.deps.replicas.diskFree()
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
    const dir = this.rx.deps.replicas.seedDirOf(this.from, this.hello.vm)
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
      createdAtMs: Math.max(0, Math.floor(this.rx.deps.clock.wallNow())),
      files: this.hello.files.map(f => ({ fileId: f.fileId, path: f.path, size: f.size, kind: f.kind === FileKind.WholeFile ? 'whole-file' : 'disk' }))
    })
    try {
      const buf = Buffer.allocUnsafe(4 * 1024 * 1024)
      for (const f of found) {
        const fh = await openFile(f.path, 'r')
        try {
          for (let at = 0; at < f.size;) {
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
        await this.ch.sendItem({ type: 'pong', nonce: msg.nonce, echoTimestampMs: msg.timestampMs, timestampMs: Math.max(0, Math.floor(this.rx.deps.clock.wallNow())) })
        return
      case 'hashRequest':
        await this.answerHashes(msg)
        return
      case 'hello':
        throw new PeerProtocolViolationError('second hello in one session')
      default:
        // pongs and anything a newer source may send are ignored
    }
  }

  /** Hashes the replica's blocks (seeding files included), streamed in bounded frames. */
  private async answerHashes (req: HashRequestMessage): Promise<void> {
    const per = this.rx.deps.init.hashesPerFrame ?? 4096
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
          for (let o = 0; o < want; o += req.blockSize) {
            const len = Math.min(req.blockSize, want - o)
            hashes.push(new Uint8Array(blake3Hash(buf.subarray(o, o + len), { length: 16 })))
            at += len
            if (hashes.length >= per && at < end) await flush(false)
          }
        }
      } finally { await fh.close() }
    }
    await flush(true)
  }

  private async onFrame (frame: Frame): Promise<void> {
    if (frame.type === 'begin') {
      this.timing = { wait: 0, decode: 0, write: 0, began: this.rx.deps.clock.now() }
      this.validator = new GenerationValidator()
      this.validator.accept(frame)
      this.begin = frame
      this.discarding = false
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
      if (this.discarding || this.writer === undefined) return
      const file = v.file(frame.fileId)
      // every block of the frame is verified before any of it is written; contiguous blocks
      // are then written as one run through a reused scratch buffer: one write (and one await
      // of the thread pool) per run instead of per 64 KiB block, without allocating
      const decoded: Array<{ offset: number, data: Uint8Array }> = []
      const td = this.rx.deps.clock.now()
      for (const e of frame.entries) {
        try {
          decoded.push({ offset: e.offset, data: decodeBlock(e, { maxLength: file?.blockSize ?? 1 }) })
        } catch (err) {
          if (!CHECKSUM_CODES.has((err as { code?: string }).code ?? '')) throw err
          await this.ch.sendItem({ type: 'resend', generation: gen, fileId: frame.fileId, offset: e.offset, length: e.length })
          await this.refuse(gen, err, true)
          return
        }
      }
      const tw = this.rx.deps.clock.now()
      this.timing.decode += tw - td
      try {
        for (const run of this.runs(decoded)) await this.writer.writeBlock(frame.fileId, run.offset, run.data)
        this.timing.write += this.rx.deps.clock.now() - tw
      } catch (err) {
        await this.refuse(gen, err)
        return
      }
      this.rx.deps.init.onBytes?.(this.from, this.hello.vm, frame.entries.reduce((n, e) => n + e.payload.byteLength, 0))
      return
    }
    if (frame.type === 'resize') {
      if (this.discarding || this.writer === undefined) return
      try { await this.writer.setSize(frame.fileId, frame.size) } catch (err) { await this.refuse(gen, err) }
      return
    }
    // end: the validator checked counts and digest
    const w = this.writer
    this.writer = undefined
    this.validator = undefined
    if (this.discarding || w === undefined) { this.discarding = false; return }
    try {
      const tc = this.rx.deps.clock.now()
      const r = await w.commit()
      this.log.debug({ vm: this.hello.vm, generation: r.generation, bytes: r.dataBytes, waitMs: Math.round(this.timing.wait), decodeMs: Math.round(this.timing.decode), writeMs: Math.round(this.timing.write), commitMs: Math.round(this.rx.deps.clock.now() - tc), totalMs: Math.round(this.rx.deps.clock.now() - this.timing.began) }, 'generation applied')
      await this.ch.sendItem({ type: 'ack', generation: r.generation, durable: true, appliedAtMs: Math.max(0, Math.floor(this.rx.deps.clock.wallNow())) })
      this.publish()
    } catch (err) {
      await this.refuse(gen, err)
      this.discarding = false
    }
  }

  private scratch: Buffer | undefined

  /**
   * Contiguous blocks as runs of at most 1 MiB, copied into one scratch buffer that is reused:
   * safe because each run is awaited (both writers copy or write the data before resolving).
   */
  private * runs (blocks: Array<{ offset: number, data: Uint8Array }>): Generator<{ offset: number, data: Uint8Array }> {
    const cap = 1024 * 1024
    let i = 0
    while (i < blocks.length) {
      const first = blocks[i] as { offset: number, data: Uint8Array }
      let j = i + 1
      let bytes = first.data.byteLength
      while (j < blocks.length) {
        const b = blocks[j] as { offset: number, data: Uint8Array }
        if (b.offset !== first.offset + bytes || bytes + b.data.byteLength > cap) break
        bytes += b.data.byteLength
        j++
      }
      if (j === i + 1) {
        yield first
      } else {
        this.scratch ??= Buffer.allocUnsafe(cap)
        let at = 0
        for (let k = i; k < j; k++) { const d = (blocks[k] as { data: Uint8Array }).data; this.scratch.set(d, at); at += d.byteLength }
        yield { offset: first.offset, data: this.scratch.subarray(0, bytes) }
      }
      i = j
    }
  }

  /** Nacks the current generation and drops its writer; later frames of it are ignored. */
  private async refuse (generation: number, err: unknown, badData = false): Promise<void> {
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
    if (w !== undefined) await w.abort(discardSeedProgress ? { discardSeedProgress: true } : {}).catch(() => {})
  }
}

function isControl (item: { type: string }): item is ControlMessage {
  return item.type !== 'begin' && item.type !== 'blocks' && item.type !== 'resize' && item.type !== 'end'
}

function isProtocolCode (err: unknown): boolean {
  const c = (err as { code?: unknown } | null)?.code
  return typeof c === 'string' && (c.startsWith('ERR_DELTA_') || c.startsWith('ERR_REPLICATION_') && c !== 'ERR_REPLICATION_STREAM_CLOSED')
}

