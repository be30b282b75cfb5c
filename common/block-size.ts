/**
 * The block-size rule, in one place: change tracking, dirty maps, the config schema and the CLI
 * all accept a power of two from 4 KiB to 4 MiB. The wire's largest block (protocol/delta's
 * MAX_BLOCK_LENGTH) is the largest block size.
 */
import { InvalidBlockSizeError } from './errors.ts'

export const MIN_BLOCK_SIZE = 4096
export const MAX_BLOCK_SIZE = 4 * 1024 * 1024
export const DEFAULT_BLOCK_SIZE = 64 * 1024

/** The rule in words, for error messages. */
export const BLOCK_SIZE_RULE = 'a power of two from 4KiB to 4MiB'

/** True when `size` is a power of two in [MIN_BLOCK_SIZE, MAX_BLOCK_SIZE]. */
export function isValidBlockSize (size: number): boolean {
  return Number.isSafeInteger(size) && size >= MIN_BLOCK_SIZE && size <= MAX_BLOCK_SIZE && (size & (size - 1)) === 0
}

/** `size`, or InvalidBlockSizeError unless it is a valid block size. */
export function validateBlockSize (size: number): number {
  if (!isValidBlockSize(size)) {
    throw new InvalidBlockSizeError(`block size must be a power of two between ${MIN_BLOCK_SIZE} and ${MAX_BLOCK_SIZE}, got ${String(size)}`)
  }
  return size
}

/** Number of blocks covering `fileSize` bytes (the last one may be partial). */
export function blockCount (fileSize: number, blockSize: number): number {
  return Math.ceil(fileSize / blockSize)
}
