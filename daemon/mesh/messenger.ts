/**
 * Small-message delivery over libp2p for the control-plane protocols (membership, election).
 * One long-lived outbound stream per (peer, protocol), opened on first use; frames are
 * length-prefixed. Delivery is best effort by design — the state machines above already
 * treat the network as lossy — so a message for an unconnected peer is dropped (and the
 * dialer is nudged) instead of queued: stale probes are worse than lost ones.
 *
 * Inbound frames from a peer that break the framing are a protocol violation: the stream is
 * aborted and the event reported; other peers are unaffected.
 */
import type { Libp2p, Stream, Connection } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { encodeLengthPrefixed, LengthPrefixedDecoder } from './framing.ts'
import { errorMessage } from '../../common/errors.ts'

export interface MessengerInit {
  protocol: string
  /** @default 65536 */
  maxFrameBytes?: number
  /** Frames queued per peer while its stream opens; beyond this, the oldest are dropped. @default 64 */
  maxQueued?: number
}

export interface MessengerComponents {
  libp2p: Libp2p
  /** Asked to (re)dial a peer we wanted to talk to but are not connected to. */
  requestDial?: (peerId: string) => void
  onMessage: (from: string, body: Uint8Array) => void
  onProtocolError?: (from: string, error: string) => void
}

interface Outbound { stream?: Stream, opening?: Promise<void>, queue: Uint8Array[] }

export class Messenger {
  private readonly out = new Map<string, Outbound>()
  private readonly inbound = new Set<Stream>()
  private readonly maxFrameBytes: number
  private readonly maxQueued: number
  private started = false

  constructor (private readonly components: MessengerComponents, private readonly init: MessengerInit) {
    this.maxFrameBytes = init.maxFrameBytes ?? 65536
    this.maxQueued = init.maxQueued ?? 64
  }

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    await this.components.libp2p.handle(this.init.protocol, (stream, connection) => { this.accept(stream, connection) }, { maxInboundStreams: 8, runOnLimitedConnection: false })
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    await this.components.libp2p.unhandle(this.init.protocol)
    for (const o of this.out.values()) o.stream?.abort(new Error('messenger stopped'))
    for (const s of this.inbound) s.abort(new Error('messenger stopped'))
    this.out.clear()
    this.inbound.clear()
  }

  /** Best-effort send; returns false when the message was dropped. */
  send (to: string, body: Uint8Array): boolean {
    if (!this.started) return false
    if (body.byteLength > this.maxFrameBytes) throw new RangeError(`message of ${body.byteLength} bytes exceeds ${this.maxFrameBytes}`)
    let o = this.out.get(to)
    if (o?.stream != null && o.stream.status === 'open' && o.stream.writeStatus === 'writable') {
      o.stream.send(encodeLengthPrefixed(body))
      return true
    }
    const peerId = peerIdFromString(to)
    if (this.components.libp2p.getConnections(peerId).length === 0) {
      this.components.requestDial?.(to)
      return false
    }
    if (o === undefined) { o = { queue: [] }; this.out.set(to, o) }
    o.queue.push(body)
    if (o.queue.length > this.maxQueued) o.queue.shift()
    if (o.opening === undefined) o.opening = this.open(to, o)
    return true
  }

  private async open (to: string, o: Outbound): Promise<void> {
    try {
      const stream = await this.components.libp2p.dialProtocol(peerIdFromString(to), this.init.protocol, { signal: AbortSignal.timeout(5000) })
      if (!this.started) { stream.abort(new Error('messenger stopped')); return }
      o.stream = stream
      const forget = (): void => { if (o.stream === stream) o.stream = undefined }
      stream.addEventListener('close', forget)
      // we never expect data on our outbound stream; drain it so nothing accumulates
      stream.addEventListener('message', () => {})
      for (const body of o.queue.splice(0)) stream.send(encodeLengthPrefixed(body))
    } catch {
      o.queue.length = 0
    } finally {
      o.opening = undefined
    }
  }

  private accept (stream: Stream, connection: Connection): void {
    const from = connection.remotePeer.toString()
    const decoder = new LengthPrefixedDecoder(this.maxFrameBytes)
    this.inbound.add(stream)
    stream.addEventListener('message', (evt) => {
      let frames: Uint8Array[]
      try {
        frames = decoder.push(evt.data)
      } catch (err) {
        this.components.onProtocolError?.(from, errorMessage(err))
        stream.abort(err as Error)
        return
      }
      for (const f of frames) this.components.onMessage(from, f)
    })
    stream.addEventListener('close', () => { this.inbound.delete(stream) })
    stream.addEventListener('remoteCloseWrite', () => { void stream.close().catch(() => {}) })
  }
}
