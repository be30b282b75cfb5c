/**
 * Fills the EventJournal from the daemon's services without changing them:
 * - member states: the failure detector's listener (pushed at once);
 * - elections, starts, stops, fences, refused/abandoned failovers: the ownership service's
 *   bounded timeline, read for new entries every `pollMs` (it has no listener; the array is
 *   shared, so a read is a few comparisons);
 * - verify results: each target's `lastVerify` in replication's status, compared with the
 *   last one seen (also every `pollMs`, at most once a second).
 * The feeder names peers by their config names, not their peer IDs.
 */
import type { Clock, TimerHandle } from '../../common/clock.ts'
import type { EventJournal } from './journal.ts'
import type { MeshEventInput } from './types.ts'
import type { TimelineEntry, TimelineType } from '../ownership/loop.ts'

export type TimelineLike = Pick<TimelineEntry, 'atWallMs' | 'vm' | 'type' | 'event' | 'epoch' | 'detail' | 'owner' | 'forced'>

export interface EventFeederComponents {
  clock: Clock
  journal: Pick<EventJournal, 'append'>
  membership: { onMember: (fn: (e: { id: string, state: 'alive' | 'suspect' | 'dead', previous?: string, incarnation?: number }) => void) => () => void }
  ownership?: { timeline: readonly TimelineLike[] }
  replication?: { vmStatus: () => Array<{ name: string, targets: Array<{ node: string, lastVerify?: { atMs: number, mismatchedBlocks: number } }> }> }
}

export interface EventFeederInit {
  /** peer ID → node name. */
  names: Record<string, string>
  /** How often the ownership timeline and verify results are read. @default 250 */
  pollMs?: number
  /** How often replication status is read for verify results. @default 1000 */
  verifyPollMs?: number
}

export class EventFeeder {
  private unsubscribe?: () => void
  private timer?: TimerHandle
  private lastTimeline?: TimelineLike
  private readonly verifies = new Map<string, number>()
  private lastVerifyPoll = -Infinity
  private names: Record<string, string>

  constructor (private readonly components: EventFeederComponents, init: EventFeederInit) {
    this.names = init.names
    this.pollMs = init.pollMs ?? 250
    this.verifyPollMs = init.verifyPollMs ?? 1000
  }

  private readonly pollMs: number
  private readonly verifyPollMs: number

  setNames (names: Record<string, string>): void { this.names = names }

  start (): void {
    if (this.unsubscribe !== undefined) return
    const { membership, ownership } = this.components
    // history from before this start is the persisted journal's; begin after what is there now
    this.lastTimeline = ownership?.timeline[ownership.timeline.length - 1]
    this.pollVerify(true)
    this.unsubscribe = membership.onMember((e) => {
      const peer = this.names[e.id] ?? e.id
      this.components.journal.append({
        kind: 'member',
        severity: e.state === 'dead' ? 'critical' : e.state === 'suspect' ? 'warning' : 'info',
        peer,
        text: `${peer} ${e.state}${e.previous !== undefined ? ` (was ${e.previous})` : ''}`,
        data: { state: e.state, ...(e.previous !== undefined ? { previous: e.previous } : {}), ...(e.incarnation !== undefined ? { incarnation: e.incarnation } : {}) }
      })
    })
    this.arm()
  }

  stop (): void {
    this.unsubscribe?.()
    this.unsubscribe = undefined
    this.components.clock.clearTimeout(this.timer)
    this.timer = undefined
  }

  private arm (): void {
    this.timer = this.components.clock.setTimeout(() => {
      if (this.unsubscribe === undefined) return
      this.pollTimeline()
      this.pollVerify(false)
      this.arm()
    }, this.pollMs)
  }

  /** New ownership timeline entries since the last one seen (the array drops its oldest at 200). */
  pollTimeline (): void {
    const tl = this.components.ownership?.timeline
    if (tl === undefined || tl.length === 0) return
    let from = 0
    if (this.lastTimeline !== undefined) {
      const i = tl.lastIndexOf(this.lastTimeline)
      from = i >= 0 ? i + 1 : 0
    }
    for (let i = from; i < tl.length; i++) {
      const t = tl[i] as TimelineLike
      this.components.journal.append(timelineEvent(t))
    }
    this.lastTimeline = tl[tl.length - 1]
  }

  private pollVerify (initial: boolean): void {
    const now = this.components.clock.now()
    if (!initial && now - this.lastVerifyPoll < this.verifyPollMs) return
    this.lastVerifyPoll = now
    const list = this.components.replication?.vmStatus() ?? []
    for (const v of list) {
      for (const t of v.targets) {
        if (t.lastVerify === undefined) continue
        const key = `${v.name}\u0000${t.node}`
        const seen = this.verifies.get(key)
        this.verifies.set(key, t.lastVerify.atMs)
        if (initial || seen === t.lastVerify.atMs) continue
        const bad = t.lastVerify.mismatchedBlocks
        this.components.journal.append({
          kind: 'verify',
          severity: bad > 0 ? 'critical' : 'info',
          vm: v.name,
          peer: t.node,
          text: bad > 0 ? `verify ${v.name} on ${t.node}: ${bad} block(s) differ` : `verify ${v.name} on ${t.node}: identical`,
          data: { mismatchedBlocks: bad }
        })
      }
    }
  }
}

const ELECTION: ReadonlySet<TimelineType> = new Set(['owner', 'elected', 'demoted'])
const FENCE: ReadonlySet<TimelineType> = new Set(['fenced', 'fenceFailed'])
const WARN: ReadonlySet<TimelineType> = new Set(['failoverRefused', 'failoverAbandoned', 'stoppedOnItsOwn'])

/**
 * An ownership timeline entry as a journal event: kind and severity from its typed `type`, and
 * its typed fields in `data` (`type`, `owner`, `forced`; daemon/events/types.ts ownershipFacts).
 */
export function timelineEvent (t: TimelineLike): MeshEventInput {
  const base = { atWallMs: t.atWallMs, vm: t.vm, ...(t.epoch !== undefined ? { epoch: t.epoch } : {}) }
  const detail = t.detail !== undefined ? ` (${t.detail})` : ''
  const text = `${t.vm}: ${t.event}${t.epoch !== undefined ? ` at epoch ${t.epoch}` : ''}${detail}`
  const data = { type: t.type, event: t.event, ...(t.detail !== undefined ? { detail: t.detail } : {}), ...(t.owner !== undefined ? { owner: t.owner } : {}), ...(t.forced !== undefined ? { forced: t.forced } : {}) }
  if (FENCE.has(t.type)) return { ...base, kind: 'fence', severity: t.type === 'fenceFailed' ? 'critical' : 'warning', text, data }
  if (ELECTION.has(t.type)) return { ...base, kind: 'election', severity: t.forced === true ? 'warning' : 'info', text, data }
  return { ...base, kind: 'failover', severity: WARN.has(t.type) ? 'warning' : 'info', text, data }
}
