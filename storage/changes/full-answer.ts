/**
 * The full answer of a source that is told its changes (reported.ts, told.ts) when it cannot
 * answer incrementally (unknown token, a gap in the chain, a restarted process): the fallback
 * source's answer from scratch when there is one (e.g. a hash scan: only non-zero blocks),
 * else the whole file — under the caller's new token, marked full, never consistent.
 */
import type { ScanIO } from './file-io.ts'
import { BlockRuns, blockCount } from './range.ts'
import type { ChangeOptions, ChangeSet, ChangeSource, ChangeToken } from './source.ts'

export async function fullAnswer (
  c: { io: ScanIO, fallback?: ChangeSource | undefined },
  file: string, token: ChangeToken, shape: { blockSize: number, maxRuns: number }, opts: ChangeOptions
): Promise<ChangeSet> {
  if (c.fallback != null) {
    const set = await c.fallback.changes(file, null, opts)
    return { ...set, token, full: true }
  }
  const { size } = await c.io.stat(file)
  const all = new BlockRuns(shape.maxRuns)
  all.add(0, blockCount(size, shape.blockSize))
  return {
    ranges: all.toRanges(shape.blockSize, size), token, consistent: false, full: true,
    fileSize: size, blockSize: shape.blockSize, scannedBytes: 0
  }
}
