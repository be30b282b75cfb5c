/**
 * Runs one membership Detector per node on the simulated network (messages optionally pass
 * through the real codec) and records every detector event with its simulated time, so tests
 * can ask "when did every survivor see X dead?" after the fact.
 */
import { PROFILES, type ProfileName } from '../../../config/profiles.ts'
import { SimNet } from '../../helpers/simnet.ts'
import type { LinkConfig, SimNodeContext, SimNodeHandler } from '../../helpers/simnet.ts'
import { Detector } from '../../../daemon/membership/detector.ts'
import type { DetectorEvent, DetectorTimings, MemberView, Output } from '../../../daemon/membership/detector.ts'
import { decodeSwimMessage, encodeSwimMessage } from '../../../protocol/membership/codec.ts'
import type { SwimMessage } from '../../../protocol/membership/messages.ts'

export type Wire = Uint8Array | SwimMessage

export interface LoggedEvent { at: number, node: string, life: number, event: DetectorEvent }

export interface SwimClusterInit {
  /** Node count (ids n00, n01, ...) or explicit ids. */
  nodes: number | string[]
  seed: number
  /** Every node runs this profile's detector timings from the one table (config/profiles.ts). */
  profile: ProfileName
  link?: Partial<LinkConfig>
  drift?: number
  /** Pass every message through encodeSwimMessage/decodeSwimMessage. @default true */
  codec?: boolean
  /** Per-node deviations from the profile (e.g. awareness disabled on one node); undefined: the profile. */
  timingsFor?: (id: string) => DetectorTimings | undefined
}

export class SwimCluster {
  readonly net: SimNet<Wire>
  readonly ids: string[]
  readonly log: LoggedEvent[] = []
  private readonly detectors = new Map<string, Detector>()
  private readonly appliers = new Map<string, (out: Output) => void>()
  private readonly timings = new Map<string, DetectorTimings>()

  constructor (init: SwimClusterInit) {
    this.ids = typeof init.nodes === 'number'
      ? Array.from({ length: init.nodes }, (_, i) => `n${String(i).padStart(2, '0')}`)
      : [...init.nodes]
    this.net = new SimNet<Wire>({ seed: init.seed, ...(init.link !== undefined ? { link: init.link } : {}), drift: init.drift ?? 0 })
    const codec = init.codec ?? true
    for (const id of this.ids) {
      const timings = init.timingsFor?.(id) ?? PROFILES[init.profile].detector
      this.timings.set(id, timings)
      this.net.addNode(id, ctx => this.makeNode(ctx, timings, codec))
    }
  }

  private makeNode (ctx: SimNodeContext<Wire>, timings: DetectorTimings, codec: boolean): SimNodeHandler<Wire> {
    const det = new Detector({ self: ctx.id, peers: this.ids, timings, random: ctx.random, now: ctx.now() })
    this.detectors.set(ctx.id, det)
    const apply = (out: Output): void => {
      for (const { to, msg } of out.send) ctx.send(to, codec ? encodeSwimMessage(msg) : msg)
      for (const event of out.events) this.log.push({ at: this.net.now, node: ctx.id, life: ctx.life, event })
    }
    this.appliers.set(ctx.id, apply)
    return {
      receive: (now, from, m) => { apply(det.step(now, from, m instanceof Uint8Array ? decodeSwimMessage(m) : m)) },
      tick: now => { apply(det.tick(now)) },
      nextWake: () => det.nextDeadline(),
      peerLost: (now, peer) => { apply(det.transportLost(now, peer)) }
    }
  }

  /** The timings node `id` runs. */
  timingsOf (id: string): DetectorTimings | undefined { return this.timings.get(id) }

  /** The live detector of a node (undefined while it is down). */
  detector (id: string): Detector | undefined { return this.net.isUp(id) ? this.detectors.get(id) : undefined }

  view (observer: string, id: string): MemberView | undefined {
    return this.detector(observer)?.members().find(m => m.id === id)
  }

  /** Runs a detector input on a node "from outside" (observeLag, transportLost) now; false if down/paused. */
  poke (id: string, fn: (det: Detector, now: number) => Output): boolean {
    return this.net.withNode(id, (_h, now) => {
      const det = this.detectors.get(id)
      const apply = this.appliers.get(id)
      if (det !== undefined && apply !== undefined) apply(fn(det, now))
    })
  }

  /** Every up node sees every other up node (of `among`) alive. */
  allAlive (among: string[] = this.ids): boolean {
    const up = among.filter(id => this.net.isUp(id))
    return up.every(o => up.every(id => id === o || this.view(o, id)?.state === 'alive'))
  }

  /** Every up node other than `target` sees `target` in `state`. */
  allSee (target: string, state: MemberView['state']): boolean {
    return this.ids.filter(id => id !== target && this.net.isUp(id)).every(o => this.view(o, target)?.state === state)
  }

  /** Member-state events, optionally filtered. */
  memberEvents (filter: { id?: string, state?: MemberView['state'], since?: number, node?: string } = {}): Array<LoggedEvent & { event: Extract<DetectorEvent, { type: 'member' }> }> {
    return this.log.filter((e): e is LoggedEvent & { event: Extract<DetectorEvent, { type: 'member' }> } =>
      e.event.type === 'member' &&
      (filter.id === undefined || e.event.id === filter.id) &&
      (filter.state === undefined || e.event.state === filter.state) &&
      (filter.since === undefined || e.at >= filter.since) &&
      (filter.node === undefined || e.node === filter.node))
  }

  /**
   * After `target` was killed at `killedAt`: when the first survivor declared it dead and when the
   * last one did (undefined if some survivor never did).
   */
  detection (target: string, killedAt: number): { first: number, all: number | undefined } | undefined {
    const survivors = this.ids.filter(id => id !== target && this.net.isUp(id))
    const times: number[] = []
    for (const s of survivors) {
      const e = this.memberEvents({ id: target, state: 'dead', since: killedAt, node: s })[0]
      if (e !== undefined) times.push(e.at - killedAt)
    }
    if (times.length === 0) return undefined
    return { first: Math.min(...times), all: times.length === survivors.length ? Math.max(...times) : undefined }
  }
}

/** Percentile (nearest rank) of a non-empty list. */
export function percentile (values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[idx] as number
}
