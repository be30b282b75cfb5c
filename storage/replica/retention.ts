/**
 * Which recovery points to keep, as Hyper-V Replica does it: every point of the last hour, then
 * one point per hour (the newest of that hour) for up to `maxPoints` hours. The newest point is
 * always kept — it is where failover goes by default. Pure: the caller passes wall time.
 */
import type { PointEntry } from './schema.ts'
import { ReplicaInvalidInputError } from './errors.ts'

export interface RetentionPolicy {
  /**
   * Most points kept beyond the keep-all window (with `hourlyBeyond`, that many hours of history).
   * @default 24
   */
  maxPoints: number
  /** Every point created within this many ms of now is kept. @default 3_600_000 (one hour) */
  keepAllWithinMs: number
  /** Beyond the window, keep only the newest point of each wall-clock hour. @default true */
  hourlyBeyond: boolean
}

export const DEFAULT_RETENTION: Readonly<RetentionPolicy> = Object.freeze({ maxPoints: 24, keepAllWithinMs: 3_600_000, hourlyBeyond: true })

const HOUR_MS = 3_600_000

export function resolveRetention (partial?: Partial<RetentionPolicy>): RetentionPolicy {
  const p = { ...DEFAULT_RETENTION, ...partial }
  if (!Number.isSafeInteger(p.maxPoints) || p.maxPoints < 0) throw new ReplicaInvalidInputError(`retention.maxPoints must be a non-negative integer, got ${String(p.maxPoints)}`)
  if (!Number.isSafeInteger(p.keepAllWithinMs) || p.keepAllWithinMs < 0) throw new ReplicaInvalidInputError(`retention.keepAllWithinMs must be a non-negative integer, got ${String(p.keepAllWithinMs)}`)
  return p
}

/** Generations of the points to keep. `points` is in ascending generation order. */
export function selectRetained (points: readonly PointEntry[], nowWallMs: number, policy: RetentionPolicy): Set<number> {
  const keep = new Set<number>()
  const newest = points[points.length - 1]
  if (newest === undefined) return keep
  keep.add(newest.generation)
  const older: PointEntry[] = []
  for (const p of points) {
    if (p.createdAtMs >= nowWallMs - policy.keepAllWithinMs) keep.add(p.generation)
    else older.push(p)
  }
  // newest first, so the first point seen in an hour is that hour's newest
  older.reverse()
  const seenHours = new Set<number>()
  let kept = 0
  for (const p of older) {
    if (kept >= policy.maxPoints) break
    if (policy.hourlyBeyond) {
      const hour = Math.floor(p.createdAtMs / HOUR_MS)
      if (seenHours.has(hour)) continue
      seenHours.add(hour)
    }
    if (!keep.has(p.generation)) { keep.add(p.generation); kept++ }
  }
  return keep
}
