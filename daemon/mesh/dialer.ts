/**
 * Keeps a connection open to every configured peer. Each peer has its own redial schedule with
 * capped exponential backoff and jitter (so a rebooting site does not get hammered in lockstep);
 * a disconnect resets the backoff and redials at once, since the peer may only have dropped one
 * connection. `nudge()` lets protocols ask for a prompt redial when they find no connection.
 */
import type { Libp2p } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { Clock, TimerHandle } from '../../common/clock.ts'
import type { Random } from '../../common/random.ts'

export interface DialerPeer { id: string, addrs: string[] }

export interface DialerComponents {
  libp2p: Libp2p
  clock: Clock
  random: Random
  log?: (msg: string, fields?: Record<string, unknown>) => void
}

export interface DialerInit {
  peers: DialerPeer[]
  /** @default 250 */
  minBackoffMs?: number
  /** @default 10000 */
  maxBackoffMs?: number
  /** @default 3000 */
  dialTimeoutMs?: number
}

interface PeerState { peer: DialerPeer, backoffMs: number, timer?: TimerHandle, dialing: boolean, failures: number }

export class Dialer {
  private readonly peers = new Map<string, PeerState>()
  private started = false
  private readonly minBackoff: number
  private readonly maxBackoff: number
  private readonly dialTimeout: number
  private readonly onDisconnect = (evt: CustomEvent): void => { this.disconnected(evt.detail.toString()) }

  constructor (private readonly components: DialerComponents, init: DialerInit) {
    this.minBackoff = init.minBackoffMs ?? 250
    this.maxBackoff = init.maxBackoffMs ?? 10_000
    this.dialTimeout = init.dialTimeoutMs ?? 3000
    this.setPeers(init.peers)
  }

  /** Replaces the peer set (reload); new peers are dialed, removed ones forgotten. */
  setPeers (peers: DialerPeer[]): void {
    const keep = new Set(peers.map(p => p.id))
    for (const [id, st] of this.peers) if (!keep.has(id)) { this.components.clock.clearTimeout(st.timer); this.peers.delete(id) }
    for (const p of peers) {
      const st = this.peers.get(p.id)
      if (st !== undefined) { st.peer = p; continue }
      this.peers.set(p.id, { peer: p, backoffMs: this.minBackoff, dialing: false, failures: 0 })
      if (this.started) this.schedule(p.id, 0)
    }
  }

  start (): void {
    if (this.started) return
    this.started = true
    this.components.libp2p.addEventListener('peer:disconnect', this.onDisconnect)
    for (const id of this.peers.keys()) this.schedule(id, 0)
  }

  stop (): void {
    if (!this.started) return
    this.started = false
    this.components.libp2p.removeEventListener('peer:disconnect', this.onDisconnect)
    for (const st of this.peers.values()) { this.components.clock.clearTimeout(st.timer); st.timer = undefined }
  }

  /** Dial soon if not connected and no dial is under way (used when a send found no connection). */
  nudge (id: string): void {
    const st = this.peers.get(id)
    if (st === undefined || !this.started || st.dialing) return
    if (st.failures === 0) this.schedule(id, 0)
  }

  private disconnected (id: string): void {
    const st = this.peers.get(id)
    if (st === undefined || !this.started) return
    st.backoffMs = this.minBackoff
    st.failures = 0
    this.schedule(id, 0)
  }

  private schedule (id: string, delayMs: number): void {
    const st = this.peers.get(id)
    if (st === undefined) return
    this.components.clock.clearTimeout(st.timer)
    st.timer = this.components.clock.setTimeout(() => { st.timer = undefined; void this.dial(st) }, delayMs)
  }

  private async dial (st: PeerState): Promise<void> {
    if (!this.started || st.dialing) return
    const libp2p = this.components.libp2p
    const peerId = peerIdFromString(st.peer.id)
    if (libp2p.getConnections(peerId).length > 0) { st.backoffMs = this.minBackoff; st.failures = 0; return }
    st.dialing = true
    try {
      await libp2p.peerStore.merge(peerId, { multiaddrs: st.peer.addrs.map(a => multiaddr(a)) })
      await libp2p.dial(peerId, { signal: AbortSignal.timeout(this.dialTimeout) })
      st.backoffMs = this.minBackoff
      st.failures = 0
    } catch (err) {
      st.failures++
      const jitter = 0.5 + this.components.random.next()
      const delay = Math.min(this.maxBackoff, st.backoffMs) * jitter
      st.backoffMs = Math.min(this.maxBackoff, st.backoffMs * 2)
      if (st.failures === 1 || st.failures % 20 === 0) this.components.log?.('dial failed', { peer: st.peer.id, failures: st.failures, retryMs: Math.round(delay), error: (err as Error).message })
      if (this.started) this.schedule(st.peer.id, delay)
    } finally {
      st.dialing = false
    }
  }
}
