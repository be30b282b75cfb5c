/**
 * The membership driver: runs the pure SWIM/Lifeguard Detector on real time and real streams.
 *
 *   timers ──tick(now)──▶ Detector ──send──▶ codec ──▶ Messenger (/vmesh/membership/1.0.0)
 *   frames ──step(now)──▶    │
 *   peer:disconnect ──transportLost──▶ (probe now)
 *   event-loop lag ──observeLag──▶ (Lifeguard local health)
 *            events ──▶ listeners (status, ownership)
 *
 * The driver owns the only timer: it re-arms at the detector's nextDeadline() after every
 * input. The lag probe is a separate short timer whose lateness measures how starved our own
 * event loop is; Lifeguard uses that to avoid accusing peers of our own slowness.
 */
import type { Libp2p } from '@libp2p/interface'
import type { Clock, TimerHandle } from '../../common/clock.ts'
import type { Random } from '../../common/random.ts'
import { errorMessage } from '../../common/errors.ts'
import type { Logger } from '../log.ts'
import { Messenger } from '../mesh/messenger.ts'
import { Detector, type DetectorEvent, type DetectorTimings, type MemberView, type Output } from './detector.ts'
import { decodeSwimMessage, encodeSwimMessage } from '../../protocol/membership/codec.ts'
import { MEMBERSHIP_PROTOCOL } from '../../protocol/membership/ids.ts'

export interface MembershipComponents {
  libp2p: Libp2p
  clock: Clock
  random: Random
  log: Logger
  requestDial?: (peerId: string) => void
}

export interface MembershipInit {
  selfId: string
  peerIds: string[]
  timings: DetectorTimings
  /** How often the event-loop lag probe runs. @default 100 */
  lagProbeMs?: number
  /** Lag above this counts as local trouble. @default 250 */
  lagThresholdMs?: number
}

export type MemberListener = (e: Extract<DetectorEvent, { type: 'member' }>) => void

export class MembershipService {
  private detector?: Detector
  private readonly messenger: Messenger
  private timer?: TimerHandle
  private lagTimer?: TimerHandle
  private lagExpected = 0
  private readonly listeners = new Set<MemberListener>()
  private readonly onDisconnect = (evt: CustomEvent): void => { this.apply(this.detector?.transportLost(this.components.clock.now(), evt.detail.toString())) }
  private started = false
  /** Counters for status/metrics. */
  readonly stats = { sent: 0, dropped: 0, received: 0, decodeErrors: 0 }

  constructor (private readonly components: MembershipComponents, private readonly init: MembershipInit) {
    this.messenger = new Messenger({
      libp2p: components.libp2p,
      ...(components.requestDial !== undefined ? { requestDial: components.requestDial } : {}),
      onMessage: (from, body) => { this.receive(from, body) },
      onProtocolError: (from, error) => { this.stats.decodeErrors++; components.log.warn({ peer: from, error }, 'membership stream violated framing; stream reset') }
    }, { protocol: MEMBERSHIP_PROTOCOL, maxFrameBytes: 65536 })
  }

  onMember (fn: MemberListener): () => void { this.listeners.add(fn); return () => this.listeners.delete(fn) }

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    const now = this.components.clock.now()
    this.detector = new Detector({ self: this.init.selfId, peers: this.init.peerIds, timings: this.init.timings, random: this.components.random, now })
    await this.messenger.start()
    this.components.libp2p.addEventListener('peer:disconnect', this.onDisconnect)
    this.armLagProbe()
    this.apply(this.detector.tick(now))
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    this.components.clock.clearTimeout(this.timer)
    this.components.clock.clearTimeout(this.lagTimer)
    this.components.libp2p.removeEventListener('peer:disconnect', this.onDisconnect)
    await this.messenger.stop()
  }

  /** Applies a new allowlist (reload) without resetting what we know of the others. */
  setPeers (peerIds: string[]): void {
    this.apply(this.detector?.setPeers(this.components.clock.now(), peerIds))
  }

  members (): MemberView[] { return this.detector?.members() ?? [] }
  self (): { id: string, incarnation: number, awareness: number } | undefined { return this.detector?.self() }

  private receive (from: string, body: Uint8Array): void {
    if (this.detector === undefined) return
    this.stats.received++
    let msg
    try { msg = decodeSwimMessage(body) } catch (err) {
      this.stats.decodeErrors++
      this.components.log.warn({ peer: from, error: errorMessage(err) }, 'bad membership message ignored')
      return
    }
    this.apply(this.detector.step(this.components.clock.now(), from, msg))
  }

  private apply (out: Output | undefined): void {
    if (out === undefined || !this.started || this.detector === undefined) return
    for (const { to, msg } of out.send) {
      if (this.messenger.send(to, encodeSwimMessage(msg))) this.stats.sent++; else this.stats.dropped++
    }
    for (const e of out.events) {
      if (e.type === 'member') {
        this.components.log.info({ peer: e.id, state: e.state, previous: e.previous, incarnation: e.incarnation }, `member ${e.state}`)
        for (const l of this.listeners) { try { l(e) } catch (err) { this.components.log.error({ error: errorMessage(err) }, 'member listener failed') } }
      } else if (e.type === 'refuted') {
        this.components.log.warn({ incarnation: e.incarnation }, 'refuted a suspicion about this node')
      } else if (e.type === 'late-ack') {
        this.components.log.warn({ peer: e.id, rttMs: Math.round(e.rttMs) }, 'probe ack came after the probe had failed (the peer was slow, not gone)')
      } else if (e.type === 'awareness') {
        this.components.log.info({ score: e.score }, 'local health score changed (probe timeouts stretched by score + 1)')
      }
    }
    this.rearm()
  }

  private rearm (): void {
    if (this.detector === undefined) return
    const clock = this.components.clock
    clock.clearTimeout(this.timer)
    const delay = Math.max(0, this.detector.nextDeadline() - clock.now())
    this.timer = clock.setTimeout(() => { this.timer = undefined; this.apply(this.detector?.tick(clock.now())) }, delay)
  }

  private armLagProbe (): void {
    const clock = this.components.clock
    const period = this.init.lagProbeMs ?? 100
    this.lagExpected = clock.now() + period
    this.lagTimer = clock.setTimeout(() => {
      if (!this.started) return
      const lag = clock.now() - this.lagExpected
      if (lag > (this.init.lagThresholdMs ?? 250)) {
        this.components.log.debug({ lagMs: Math.round(lag) }, 'event loop lag')
        this.apply(this.detector?.observeLag(clock.now(), lag))
      }
      this.armLagProbe()
    }, period)
  }
}
