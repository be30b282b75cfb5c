/**
 * Where block hashing runs: in the worker pool (production: all cores, buffers transferred and
 * handed back) or in the calling thread (small files, tests). Same results either way.
 */
import { hashBlocksTask } from '../workers/tasks.ts'
import type { HashBlocksResult, ReadHashResult } from '../workers/tasks.ts'
import type { WorkerPool } from '../workers/pool.ts'

export type { HashBlocksResult, ReadHashResult } from '../workers/tasks.ts'

export interface BlockHasher {
  /** Hashes blocks of buf[0, length). Ownership of `buf` passes in and comes back as result.buf. */
  hash: (buf: ArrayBuffer, length: number, blockSize: number, signal?: AbortSignal) => Promise<HashBlocksResult>
  /**
   * Optional fast path: read and hash where the hashing runs, so no buffer crosses threads and
   * data is hashed cache-hot. Used only with the default file I/O.
   */
  readHash?: (path: string, offset: number, length: number, blockSize: number, signal?: AbortSignal) => Promise<ReadHashResult>
}

export const inlineHasher: BlockHasher = {
  hash: async (buf, length, blockSize) => hashBlocksTask({ buf, length, blockSize })
}

export function poolHasher (pool: WorkerPool): BlockHasher {
  return {
    hash: async (buf, length, blockSize, signal) => await pool.run<HashBlocksResult>('hashBlocks', { buf, length, blockSize }, {
      transfer: [buf],
      ...(signal != null ? { signal } : {})
    }),
    readHash: async (path, offset, length, blockSize, signal) => await pool.run<ReadHashResult>('readHashBlocks', { path, offset, length, blockSize },
      signal != null ? { signal } : {})
  }
}
