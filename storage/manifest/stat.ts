/**
 * A file's identity as the "unchanged, skip reading" decision sees it: nanosecond-exact (bigint)
 * stats, and the serialisable form the manifest stores. Pure; storage/changes reads the stats.
 */

export interface FileStat {
  size: number
  mtimeNs: bigint
  ctimeNs: bigint
  ino: bigint
  dev: bigint
}

/** True when nothing a write would move differs between the two stats. */
export function sameStat (a: FileStat, b: FileStat): boolean {
  return a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs && a.ino === b.ino && a.dev === b.dev
}

/** Serialisable form of a stat (bigints as decimal strings). */
export interface StatRecord { size: number, mtimeNs: string, ctimeNs: string, ino: string, dev: string }

export function statToRecord (s: FileStat): StatRecord {
  return { size: s.size, mtimeNs: s.mtimeNs.toString(), ctimeNs: s.ctimeNs.toString(), ino: s.ino.toString(), dev: s.dev.toString() }
}

export function statFromRecord (r: StatRecord): FileStat {
  return { size: r.size, mtimeNs: BigInt(r.mtimeNs), ctimeNs: BigInt(r.ctimeNs), ino: BigInt(r.ino), dev: BigInt(r.dev) }
}
