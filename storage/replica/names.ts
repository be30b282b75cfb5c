/**
 * Replica file names: the source file's basename (so an operator recognizes `web01.vhdx`),
 * made safe for any file system and unique within the replica. Names are chosen once, when a
 * file first appears, and then persisted — never recomputed — so they stay stable.
 */
import { blake3 } from '../../common/blake3.ts'

const MAX_NAME = 200

/** Basename of a POSIX or Windows path. */
export function sourceBasename (sourcePath: string): string {
  const parts = sourcePath.split(/[\\/]/).filter(p => p.length > 0)
  return parts[parts.length - 1] ?? ''
}

/**
 * A basename made safe for any file system, as the store names replica files (idempotent, so a
 * replica's name sanitizes to itself; the hypervisor drivers match source names through it).
 */
export function sanitizeReplicaName (name: string): string {
  let s = name.replace(/[^A-Za-z0-9._~-]/g, '_').slice(0, MAX_NAME)
  if (s === '' || /^\.+$/.test(s)) s = 'file'
  if (s.endsWith('.tmp')) s = `${s}_`
  return s
}

function withSuffix (name: string, suffix: string): string {
  const dot = name.lastIndexOf('.')
  return dot > 0 ? `${name.slice(0, dot)}-${suffix}${name.slice(dot)}` : `${name}-${suffix}`
}

/** A name for `sourcePath` not in `taken`. */
export function replicaFileName (sourcePath: string, taken: ReadonlySet<string>): string {
  const base = sanitizeReplicaName(sourceBasename(sourcePath))
  if (!taken.has(base)) return base
  const tag = Buffer.from(blake3(Buffer.from(sourcePath, 'utf8'), 4)).toString('hex')
  const tagged = withSuffix(base, tag)
  if (!taken.has(tagged)) return tagged
  for (let i = 2; i <= taken.size + 2; i++) {
    const n = withSuffix(base, `${tag}-${i}`)
    if (!taken.has(n)) return n
  }
  throw new Error('unreachable: no free replica file name')
}
