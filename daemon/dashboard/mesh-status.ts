/**
 * Mesh-wide status: every node sends its connected peers a small summary of its own status
 * (protocol/status-summary) every `intervalMs` and at once when a member changes state, and
 * keeps the newest summary heard from each peer with the local monotonic time it arrived.
 * `view()` is every configured node with its summary and that summary's age; a summary is
 * `stale` when it is older than `staleMs` or its node is not alive in our failure detector —
 * the page and `vmesh status --mesh` then show it greyed with its age, never as current.
 *
 *   NodeStatusService.status() ─summarize─▶ encode ─▶ Messenger (/vmesh/status-summary/1.0.0) ─▶ peers
 *   peers ─▶ decode (bounded, typed error; bad frames are dropped) ─▶ latest[node] ─▶ view() ─▶ GET /v1/status/mesh
 */
import { EventEmitter } from 'node:events'
import type { Libp2p } from '@libp2p/interface'
import type { Clock, TimerHandle } from '../../common/clock.ts'
import { errorMessage } from '../../common/errors.ts'
import type { Logger } from '../log.ts'
import { Messenger } from '../mesh/messenger.ts'
import type { RouteRegistry } from '../api/routes.ts'
import type { StatusDocument } from '../status.ts'
import { STATUS_SUMMARY_MAX_MESSAGE_BYTES, STATUS_SUMMARY_PROTOCOL, decodeStatusSummary, encodeStatusSummary, type StatusSummaryMessage } from '../../protocol/status-summary/index.ts'

export interface MeshStatusComponents {
  clock: Clock
  log: Logger
  libp2p: Libp2p
  /** This node's own status (NodeStatusService). */
  status: { status: () => StatusDocument }
  membership: { onMember: (fn: (e: { id: string }) => void) => () => void }
  api: Pick<RouteRegistry, 'route'>
  requestDial?: (peerId: string) => void
}

export interface MeshStatusSettings {
  node: string
  role: 'host' | 'witness'
  /** The configured peers (name ↔ peer ID, role). */
  peers: Array<{ name: string, id: string, role: 'host' | 'witness' }>
  /** How often the summary is sent. @default 1000 */
  intervalMs?: number
  /** A summary older than this is stale. @default 3000 */
  staleMs?: number
}

export interface MeshNodeView {
  name: string
  role: 'host' | 'witness'
  self: boolean
  /** Our failure detector's view of it ('self' for this node). */
  state: 'self' | 'alive' | 'suspect' | 'dead'
  connected: boolean
  /** ms since its newest summary arrived (0 for self); null: never heard. */
  ageMs: number | null
  stale: boolean
  summary: StatusSummaryMessage | null
}

export interface MeshStatusView {
  node: string
  atWallMs: number
  nodes: MeshNodeView[]
}

export interface MeshStatusEvents { change: [] }

export class MeshStatusService extends EventEmitter<MeshStatusEvents> {
  private readonly messenger: Messenger
  private readonly latest = new Map<string, { msg: StatusSummaryMessage, at: number }>()
  private settings: MeshStatusSettings
  private idToName = new Map<string, string>()
  private seq = 0
  private timer?: TimerHandle
  private pushTimer?: TimerHandle
  private unsubscribe?: () => void
  private started = false
  readonly stats = { sent: 0, received: 0, decodeErrors: 0 }
  private readonly onConnect = (evt: CustomEvent): void => { this.sendTo(evt.detail.toString(), true) }

