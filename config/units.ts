/**
 * Human units in the config file ("100Mbit", "64KiB", "30s") turned into the numbers the code
 * uses (bytes per second, bytes, milliseconds). Parsers return undefined on bad input so the
 * schema can report the key that holds it.
 */

const RATE_UNITS: Record<string, number> = {
  bit: 1 / 8, kbit: 1e3 / 8, mbit: 1e6 / 8, gbit: 1e9 / 8,
  b: 1, kb: 1e3, mb: 1e6, gb: 1e9,
  kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3,
  bps: 1 / 8, kbps: 1e3 / 8, mbps: 1e6 / 8, gbps: 1e9 / 8
}

/** "100Mbit" → 12 500 000 bytes/s; "5MB" → 5 000 000; "0" or "unlimited" → Infinity. */
export function parseRate (text: string | number): number | undefined {
  if (typeof text === 'number') return text >= 0 && Number.isFinite(text) ? text : undefined
  const s = text.trim().toLowerCase().replace(/\/s$/, '').replace(/ps$/, 'ps')
  if (s === 'unlimited' || s === 'none' || s === '0') return Infinity
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/.exec(s)
  if (m == null) return undefined
  const unit = m[2] === '' ? 'b' : (m[2] as string)
  const mult = RATE_UNITS[unit]
  if (mult === undefined) return undefined
  const v = Number(m[1]) * mult
  return v > 0 ? v : undefined
}

const SIZE_UNITS: Record<string, number> = {
  b: 1, k: 1024, kb: 1000, kib: 1024, m: 1024 ** 2, mb: 1e6, mib: 1024 ** 2, g: 1024 ** 3, gb: 1e9, gib: 1024 ** 3, t: 1024 ** 4, tib: 1024 ** 4, tb: 1e12
}

/** "64KiB" → 65536; a bare number is bytes. */
export function parseSize (text: string | number): number | undefined {
  if (typeof text === 'number') return Number.isSafeInteger(text) && text >= 0 ? text : undefined
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim())
  if (m == null) return undefined
  const mult = SIZE_UNITS[(m[2] ?? '').toLowerCase() || 'b']
  if (mult === undefined) return undefined
  const v = Math.round(Number(m[1]) * mult)
  return Number.isSafeInteger(v) ? v : undefined
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, min: 60_000, h: 3_600_000, d: 86_400_000 }

/** "30s" → 30000; a bare number is milliseconds. */
export function parseDuration (text: string | number): number | undefined {
  if (typeof text === 'number') return Number.isFinite(text) && text >= 0 ? text : undefined
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim())
  if (m == null) return undefined
  const mult = DURATION_UNITS[(m[2] ?? '').toLowerCase() || 'ms']
  if (mult === undefined) return undefined
  return Number(m[1]) * mult
}

/** Formats bytes/s for humans: 12500000 → "100 Mbit/s". */
export function formatRate (bytesPerSec: number): string {
  if (!Number.isFinite(bytesPerSec)) return 'unlimited'
  const bits = bytesPerSec * 8
  if (bits >= 1e9) return `${(bits / 1e9).toFixed(2)} Gbit/s`
  if (bits >= 1e6) return `${(bits / 1e6).toFixed(1)} Mbit/s`
  return `${(bits / 1e3).toFixed(0)} kbit/s`
}

/** Formats bytes for humans with binary units. */
export function formatBytes (n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = n
  let i = 0
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return `${i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i] ?? 'B'}`
}
