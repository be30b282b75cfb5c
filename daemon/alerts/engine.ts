/**
 * The alert engine: a pure state machine from conditions to notices (no timers, no I/O; the
 * caller passes the time). Flow:
 *
 *   observe(now, source, holding[]) ── new key ─────────────▶ `alert`    (once per incident)
 *                                   ── key gone ≥ clearAfter ▶ `recovery` (once, then forgotten)
 *   event(now, condition)           ── key not seen within eventDedupeMs ▶ `event`
 *   open(now, c) / clear(now, key)  ── an incident with an explicit end (a failover)
 *
 * `observe` is level-triggered: each call lists every condition one source (members,
 * replication, disk) holds now, so a missed edge cannot leave an incident open forever, and a
 * condition that blinks out for less than `clearAfterMs` is still the same incident.
 * A `mesh`-scope incident is tracked on every node but delivered only by the node that is the
 * mesh's reporter for it at that moment (`reporter`), so each survivor knows it and one tells.
 */
import type { AlertNotice, Condition } from './types.ts'

/** Whether this node tells a mesh-scope condition now (a boolean for every condition alike). */
export type Reporter = boolean | ((c: Condition) => boolean)

export interface AlertEngineInit {
  /** This node's name (notices carry it). */
  node: string
  /** A condition gone for less than this is still the same incident. @default 10000 */
  clearAfterMs?: number
  /** A one-shot event with the same key within this window is a duplicate. @default 60000 */
  eventDedupeMs?: number
}

interface Incident {
  c: Condition
  source: string
  openedAt: number
  openedAtWall: number
  /** Monotonic time the condition was first seen gone, while it stays gone. */
  goneSince?: number
}

export class AlertEngine {
  private readonly open_ = new Map<string, Incident>()
  private readonly recentEvents = new Map<string, number>()
  private readonly clearAfterMs: number
  private readonly eventDedupeMs: number

  constructor (private readonly init: AlertEngineInit) {
    this.clearAfterMs = init.clearAfterMs ?? 10_000
    this.eventDedupeMs = init.eventDedupeMs ?? 60_000
  }

  /**
   * Every condition `source` holds at `now`. Opens the new ones, closes those gone for
   * `clearAfterMs`. `reporter`: this node delivers mesh-scope notices now.
   */
  observe (now: number, wallNow: number, source: string, holding: Condition[], reporter: Reporter): AlertNotice[] {
    const out: AlertNotice[] = []
    const seen = new Set<string>()
    for (const c of holding) {
      if (seen.has(c.key)) continue
      seen.add(c.key)
      const inc = this.open_.get(c.key)
      if (inc !== undefined) { delete inc.goneSince; inc.c = c; continue }
      out.push(...this.openIncident(now, wallNow, source, c, reporter))
    }
    for (const [key, inc] of this.open_) {
      if (inc.source !== source || seen.has(key)) continue
      inc.goneSince ??= now
      if (now - inc.goneSince >= this.clearAfterMs) out.push(...this.closeIncident(wallNow, key, reporter))
    }
    return out
  }

  /** Opens an incident with an explicit end (see `clear`); a key already open gives nothing. */
  open (now: number, wallNow: number, c: Condition, reporter: Reporter = true): AlertNotice[] {
    if (this.open_.has(c.key)) return []
    return this.openIncident(now, wallNow, 'explicit', c, reporter)
  }

  /** Ends an incident opened with `open`; `summary` replaces the default recovery line. */
  clear (wallNow: number, key: string, summary?: string, reporter: Reporter = true): AlertNotice[] {
    const inc = this.open_.get(key)
    if (inc === undefined) return []
    if (summary !== undefined) inc.c = { ...inc.c, recoverySummary: summary }
    return this.closeIncident(wallNow, key, reporter)
  }

  /** A one-shot event: delivered unless the same key was seen within `eventDedupeMs`. */
  event (now: number, wallNow: number, c: Condition, reporter: Reporter = true): AlertNotice[] {
    for (const [k, at] of this.recentEvents) if (now - at >= this.eventDedupeMs) this.recentEvents.delete(k)
    if (this.recentEvents.has(c.key)) return []
    this.recentEvents.set(c.key, now)
    if (!this.delivers(c, reporter)) return []
    return [this.notice('event', c, wallNow, wallNow)]
  }

  /** Incidents open now (for `GET /v1/alerts`). */
  incidents (): Array<{ key: string, kind: string, summary: string, openedAtMs: number, clearing: boolean }> {
    return [...this.open_.values()].map(i => ({ key: i.c.key, kind: i.c.kind, summary: i.c.summary, openedAtMs: i.openedAtWall, clearing: i.goneSince !== undefined }))
  }

  private openIncident (now: number, wallNow: number, source: string, c: Condition, reporter: Reporter): AlertNotice[] {
    this.open_.set(c.key, { c, source, openedAt: now, openedAtWall: wallNow })
    return this.delivers(c, reporter) ? [this.notice('alert', c, wallNow, wallNow)] : []
  }

  private closeIncident (wallNow: number, key: string, reporter: Reporter): AlertNotice[] {
    const inc = this.open_.get(key) as Incident
    this.open_.delete(key)
    if (!this.delivers(inc.c, reporter)) return []
    const n = this.notice('recovery', { ...inc.c, summary: inc.c.recoverySummary ?? `resolved: ${inc.c.summary}` }, inc.openedAtWall, wallNow)
    n.durationMs = Math.max(0, wallNow - inc.openedAtWall)
    return [n]
  }

  private delivers (c: Condition, reporter: Reporter): boolean { return c.scope === 'local' || (typeof reporter === 'function' ? reporter(c) : reporter) }

  private notice (type: AlertNotice['type'], c: Condition, openedAtMs: number, atMs: number): AlertNotice {
    return {
      type,
      incident: `${this.init.node}/${c.key}/${openedAtMs}`,
      key: c.key,
      kind: c.kind,
      severity: c.severity,
      summary: c.summary,
      node: this.init.node,
      ...(c.vm !== undefined ? { vm: c.vm } : {}),
      ...(c.subject !== undefined ? { subject: c.subject } : {}),
      openedAtMs,
      atMs,
      ...(c.detail !== undefined ? { detail: c.detail } : {})
    }
  }
}
