/**
 * `vmesh status [--watch]`: asks the running daemon and renders its status document. With
 * --json a single JSON document (with --watch: one document per line per refresh).
 */
import type { StatusDocument } from '../../status.ts'
import { formatBytes } from '../../../config/units.ts'

function ago (ms: number): string {
  if (ms < 1000) return `${ms}ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)}m${Math.floor((ms % 60_000) / 1000)}s`
  return `${Math.floor(ms / 3_600_000)}h${Math.floor((ms % 3_600_000) / 60_000)}m`
}

function pad (s: string, n: number): string { return s.length >= n ? s : s + ' '.repeat(n - s.length) }

function bar (fraction: number, width = 24): string {
  const f = Math.max(0, Math.min(1, fraction))
  const full = Math.round(f * width)
  return `[${'#'.repeat(full)}${'.'.repeat(width - full)}] ${(f * 100).toFixed(1)}%`
}

export function renderStatus (s: StatusDocument): string {
  const lines: string[] = []
  lines.push(`node ${s.node.name} (${s.node.role}, ${s.node.profile} profile)  peer ${s.node.peerId}  up ${ago(s.node.uptimeMs)}${s.node.incarnation !== undefined ? `  incarnation ${s.node.incarnation}` : ''}${s.node.awareness !== undefined && s.node.awareness > 0 ? `  local-health ${s.node.awareness}` : ''}`)
  lines.push('')
  lines.push(`${pad('MEMBER', 16)}${pad('ROLE', 9)}${pad('STATE', 9)}${pad('FOR', 9)}${pad('INC', 5)}CONN`)
  for (const m of s.members) {
    lines.push(`${pad(m.name, 16)}${pad(m.role, 9)}${pad(m.state, 9)}${pad(m.everSeen ? ago(m.sinceMs) : 'never', 9)}${pad(String(m.incarnation), 5)}${m.connected ? 'yes' : 'no'}`)
  }
  if (s.members.length === 0) lines.push('(no peers configured)')
  if (s.vms.length > 0) {
    lines.push('')
    lines.push(`${pad('VM', 14)}${pad('OWNER', 12)}${pad('EPOCH', 7)}${pad('GEN', 8)}TARGETS / REPLICA`)
    for (const v of s.vms) {
      const targets = v.targets.map(t => {
        const base = `${t.node}:${t.state} gen ${t.ackedGeneration}${t.lagMs !== null ? ` lag ${ago(t.lagMs)}` : ''}${t.rpoMs != null ? ` rpo ${ago(t.rpoMs)}` : ''}${t.bytesPending > 0 ? ` pending ${formatBytes(t.bytesPending)}` : ''}${t.error !== undefined ? ` (${t.error})` : ''}`
        return t.state === 'seeding' && t.seedProgress !== undefined ? `${base} ${bar(t.seedProgress)}` : base
      })
      const replica = v.replica !== null ? [`replica of ${v.replica.from} at gen ${v.replica.appliedGeneration}`] : []
      lines.push(`${pad(v.name, 14)}${pad(v.owner ?? '-', 12)}${pad(String(v.epoch), 7)}${pad(String(v.generation), 8)}${[...targets, ...replica].join('; ') || '-'}${v.runningHere ? '  [running here]' : ''}`)
      if (v.capture !== undefined) lines.push(`${pad('', 14)}changes: ${v.capture.source}${v.capture.scanBudgetBytesPerSec !== null ? `, scan budget ${formatBytes(v.capture.scanBudgetBytesPerSec)}/s (share ${formatBytes(v.capture.scanShareBytesPerSec ?? 0)}/s)` : ', scan unbounded'}${v.capture.rpoBoundMs !== null ? `, RPO ≤ ${ago(v.capture.rpoBoundMs)}` : ''}`)
    }
  }
  return lines.join('\n')
}
