/**
 * Conditions read from the node's status views: pure functions of a snapshot (and, for the
 * stall timer, of what was seen before), so that the rules are unit-tested without a daemon.
 *
 *   members  → host-dead, witness-lost           (mesh scope: every survivor sees them)
 *   VMs sourced here, per target → rpo-breach, replication-stalled, verify-mismatch, disk-full
 *   the data folder's file system → disk-low, disk-full
 */
import type { MemberStatus, StatusDocument } from '../status.ts'
import type { Condition } from './types.ts'

/**
 * The node that delivers a mesh-scope notice about `subject`: the first by name among the
 * hosts, other than the subject, that are not dead in this node's view (itself included).
 * Survivors that agree on who is dead agree on the reporter, so a host's death is told once;
 * leaving the subject out keeps the same reporter for its recovery (the returning host never
 * saw its own death). A witness never reports (it has no VMs and usually no sinks).
 */
export function meshReporter (self: { name: string, role: 'host' | 'witness' }, members: Array<Pick<MemberStatus, 'name' | 'role' | 'state'>>, subject?: string): string | undefined {
  const names = members.filter(m => m.role === 'host' && m.state !== 'dead' && m.name !== subject).map(m => m.name)
  if (self.role === 'host') names.push(self.name)
  return names.sort()[0]
}

/** A peer this daemon has never heard from counts as dead only after this long up (a mesh starting is not a mesh failing). */
export const NEVER_SEEN_GRACE_MS = 60_000

export function memberConditions (members: Array<Pick<MemberStatus, 'name' | 'role' | 'state' | 'everSeen'>>, uptimeMs: number, neverSeenGraceMs = NEVER_SEEN_GRACE_MS): Condition[] {
  return members.filter(m => m.state === 'dead' && (m.everSeen || uptimeMs >= neverSeenGraceMs)).map(m => m.role === 'witness'
    ? { key: `witness-lost:${m.name}`, kind: 'witness-lost', severity: 'warning', scope: 'mesh', subject: m.name, summary: `witness ${m.name} lost: the mesh has one vote less`, recoverySummary: `witness ${m.name} is back` }
    : { key: `host-dead:${m.name}`, kind: 'host-dead', severity: 'critical', scope: 'mesh', subject: m.name, summary: `host ${m.name} is dead`, recoverySummary: `host ${m.name} is alive again` })
}

export interface ReplicationThresholds {
  /** Per VM: its RPO target. */
  rpoMsOf: (vm: string) => number
  stalledAfterMs: number
}

const NO_SPACE = /ENOSPC|no space|disk full|quota/i

/**
 * Per-target conditions of the VMs this node is the source of. Keeps, per target, when its
 * acked generation last moved, to tell a stalled target from a busy one.
 */
export class ReplicationWatch {
  private readonly progress = new Map<string, { acked: number, since: number }>()

  conditions (now: number, vms: StatusDocument['vms'], t: ReplicationThresholds): Condition[] {
    const out: Condition[] = []
    const live = new Set<string>()
    for (const v of vms) {
      if (!v.runningHere) continue
      const targetMs = t.rpoMsOf(v.name)
      for (const tg of v.targets) {
        const id = `${v.name}:${tg.node}`
        live.add(id)
        if (tg.rpoMs != null && tg.rpoMs > targetMs) {
          out.push({ key: `rpo-breach:${id}`, kind: 'rpo-breach', severity: 'warning', scope: 'local', vm: v.name, subject: tg.node, summary: `${v.name}: replica on ${tg.node} is ${fmtMs(tg.rpoMs)} behind, RPO target ${fmtMs(targetMs)}`, recoverySummary: `${v.name}: replica on ${tg.node} is within its RPO target again`, detail: { rpoMs: tg.rpoMs, targetMs, state: tg.state } })
        }
        const p = this.progress.get(id)
        if (p === undefined || p.acked !== tg.ackedGeneration) this.progress.set(id, { acked: tg.ackedGeneration, since: now })
        const waiting = tg.bytesPending > 0 || tg.state === 'behind' || tg.state === 'disconnected' || tg.state === 'error' || tg.state === 'seeding'
        const stuckMs = now - (this.progress.get(id)?.since ?? now)
        // a seed moves no acked generation for hours: its progress fraction is what moves
        if (waiting && tg.state !== 'seeding' && stuckMs >= t.stalledAfterMs) {
          out.push({ key: `replication-stalled:${id}`, kind: 'replication-stalled', severity: 'warning', scope: 'local', vm: v.name, subject: tg.node, summary: `${v.name}: replication to ${tg.node} stalled for ${fmtMs(stuckMs)} (${tg.state}${tg.error !== undefined ? `: ${tg.error}` : ''})`, recoverySummary: `${v.name}: replication to ${tg.node} moves again`, detail: { state: tg.state, ackedGeneration: tg.ackedGeneration, bytesPending: tg.bytesPending } })
        }
        if (tg.state === 'error' && tg.error !== undefined && NO_SPACE.test(tg.error)) {
          out.push({ key: `disk-full:${id}`, kind: 'disk-full', severity: 'critical', scope: 'local', vm: v.name, subject: tg.node, summary: `${v.name}: target ${tg.node} is out of disk space (${tg.error})`, recoverySummary: `${v.name}: target ${tg.node} accepts data again` })
        }
        if (tg.lastVerify !== undefined && tg.lastVerify.mismatchedBlocks > 0) {
          out.push({ key: `verify-mismatch:${id}`, kind: 'verify-mismatch', severity: 'critical', scope: 'local', vm: v.name, subject: tg.node, summary: `${v.name}: verify found ${tg.lastVerify.mismatchedBlocks} mismatching blocks on ${tg.node}`, recoverySummary: `${v.name}: the replica on ${tg.node} verified identical`, detail: { mismatchedBlocks: tg.lastVerify.mismatchedBlocks, atMs: tg.lastVerify.atMs } })
        }
      }
    }
    for (const id of this.progress.keys()) if (!live.has(id)) this.progress.delete(id)
    return out
  }
}

export interface DiskSpace { path: string, freeBytes: number, totalBytes: number }

/** `disk-low` / `disk-full` of the file system holding the data folder (replicas live there). */
export function diskConditions (d: DiskSpace, lowPercent: number, fullPercent: number): Condition[] {
  if (d.totalBytes <= 0) return []
  const freePercent = 100 * d.freeBytes / d.totalBytes
  const detail = { path: d.path, freeBytes: d.freeBytes, totalBytes: d.totalBytes, freePercent: Math.round(freePercent * 10) / 10 }
  if (freePercent < fullPercent) return [{ key: `disk-full:${d.path}`, kind: 'disk-full', severity: 'critical', scope: 'local', subject: d.path, summary: `disk holding ${d.path} is full: ${detail.freePercent} % free`, recoverySummary: `disk holding ${d.path} has room again`, detail }]
  if (freePercent < lowPercent) return [{ key: `disk-low:${d.path}`, kind: 'disk-low', severity: 'warning', scope: 'local', subject: d.path, summary: `disk holding ${d.path} is low: ${detail.freePercent} % free`, recoverySummary: `disk holding ${d.path} has room again`, detail }]
  return []
}

export function fmtMs (ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 120_000) return `${(ms / 1000).toFixed(1)} s`
  if (ms < 7_200_000) return `${(ms / 60_000).toFixed(1)} min`
  return `${(ms / 3_600_000).toFixed(1)} h`
}
