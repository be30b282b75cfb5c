/**
 * Bandwidth schedule windows, evaluated in the local time of a wall-clock instant.
 *
 * A window is active from `fromMinute` (inclusive) to `toMinute` (exclusive) of its weekdays;
 * the first active window's limit replaces the base limit. Local fields always come from Date
 * getters and boundaries from the Date constructor (which normalizes "minute 1440" into the next
 * day and handles DST itself), never from ms-per-day arithmetic, so a DST change cannot shift a
 * window by an hour.
 */
import type { Config } from '../../config/load.ts'

export type BandwidthConfig = Config['bandwidth']
export type ScheduleWindow = BandwidthConfig['schedule'][number]

/** Index of the first window active at `wallMs`, or undefined. */
export function activeWindow (schedule: ReadonlyArray<ScheduleWindow>, wallMs: number): number | undefined {
  if (schedule.length === 0) return undefined
  const d = new Date(wallMs)
  const day = d.getDay()
  const minute = d.getHours() * 60 + d.getMinutes()
  for (let i = 0; i < schedule.length; i++) {
    const w = schedule[i] as ScheduleWindow
    if (w.days.includes(day) && minute >= w.fromMinute && minute < w.toMinute) return i
  }
  return undefined
}

/** The node limit in force at `wallMs`: the first active window's, else the base limit. */
export function limitAt (bandwidth: BandwidthConfig, wallMs: number): number {
  const i = activeWindow(bandwidth.schedule, wallMs)
  return i === undefined ? bandwidth.limitBytesPerSec : (bandwidth.schedule[i] as ScheduleWindow).limitBytesPerSec
}

/**
 * The earliest wall-clock instant after `wallMs` at which a window starts or ends (so the active
 * window may change), or undefined for an empty schedule. Looks at most eight local days ahead,
 * which covers every weekly pattern.
 */
export function nextBoundary (schedule: ReadonlyArray<ScheduleWindow>, wallMs: number): number | undefined {
  if (schedule.length === 0) return undefined
  const now = new Date(wallMs)
  let best: number | undefined
  for (let k = 0; k <= 8; k++) {
    const day = new Date(now.getFullYear(), now.getMonth(), now.getDate() + k).getDay()
    for (const w of schedule) {
      if (!w.days.includes(day)) continue
      for (const minute of [w.fromMinute, w.toMinute]) {
        const at = new Date(now.getFullYear(), now.getMonth(), now.getDate() + k, 0, minute).getTime()
        if (at > wallMs && (best === undefined || at < best)) best = at
      }
    }
    // day k's boundaries all lie at or before the next midnight, where day k + 1's begin
    if (best !== undefined) break
  }
  return best
}
