/**
 * Sub-block deltas: a changed 64 KiB tracking block travels as only the 4 KiB pieces that differ
 * from what the target holds.
 *
 * Before an incremental generation the sender asks the target (the existing hashRequest, with
 * `blockSize` = SUB_BLOCK) for the hashes of its pending ranges — 16 bytes per 4 KiB, 0.4 % of
 * the range — and, as each changed block is read, hashes its own 4 KiB pieces and passes on only
 * the runs that differ (or that the target had no hash for). Blocks entries may start anywhere
 * and be at most the file's blockSize long (protocol/delta), so the wire format is unchanged and
 * older targets, which answer hashRequest for any block size, need nothing new.
 */
import { hashBlocks } from '../../common/blake3.ts'
import type { ChangedBlock } from '../../protocol/delta/index.ts'

/** Granularity of sub-block comparison. */
export const SUB_BLOCK = 4096

/** The target's hashes of one file's sub-blocks, by sub-block index (offset / SUB_BLOCK). */
export type SubHashes = Map<number, Uint8Array>

/**
 * The parts of `block` whose SUB_BLOCK pieces differ from `theirs`, as runs of adjacent
 * differing pieces (each within the block, so at most the block's length). A block not aligned
 * to SUB_BLOCK is passed on whole.
 */
export function differingParts (block: ChangedBlock, theirs: SubHashes): ChangedBlock[] {
  const len = block.data.byteLength
  if (block.offset % SUB_BLOCK !== 0 || len <= SUB_BLOCK) {
    if (len <= SUB_BLOCK && block.offset % SUB_BLOCK === 0) {
      const h = theirs.get(block.offset / SUB_BLOCK)
      if (h !== undefined && Buffer.compare(hashBlocks(block.data, SUB_BLOCK)[0] as Uint8Array, h) === 0) return []
    }
    return [block]
  }
  const ours = hashBlocks(block.data, SUB_BLOCK)
  const first = block.offset / SUB_BLOCK
  const out: ChangedBlock[] = []
  let runStart = -1
  const flush = (end: number): void => {
    if (runStart < 0) return
    const a = runStart * SUB_BLOCK
    const b = Math.min(len, end * SUB_BLOCK)
    out.push({ offset: block.offset + a, data: block.data.subarray(a, b) })
    runStart = -1
  }
  for (let i = 0; i < ours.length; i++) {
    const h = theirs.get(first + i)
    const same = h !== undefined && Buffer.compare(ours[i] as Uint8Array, h) === 0
    if (!same && runStart < 0) runStart = i
    if (same) flush(i)
  }
  flush(ours.length)
  return out
}

/** Passes on only the differing parts of each block of `blocks`. */
export async function * refineBlocks (blocks: AsyncIterable<ChangedBlock>, theirs: SubHashes): AsyncGenerator<ChangedBlock> {
  for await (const b of blocks) yield * differingParts(b, theirs)
}
