/**
 * One entry of the daemon's event history: what happened, to which node or VM, and when.
 * The dashboard's history page and the alert sinks both read these (daemon/events/journal.ts).
 * `kind` is append-only: consumers match on it, so a kind is never renamed or reused.
 */
import type { TimelineType } from '../ownership/loop.ts'

export type MeshEventKind =
  /** A member changed state in this node's failure detector (alive / suspect / dead). */
  | 'member'
  /** An election or ownership change: a new owner, elected here, demoted. */
  | 'election'
  /** A VM started, stopped, finalized or a failover was requested or given up. */
  | 'failover'
  /** The watchdog turned a VM off (or failed to). */
  | 'fence'
  /** A block-by-block comparison with a replica finished. */
  | 'verify'

export type MeshEventSeverity = 'info' | 'warning' | 'critical'

export interface MeshEvent {
  /** Strictly increasing per node; survives restarts (persisted with the entry). */
  seq: number
  /** Wall-clock epoch ms (display only). */
  atWallMs: number
  kind: MeshEventKind
  severity: MeshEventSeverity
  /** The node that recorded it (this daemon). */
  node: string
  /** The member or VM it is about, when there is one. */
  peer?: string
  vm?: string
  epoch?: number
  /** One human line, e.g. "b dead (was suspect)". */
  text: string
  /** Machine-readable detail (state, previous, owner, mismatched blocks...). */
  data?: Record<string, string | number | boolean | null>
}

/**
 * The typed fields of an `election` / `failover` / `fence` event (the ownership timeline's),
 * as `data` carries them: `type` to switch on, the new `owner`, whether a claim was `forced`.
 */
export interface OwnershipFacts { type: TimelineType, owner?: string, forced?: boolean, detail?: string }

const TIMELINE_TYPES: ReadonlySet<string> = new Set<TimelineType>(['owner', 'elected', 'demoted', 'failoverRefused', 'failoverAbandoned', 'noRoom', 'roomFound', 'startAfterTimeout', 'finalized', 'started', 'stopped', 'stoppedOnItsOwn', 'fenced', 'fenceFailed'])

/** An event's ownership facts, when it has them (entries persisted before they were typed do not). */
export function ownershipFacts (e: Pick<MeshEvent, 'kind' | 'data'>): OwnershipFacts | undefined {
  if (e.kind !== 'election' && e.kind !== 'failover' && e.kind !== 'fence') return undefined
  const d = e.data
  if (d === undefined || typeof d.type !== 'string' || !TIMELINE_TYPES.has(d.type)) return undefined
  return {
    type: d.type as TimelineType,
    ...(typeof d.owner === 'string' ? { owner: d.owner } : {}),
    ...(typeof d.forced === 'boolean' ? { forced: d.forced } : {}),
    ...(typeof d.detail === 'string' ? { detail: d.detail } : {})
  }
}

/** What a producer gives `append`: the journal stamps seq, time and node. */
export type MeshEventInput = Omit<MeshEvent, 'seq' | 'atWallMs' | 'node'> & { atWallMs?: number }
