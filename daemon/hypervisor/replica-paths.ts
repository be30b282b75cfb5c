/**
 * Pointing a VM definition (libvirt XML, Hyper-V .vmcx) at replica files: for each source path
 * the definition names, find its replica. The caller's source→replica map wins; otherwise the
 * replica with the same file name (as the replica store sanitizes names); otherwise, for disks,
 * the one at the same position.
 */
import { sanitizeReplicaName, sourceBasename } from '../../storage/replica/names.ts'

function sameName (a: string, b: string): boolean {
  const x = sourceBasename(a); const y = sourceBasename(b)
  return x === y || x.toLowerCase() === y.toLowerCase() || sanitizeReplicaName(x) === sanitizeReplicaName(y)
}

export class ReplicaMatcher {
  private readonly used = new Set<string>()
  private nextPositional = 0

  constructor (private readonly candidates: string[], private readonly sourceMap?: Record<string, string>) {}

  /** The replica for `source`, or undefined. `positional` allows the by-order fallback. */
  match (source: string, positional: boolean): string | undefined {
    const mapped = this.sourceMap?.[source]
    if (mapped !== undefined) { this.used.add(mapped); return mapped }
    const byName = this.candidates.filter(c => !this.used.has(c) && sameName(c, source))
    if (byName.length === 1) { this.used.add(byName[0] as string); return byName[0] }
    if (!positional) return undefined
    for (; this.nextPositional < this.candidates.length; this.nextPositional++) {
      const c = this.candidates[this.nextPositional] as string
      if (!this.used.has(c)) { this.used.add(c); this.nextPositional++; return c }
    }
    return undefined
  }
}
