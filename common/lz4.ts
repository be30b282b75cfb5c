/**
 * The lz4 block codec, the one binding everything uses (protocol/delta, the scan workers).
 *
 * The `lz4` package's native addon is used where it loads (Linux, built at install). Where it
 * does not — Windows installed without a C++ toolchain (`npm ci --ignore-scripts`), where the
 * package's Linux-built `.node` files fail with "Bad EXE format" — the same package's pure-JS
 * block codec (`lz4/lib/binding.js`) is used. Both read and write the standard lz4 block format,
 * so a Windows node and a Linux node decode each other's blocks (test/unit/delta/lz4.test.ts
 * checks both directions); the JS encoder may choose different matches, which is allowed: the
 * wire carries the checksum of the raw bytes, not of the compressed ones.
 * `VMESH_LZ4=js` forces the JS codec (tests, measurements).
 */
import { createRequire } from 'node:module'

export interface Lz4Codec {
  readonly impl: 'native' | 'js'
  /** Compresses `src` into `dst`; 0 when it does not fit in `dst` (or is incompressible). */
  encodeBlock: (src: Uint8Array, dst: Uint8Array) => number
  /** Decompresses into `dst`; the decoded length, or a negative number / a length over `dst` on damaged input. */
  decodeBlock: (src: Uint8Array, dst: Uint8Array) => number
  encodeBound: (n: number) => number
}

interface PackageApi { encodeBlock: (s: Uint8Array, d: Uint8Array) => number, decodeBlock: (s: Uint8Array, d: Uint8Array) => number, encodeBound: (n: number) => number }
interface JsApi {
  compressDependent: (s: Uint8Array, d: Uint8Array, pos: number, table: Uint32Array, sIdx: number, eIdx: number) => number
  uncompress: (s: Uint8Array, d: Uint8Array) => number
  compressBound: (n: number) => number
}

const req = createRequire(import.meta.url)

function loadNative (): Lz4Codec | null {
  try {
    const m = req('lz4') as PackageApi
    if (typeof m.encodeBlock !== 'function' || typeof m.decodeBlock !== 'function') return null
    return { impl: 'native', encodeBlock: m.encodeBlock, decodeBlock: m.decodeBlock, encodeBound: m.encodeBound }
  } catch {
    return null
  }
}

/** The pure-JS codec shipped inside the `lz4` package. */
export function loadJsLz4 (): Lz4Codec {
  const m = req('lz4/lib/binding.js') as JsApi
  // the package's compress() builds a fresh 64 Ki-entry Array per block (≈ 16 MB/s); its block
  // compressor takes the hash table as an argument, so one typed array is reused, cleared per block
  const table = new Uint32Array(1 << 16)
  const compress = (src: Uint8Array, dst: Uint8Array): number => { table.fill(0); return m.compressDependent(src, dst, 0, table, 0, dst.byteLength) }
  return {
    impl: 'js',
    // the JS encoder refuses a destination below the bound instead of giving up early like the
    // native one: compress into a full-size scratch and keep the result only when it fits
    encodeBlock: (src, dst) => {
      if (src.byteLength === 0) return 0
      const bound = m.compressBound(src.byteLength)
      if (dst.byteLength >= bound) return compress(src, dst)
      const scratch = Buffer.allocUnsafe(bound)
      const n = compress(src, scratch)
      if (n <= 0 || n > dst.byteLength) return 0
      dst.set(scratch.subarray(0, n))
      return n
    },
    decodeBlock: (src, dst) => {
      try { return m.uncompress(src, dst) } catch { return -1 }
    },
    encodeBound: (n) => m.compressBound(n)
  }
}

export const lz4: Lz4Codec = (process.env.VMESH_LZ4 === 'js' ? null : loadNative()) ?? loadJsLz4()