  constructor (private readonly components: MeshStatusComponents, init: MeshStatusSettings) {
    super()
    this.settings = init
    this.mapNames()
    this.messenger = new Messenger({
      libp2p: components.libp2p,
      ...(components.requestDial !== undefined ? { requestDial: components.requestDial } : {}),
      onMessage: (from, body) => { this.receive(from, body) },
      onProtocolError: (from, error) => { this.stats.decodeErrors++; components.log.warn({ peer: from, error }, 'status summary stream violated framing; reset') }
    }, { protocol: STATUS_SUMMARY_PROTOCOL, maxFrameBytes: STATUS_SUMMARY_MAX_MESSAGE_BYTES, maxQueued: 2 })
    components.api.route('GET', '/v1/status/mesh', () => this.view())
  }

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    await this.messenger.start()
    this.components.libp2p.addEventListener('peer:connect', this.onConnect)
    // a member's change reaches the others at once (debounced: a burst of events is one push)
    this.unsubscribe = this.components.membership.onMember(() => { this.pushSoon(); this.emit('change') })
    this.arm()
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    this.unsubscribe?.()
    this.components.libp2p.removeEventListener('peer:connect', this.onConnect)
    this.components.clock.clearTimeout(this.timer)
    this.components.clock.clearTimeout(this.pushTimer)
    await this.messenger.stop()
  }

  reload (next: MeshStatusSettings, _prev?: MeshStatusSettings): string[] {
    this.settings = next
    this.mapNames()
    for (const name of [...this.latest.keys()]) if (!next.peers.some(p => p.name === name)) this.latest.delete(name)
    return []
  }

  /** Every configured node, this one first, with its newest summary and how old it is. */
  view (): MeshStatusView {
    const { clock } = this.components
    const now = clock.now()
    const own = this.components.status.status()
    const staleMs = this.settings.staleMs ?? 3000
    const byName = new Map(own.members.map(m => [m.name, m]))
    const nodes: MeshNodeView[] = [{
      name: this.settings.node, role: this.settings.role, self: true, state: 'self', connected: true, ageMs: 0, stale: false, summary: summarize(own, this.seq, clock.wallNow())
    }]
    for (const p of this.settings.peers) {
      const m = byName.get(p.name)
      const got = this.latest.get(p.name)
      const ageMs = got === undefined ? null : Math.round(now - got.at)
      const state = m?.state ?? 'dead'
      nodes.push({
        name: p.name,
        role: p.role,
        self: false,
        state,
        connected: m?.connected ?? false,
        ageMs,
        stale: ageMs === null || ageMs > staleMs || state === 'dead',
        summary: got?.msg ?? null
      })
    }
    return { node: this.settings.node, atWallMs: clock.wallNow(), nodes }
  }

  private mapNames (): void { this.idToName = new Map(this.settings.peers.map(p => [p.id, p.name])) }

  private arm (): void {
    this.timer = this.components.clock.setTimeout(() => {
      if (!this.started) return
      this.broadcast()
      this.arm()
    }, this.settings.intervalMs ?? 1000)
  }

  private pushSoon (): void {
    if (this.pushTimer !== undefined || !this.started) return
    this.pushTimer = this.components.clock.setTimeout(() => { this.pushTimer = undefined; if (this.started) this.broadcast() }, 20)
  }

  private build (want: boolean): Uint8Array | undefined {
    try {
      const s = summarize(this.components.status.status(), ++this.seq, this.components.clock.wallNow())
      return encodeStatusSummary(want ? { ...s, want: true } : s)
    } catch (err) {
      this.components.log.warn({ error: errorMessage(err) }, 'could not build the status summary')
      return undefined
    }
  }

  private broadcast (): void {
    const body = this.build(false)
    if (body === undefined) return
    for (const c of this.components.libp2p.getConnections()) {
      const id = c.remotePeer.toString()
      if (this.idToName.has(id) && this.messenger.send(id, body)) this.stats.sent++
    }
  }

  private sendTo (peerId: string, want: boolean): void {
    if (!this.started || !this.idToName.has(peerId)) return
    const body = this.build(want)
    if (body !== undefined && this.messenger.send(peerId, body)) this.stats.sent++
  }

  private receive (fromPeerId: string, body: Uint8Array): void {
    const from = this.idToName.get(fromPeerId)
    if (from === undefined) return
    let msg: StatusSummaryMessage
    try { msg = decodeStatusSummary(body) } catch (err) {
      this.stats.decodeErrors++
      this.components.log.warn({ peer: from, error: errorMessage(err).slice(0, 200) }, 'bad status summary ignored')
      return
    }
    if (msg.node !== from) { this.stats.decodeErrors++; return } // a node speaks only for itself
    this.stats.received++
    const prev = this.latest.get(from)
    // newest wins; a restarted sender counts from 1 again (its uptime went back)
    if (prev !== undefined && msg.seq <= prev.msg.seq && msg.uptimeMs >= prev.msg.uptimeMs) return
    const { want, ...rest } = msg
    this.latest.set(from, { msg: rest, at: this.components.clock.now() })
    if (want === true) this.sendTo(fromPeerId, false)
    this.emit('change')
  }
}

/** The summary of a status document (what travels; the full document stays local). */
export function summarize (s: StatusDocument, seq: number, atWallMs: number): StatusSummaryMessage {
  return {
    v: 1,
    node: s.node.name,
    role: s.node.role,
    seq,
    atWallMs,
    uptimeMs: Math.max(0, s.node.uptimeMs),
    members: s.members.map(m => ({ name: m.name, state: m.state, connected: m.connected, sinceMs: Math.max(0, m.sinceMs) })),
    vms: s.vms.map(v => ({
      name: v.name,
      owner: v.owner,
      epoch: v.epoch,
      runningHere: v.runningHere,
      generation: v.generation,
      changeSource: v.capture?.source ?? null,
      rpoBoundMs: v.capture?.rpoBoundMs ?? null,
      ...(v.rpoTargetMs !== undefined ? { rpoTargetMs: Math.max(0, v.rpoTargetMs) } : {}),
      targets: v.targets.map(t => ({
        node: t.node,
        state: t.state,
        ackedGeneration: t.ackedGeneration,
        lagMs: t.lagMs === null ? null : Math.max(0, t.lagMs),
        rpoMs: t.rpoMs == null ? null : Math.max(0, t.rpoMs),
        bytesPending: Math.max(0, t.bytesPending),
        rateBytesPerSec: t.rateBytesPerSec ?? null,
        seedProgress: t.seedProgress ?? null
      })),
      replica: v.replica === null ? null : { from: v.replica.from, appliedGeneration: v.replica.appliedGeneration, consistentGeneration: v.replica.appliedConsistentGeneration ?? null, seeding: v.replica.seeding === true }
    }))
  }
}
