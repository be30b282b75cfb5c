/** Worker threads for hashing and block encoding. */
export * from './pool.ts'
export * from './tasks.ts'
export { HASH_BYTES, blake3Impl, hash128, hashBlocksInto, isZero } from './block-hash.ts'
