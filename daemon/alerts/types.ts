/**
 * What the alert engine takes in (conditions and one-shot events) and what it gives out
 * (notices for the sinks). A notice is the JSON body a webhook receives, so its shape is a
 * promise to the operator's scripts: extend it, never rename.
 */

/** Append-only: receivers switch on these. */
export type AlertKind =
  | 'host-dead' | 'witness-lost'
  | 'failover' | 'failover-refused' | 'fence-fired'
  | 'rpo-breach' | 'replication-stalled' | 'disk-low' | 'disk-full' | 'verify-mismatch'
  | 'failover-abandoned'
  | 'test'

export type Severity = 'critical' | 'warning' | 'info'

/**
 * Who delivers a notice. `local`: this node alone sees it (its VMs, its disk, its fences).
 * `mesh`: every survivor sees it (a host's death): only the mesh's reporter delivers it, so
 * it arrives once, not once per survivor.
 */
export type Scope = 'local' | 'mesh'

/** One condition that holds now, or one event that just happened. */
export interface Condition {
  /** Identifies the incident: the same key while the condition holds is the same incident. */
  key: string
  kind: AlertKind
  severity: Severity
  scope: Scope
  /** One line for a human (mail subject, chat message). */
  summary: string
  vm?: string
  /** The node the condition is about (the dead host, the target). */
  subject?: string
  /** Numbers behind it (rpoMs, targetMs, freePercent, ...). */
  detail?: Record<string, unknown>
  /** The line the recovery notice carries (default: "resolved: <summary>"). */
  recoverySummary?: string
}

export interface AlertNotice {
  /** `alert` opens an incident, `recovery` closes it, `event` is a one-shot (no recovery follows), `test` from `vmesh alert test`. */
  type: 'alert' | 'recovery' | 'event' | 'test'
  /** Stable for the incident: its alert and its recovery carry the same id. */
  incident: string
  key: string
  kind: AlertKind
  severity: Severity
  summary: string
  /** The node that sent the notice. */
  node: string
  vm?: string
  subject?: string
  /** Wall-clock ms: when the incident opened, and when this notice was made. */
  openedAtMs: number
  atMs: number
  /** Recovery: how long the incident lasted. */
  durationMs?: number
  detail?: Record<string, unknown>
}
