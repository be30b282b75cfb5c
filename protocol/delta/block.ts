/**
 * One block of a delta: encode (zero flag, lz4 when it pays, raw otherwise) and decode (length and
 * BLAKE3-128 checksum of the raw content verified). Pure functions without main-thread state, so a
 * worker pool can run encodeBlock; every returned buffer owns its ArrayBuffer (or is the caller's
 * input for raw blocks), so `payload.buffer` may be transferred back from a worker.
 */
import { blake3, createBlake3 } from '../../common/blake3.ts'
import { lz4 } from '../../common/lz4.ts'
import { isAllZero } from '../../common/zero.ts'
import { MAX_BLOCK_LENGTH } from './limits.ts'
import {
  DeltaBadEncodingError,
  DeltaBlockTooLargeError,
  DeltaChecksumMismatchError,
  DeltaDecompressError
} from './errors.ts'

/** How a block's payload travels. Wire values; append-only. */
export enum BlockEncoding {
  /** payload is the raw content */
  Raw = 0,
  /** payload is an lz4 block (no frame header); the raw length travels beside it */
  Lz4 = 1,
  /** all bytes are zero; no payload */
  Zero = 2
}

/** Bytes of the truncated BLAKE3 checksum carried by every block. */
export const CHECKSUM_LENGTH = 16

export interface EncodedBlock {
  encoding: BlockEncoding
  /** Raw (decoded) length in bytes, 1..MAX_BLOCK_LENGTH. */
  length: number
  /** BLAKE3 of the raw content, truncated to CHECKSUM_LENGTH bytes. */
  checksum: Uint8Array
  /** Raw bytes, lz4 block, or empty for zero blocks. */
  payload: Uint8Array
}

export interface DecodeBlockOptions {
  /** Refuse blocks whose declared raw length exceeds this (e.g. the file's blockSize). */
  maxLength: number
  /** lz4 blocks are decoded into the start of this buffer when it is large enough (no allocation). */
  into?: Uint8Array
  /** Zero blocks come back as a view of a shared zero buffer: the caller must not write to it. */
  sharedZero?: boolean
}


const ZERO = new Uint8Array(64 * 1024)
export { isAllZero }

const zeroChecksums = new Map<number, Uint8Array>()

/** BLAKE3-128 of `data`, in a buffer of its own. */
export function blockChecksum (data: Uint8Array): Uint8Array {
  return blake3(data, CHECKSUM_LENGTH)
}

/** Checksum of `length` zero bytes, cached per length because zero blocks are frequent. */
export function zeroChecksum (length: number): Uint8Array {
  let sum = zeroChecksums.get(length)
  if (sum == null) {
    if (length <= ZERO.length) {
      sum = blockChecksum(ZERO.subarray(0, length))
    } else {
      const h = createBlake3()
      for (let left = length; left > 0; left -= ZERO.length) h.update(ZERO.subarray(0, Math.min(left, ZERO.length)))
      sum = h.digest(CHECKSUM_LENGTH)
      h.dispose()
    }
    if (zeroChecksums.size >= 64) zeroChecksums.clear()
    zeroChecksums.set(length, sum)
  }
  return new Uint8Array(sum)
}

/**
 * Encodes one block. lz4 is kept only when it saves at least 1/32 of the length: the output buffer
 * is sized to that budget, so lz4 gives up (returns 0) as soon as it cannot meet it.
 * `raw` is not copied for raw blocks: do not modify it while the result is in use.
 */
export function encodeBlock (raw: Uint8Array): EncodedBlock {
  const length = raw.byteLength
  if (length < 1 || length > MAX_BLOCK_LENGTH) {
    throw new DeltaBlockTooLargeError(`block length ${length} outside [1, ${MAX_BLOCK_LENGTH}]`)
  }
  if (isAllZero(raw)) {
    return { encoding: BlockEncoding.Zero, length, checksum: zeroChecksum(length), payload: new Uint8Array(0) }
  }
  const checksum = blockChecksum(raw)
  const budget = length - Math.ceil(length / 32)
  if (budget > 0) {
    const dst = Buffer.allocUnsafeSlow(budget)
    const n = lz4.encodeBlock(raw, dst)
    if (n > 0 && n <= budget) {
      // copy small results so a well-compressed block does not pin its whole budget buffer
      const payload = n < budget >>> 1 ? new Uint8Array(dst.subarray(0, n)) : new Uint8Array(dst.buffer, dst.byteOffset, n)
      return { encoding: BlockEncoding.Lz4, length, checksum, payload }
    }
  }
  return { encoding: BlockEncoding.Raw, length, checksum, payload: raw }
}

/**
 * Decodes one block and verifies its length and checksum. Allocates at most `length` bytes, after
 * checking it against `maxLength`. Raw blocks return the payload itself (no copy).
 */
export function decodeBlock (block: EncodedBlock, options: DecodeBlockOptions): Uint8Array {
  const { length, payload, checksum } = block
  if (!Number.isSafeInteger(length) || length < 1 || length > options.maxLength || length > MAX_BLOCK_LENGTH) {
    throw new DeltaBlockTooLargeError(`block length ${length} outside [1, ${Math.min(options.maxLength, MAX_BLOCK_LENGTH)}]`)
  }
  if (checksum.byteLength !== CHECKSUM_LENGTH) {
    throw new DeltaBadEncodingError(`checksum of ${checksum.byteLength} bytes, expected ${CHECKSUM_LENGTH}`)
  }
  switch (block.encoding) {
    case BlockEncoding.Zero: {
      if (payload.byteLength !== 0) throw new DeltaBadEncodingError(`zero block with a ${payload.byteLength}-byte payload`)
      verifyChecksum(zeroChecksum(length), checksum)
      return options.sharedZero === true ? sharedZeros(length) : new Uint8Array(length)
    }
    case BlockEncoding.Raw: {
      if (payload.byteLength !== length) throw new DeltaBadEncodingError(`raw block of ${length} bytes with a ${payload.byteLength}-byte payload`)
      verifyChecksum(blockChecksum(payload), checksum)
      return payload
    }
    case BlockEncoding.Lz4: {
      if (payload.byteLength < 1 || payload.byteLength > length) {
        throw new DeltaBadEncodingError(`lz4 block of ${length} bytes with a ${payload.byteLength}-byte payload`)
      }
      const into = options.into
      const out = into !== undefined && into.byteLength >= length ? into.subarray(0, length) : Buffer.allocUnsafeSlow(length)
      // LZ4_decompress_safe: never writes past `out`, negative on malformed input
      const n = lz4.decodeBlock(payload, out)
      if (n !== length) throw new DeltaDecompressError(`lz4 payload decoded to ${n} bytes, expected ${length}`)
      const raw = new Uint8Array(out.buffer, out.byteOffset, length)
      verifyChecksum(blockChecksum(raw), checksum)
      return raw
    }
    default:
      throw new DeltaBadEncodingError(`unknown block encoding ${String(block.encoding)}`)
  }
}

let zeros = new Uint8Array(0)

/** A read-only view of `length` zero bytes (the backing buffer grows to the largest asked for). */
function sharedZeros (length: number): Uint8Array {
  if (zeros.byteLength < length) zeros = new Uint8Array(length)
  return zeros.subarray(0, length)
}

function verifyChecksum (actual: Uint8Array, expected: Uint8Array): void {
  if (Buffer.compare(actual, expected) !== 0) throw new DeltaChecksumMismatchError('block content does not match its checksum')
}
