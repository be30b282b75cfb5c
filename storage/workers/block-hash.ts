/**
 * Per-block BLAKE3-128 and zero detection for the worker and the in-thread hasher: the one
 * per-block loop and zero check live in common/ (blake3.ts, zero.ts).
 */
import { BLOCK_HASH_BYTES, blake3, blake3Package } from '../../common/blake3.ts'

export { blake3Impl, hashBlocksInto } from '../../common/blake3.ts'
export { isAllZero as isZero } from '../../common/zero.ts'

export const HASH_BYTES = BLOCK_HASH_BYTES

/** BLAKE3 of `data` truncated to 128 bits. */
export function hash128 (data: Uint8Array): Uint8Array { return blake3(data, HASH_BYTES) }

/** BLAKE3-128 through the package API only (for cross-checking the fast path). */
export function hash128Package (data: Uint8Array): Uint8Array { return blake3Package(data, HASH_BYTES) }
