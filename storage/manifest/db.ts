/**
 * LevelDB plumbing shared by manifests and dirty maps: binary sublevels (so many files, VMs and
 * targets share one database) and small key-encoding helpers. Keys are length-prefixed where a
 * variable part is followed by more key, so one file's keys can never be a prefix of another's.
 */
import { Level } from 'level'
import type { AbstractLevel } from 'abstract-level'

/** A database (or sublevel) with Uint8Array keys and values. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type BinaryDb = AbstractLevel<any, Uint8Array, Uint8Array>

/** A binary sublevel of `db` named `name`. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function binarySublevel (db: AbstractLevel<any, any, any>, name: string): BinaryDb {
  return db.sublevel<Uint8Array, Uint8Array>(name, { keyEncoding: 'view', valueEncoding: 'view' })
}

/** Opens (creating if needed) a LevelDB at `dir` with binary keys and values. */
export async function openBinaryLevel (dir: string): Promise<Level<Uint8Array, Uint8Array>> {
  const db = new Level<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view' })
  await db.open()
  return db
}

/** LevelDB's own figure of the memory it holds (memtables + block cache); undefined when closed or not LevelDB. */
export function levelMemoryBytes (db: object): number | undefined {
  // `level`'s type is the browser/node union; on Node it is classic-level, which has getProperty
  const get = (db as { getProperty?: (p: string) => string }).getProperty
  try {
    const v = Number(get?.call(db, 'leveldb.approximate-memory-usage'))
    return Number.isFinite(v) ? v : undefined
  } catch {
    return undefined
  }
}

const utf8 = new TextEncoder()
const utf8d = new TextDecoder('utf-8', { fatal: true })

export function encodeUtf8 (s: string): Uint8Array { return utf8.encode(s) }
export function decodeUtf8 (b: Uint8Array): string { return utf8d.decode(b) }

/** Concatenates key parts. */
export function concatBytes (...parts: Uint8Array[]): Uint8Array {
  let n = 0
  for (const p of parts) n += p.length
  const out = new Uint8Array(n)
  let o = 0
  for (const p of parts) { out.set(p, o); o += p.length }
  return out
}

/** A string as u16 BE length + UTF-8 bytes (at most 65535 bytes). */
export function lenPrefixed (s: string): Uint8Array {
  const b = utf8.encode(s)
  if (b.length > 0xffff) throw new RangeError(`key part of ${b.length} bytes exceeds 65535`)
  const out = new Uint8Array(2 + b.length)
  out[0] = b.length >>> 8
  out[1] = b.length & 0xff
  out.set(b, 2)
  return out
}

/** Non-negative safe integer as 8 bytes big-endian (sorts numerically). */
export function u64be (n: number): Uint8Array {
  const out = new Uint8Array(8)
  new DataView(out.buffer).setBigUint64(0, BigInt(n))
  return out
}

export function readU64be (b: Uint8Array, offset: number): number {
  return Number(new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(offset))
}

export function u32be (n: number): Uint8Array {
  const out = new Uint8Array(4)
  new DataView(out.buffer).setUint32(0, n)
  return out
}

export function readU32be (b: Uint8Array, offset: number): number {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(offset)
}

/** The smallest key greater than every key starting with `prefix` (for `lt` bounds). */
export function prefixEnd (prefix: Uint8Array): Uint8Array {
  const out = new Uint8Array(prefix)
  for (let i = out.length - 1; i >= 0; i--) {
    if ((out[i] as number) < 0xff) { out[i] = (out[i] as number) + 1; return out.subarray(0, i + 1) }
  }
  return concatBytes(prefix, new Uint8Array([0xff, 0xff, 0xff, 0xff]))
}
