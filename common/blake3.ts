/**
 * BLAKE3 without the `blake3` package's per-call stream: its `hash()` and `createHash()` wrap
 * every hasher in a stream.Transform, whose construction costs more than hashing a 64 KiB
 * block and leaves garbage behind (measured: a large share of the receiver's GC). The native
 * binding the package loads is called directly when it can be found; otherwise the package API
 * is used (same digests). Shared by the wire codecs, the replica store and the scan workers,
 * which hash blocks through the one per-block loop here (hashBlocksInto / hashBlocks).
 */
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { createHash as packageCreateHash } from 'blake3'
import { asBuffer, zeroRun } from './zero.ts'

export interface Blake3Hasher {
  update: (data: Uint8Array) => void
  /** The first `length` bytes of the digest, in a buffer of their own. */
  digest: (length: number) => Uint8Array
}

interface NativeHasher { update: (data: Uint8Array) => void, digest: (length?: number) => Uint8Array }
interface NativeBlake3 { createHash: () => NativeHasher }

function loadNative (): NativeBlake3 | null {
  try {
    const req = createRequire(import.meta.url)
    const pkg = req.resolve('@c4312/blake3-native/package.json', { paths: [dirname(req.resolve('blake3'))] })
    const mod = req(join(dirname(pkg), 'build', 'Release', 'blake3.node')) as Partial<NativeBlake3>
    return typeof mod.createHash === 'function' ? mod as NativeBlake3 : null
  } catch {
    return null
  }
}

const native = loadNative()

/** Which implementation is in use (tests check both agree). */
export const blake3Impl: 'native-direct' | 'package' = native !== null ? 'native-direct' : 'package'

export function createBlake3 (): Blake3Hasher {
  if (native !== null) {
    const h = native.createHash()
    return { update: (data) => { h.update(data) }, digest: (length) => plain(h.digest(length)) }
  }
  const h = packageCreateHash()
  return { update: (data) => { h.update(data) }, digest: (length) => new Uint8Array(h.digest({ length })) }
}

/** A plain Uint8Array over a Buffer's bytes (no copy): callers compare and serialize digests as bytes. */
function plain (b: Uint8Array): Uint8Array {
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength)
}

/** BLAKE3 of `data`, truncated to `length` bytes. */
export function blake3 (data: Uint8Array, length: number): Uint8Array {
  if (native !== null) {
    const h = native.createHash()
    h.update(data)
    return plain(h.digest(length))
  }
  return new Uint8Array(packageCreateHash().update(data).digest({ length }))
}

/** BLAKE3 through the package API only (to cross-check the direct path). */
export function blake3Package (data: Uint8Array, length: number): Uint8Array {
  return new Uint8Array(packageCreateHash().update(data).digest({ length }))
}

/** Bytes of a block hash: BLAKE3 truncated to 128 bits (the delta checksum and the manifest hash). */
export const BLOCK_HASH_BYTES = 16

/**
 * Hashes consecutive blocks of data[0, length): writes block i's BLAKE3-128 to hashes[16i..] and
 * returns the number of blocks; the last block may be short. With `zeroMask`, all-zero blocks are
 * found by memcmp and not hashed: zeroMask[i] = 1 and their hash slot is left untouched.
 */
export function hashBlocksInto (data: Uint8Array, length: number, blockSize: number, hashes: Uint8Array, zeroMask?: Uint8Array): number {
  const buf = asBuffer(data)
  const z = zeroMask !== undefined ? zeroRun(blockSize) : undefined
  let i = 0
  for (let off = 0; off < length; off += blockSize, i++) {
    const end = Math.min(off + blockSize, length)
    if (zeroMask !== undefined && z !== undefined) {
      if (buf.compare(z, 0, end - off, off, end) === 0) { zeroMask[i] = 1; continue }
      zeroMask[i] = 0
    }
    hashes.set(blake3(buf.subarray(off, end), BLOCK_HASH_BYTES), i * BLOCK_HASH_BYTES)
  }
  return i
}

/** BLAKE3-128 of each block of data[0, length) (the last may be short), as views into one buffer. */
export function hashBlocks (data: Uint8Array, blockSize: number, length = data.byteLength): Uint8Array[] {
  const hashes = new Uint8Array(Math.ceil(length / blockSize) * BLOCK_HASH_BYTES)
  const n = hashBlocksInto(data, length, blockSize, hashes)
  const out: Uint8Array[] = []
  for (let i = 0; i < n; i++) out.push(hashes.subarray(i * BLOCK_HASH_BYTES, (i + 1) * BLOCK_HASH_BYTES))
  return out
}
