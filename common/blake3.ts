/**
 * BLAKE3, the one binding everything uses (wire codecs, replica store, scan workers).
 *
 * Without the `blake3` package's per-call stream: its `hash()` and `createHash()` wrap every
 * hasher in a stream.Transform, whose construction costs more than hashing a 64 KiB block and
 * leaves garbage behind (measured: a large share of the receiver's GC). So the native binding
 * (`@c4312/blake3-native`, built at install) is called directly when it loads. Where it does
 * not — Windows installed without a C++ toolchain, or a Linux-built `.node` ("Bad EXE format")
 * — the package's WebAssembly build (`blake3-wasm`, its dependency) is used: same digests,
 * slower (README gives both speeds). `VMESH_BLAKE3=wasm` forces it (tests, measurements).
 * Blocks are hashed through the one per-block loop here (hashBlocksInto / hashBlocks).
 */
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { blake3 as nobleBlake3 } from '@noble/hashes/blake3.js'
import { asBuffer, zeroRun } from './zero.ts'

export interface Blake3Hasher {
  update: (data: Uint8Array) => void
  /** The first `length` bytes of the digest, in a buffer of their own. */
  digest: (length: number) => Uint8Array
  /**
   * Frees the hasher's WebAssembly memory now (a no-op for the native binding). Without it the
   * memory waits for the GC's finalizers, and the wasm heap (16 MiB) can run out first.
   */
  dispose: () => void
}

interface NativeHasher { update: (data: Uint8Array) => void, digest: (length?: number) => Uint8Array }
interface NativeBlake3 { createHash: () => NativeHasher }
interface WasmHasher { update: (data: Uint8Array) => unknown, digest: (o: { length: number }) => Uint8Array, dispose?: () => void }
interface WasmBlake3 { load: () => Promise<void>, createHash: () => WasmHasher, hash: (data: Uint8Array, o: { length: number }) => Uint8Array }

const req = createRequire(import.meta.url)

function packageDir (): string { return dirname(req.resolve('blake3/package.json')) }

function loadNative (): NativeBlake3 | null {
  try {
    const pkg = req.resolve('@c4312/blake3-native/package.json', { paths: [packageDir()] })
    const mod = req(join(dirname(pkg), 'build', 'Release', 'blake3.node')) as Partial<NativeBlake3>
    return typeof mod.createHash === 'function' ? mod as NativeBlake3 : null
  } catch {
    return null
  }
}

async function loadWasm (): Promise<WasmBlake3 | null> {
  try {
    const mod = req(req.resolve('blake3-wasm', { paths: [packageDir()] })) as WasmBlake3
    await mod.load()
    return mod
  } catch {
    return null
  }
}

const native = process.env.VMESH_BLAKE3 === 'wasm' ? null : loadNative()
// always loaded: the fallback, and the cross-check of the native path in tests
const wasm = await loadWasm()
if (native === null && wasm === null) throw new Error('BLAKE3: neither the native binding nor blake3-wasm could be loaded; reinstall dependencies')

/** Which implementation is in use. */
export const blake3Impl: 'native-direct' | 'wasm' = native !== null ? 'native-direct' : 'wasm'

/** The wasm build copies each input into its 16 MiB heap: feed it in slices. */
const WASM_SLICE = 1 << 20
/**
 * At most this many incremental wasm hashers (≈ 2 KB of wasm heap each) at once. A hasher that
 * is dropped without dispose() (a validator abandoned when its peer vanished) is freed only by
 * the GC's finalizers, which may lag far behind: past the cap, new hashers are pure JS
 * (@noble/hashes, slow but GC-managed) so the fixed-size wasm heap can never run out.
 */
const MAX_LIVE_WASM_HASHERS = 1024
let liveWasm = 0
const wasmReleased = new FinalizationRegistry<{ done: boolean }>((state) => { if (!state.done) { state.done = true; liveWasm-- } })

function jsHasher (): Blake3Hasher {
  const h = nobleBlake3.create({ dkLen: 64 })
  return {
    update: (data) => { h.update(data) },
    digest: (length) => {
      if (length > 64) throw new RangeError('digest length over 64')
      return h.clone().digest().slice(0, length)
    },
    dispose: () => {}
  }
}

function wasmHasher (): Blake3Hasher {
  if (liveWasm >= MAX_LIVE_WASM_HASHERS) return jsHasher()
  const h = (wasm as WasmBlake3).createHash()
  liveWasm++
  const state = { done: false }
  const out: Blake3Hasher = {
    update: (data) => { for (let at = 0; at < data.byteLength; at += WASM_SLICE) h.update(data.subarray(at, at + WASM_SLICE)) },
    digest: (length) => new Uint8Array(h.digest({ length })),
    dispose: () => {
      if (state.done) return
      state.done = true
      liveWasm--
      wasmReleased.unregister(state)
      h.dispose?.()
    }
  }
  wasmReleased.register(out, state, state)
  return out
}

function wasmOneShot (data: Uint8Array, length: number): Uint8Array {
  if (data.byteLength <= WASM_SLICE) return new Uint8Array((wasm as WasmBlake3).hash(data, { length }))
  const h = wasmHasher()
  try { h.update(data); return h.digest(length) } finally { h.dispose() }
}

export function createBlake3 (): Blake3Hasher {
  if (native !== null) {
    const h = native.createHash()
    return { update: (data) => { h.update(data) }, digest: (length) => plain(h.digest(length)), dispose: () => {} }
  }
  return wasmHasher()
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
  return wasmOneShot(data, length)
}

/** BLAKE3 through the WebAssembly build (the fallback; cross-checks the native path). */
export function blake3Wasm (data: Uint8Array, length: number): Uint8Array {
  if (wasm === null) throw new Error('blake3-wasm is not available')
  return wasmOneShot(data, length)
}

/** @deprecated name kept for callers: the WebAssembly path. */
export const blake3Package = blake3Wasm

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
