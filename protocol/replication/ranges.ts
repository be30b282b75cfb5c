/**
 * Durable-range lists for targetState. The wire form is canonical — sorted by (fileId, offset),
 * non-empty, neither overlapping nor touching — so a decoder can check it in one pass and a list
 * has exactly one encoding. Under-reporting durable data is always safe (the source re-sends it),
 * so an over-long list is cut to the largest ranges rather than widened over gaps.
 */
import { mergeFileRanges } from '../../common/ranges.ts'
import { ReplicationBadRangesError, ReplicationEncodeError } from './errors.ts'
import type { FileRange } from './messages.ts'

/** Throws ReplicationBadRangesError unless `ranges` is in canonical merged form. */
export function checkMergedRanges (ranges: ReadonlyArray<FileRange>): void {
  let prev: FileRange | undefined
  for (const r of ranges) {
    if (r.length < 1) throw new ReplicationBadRangesError(`empty range at ${r.fileId}:${r.offset}`)
    if (r.offset + r.length > Number.MAX_SAFE_INTEGER) throw new ReplicationBadRangesError(`range ${r.fileId}:${r.offset}+${r.length} ends past 2^53 - 1`)
    if (prev !== undefined) {
      if (r.fileId < prev.fileId) throw new ReplicationBadRangesError(`file ${r.fileId} after file ${prev.fileId}`)
      if (r.fileId === prev.fileId && r.offset <= prev.offset + prev.length) {
        throw new ReplicationBadRangesError(`range ${r.fileId}:${r.offset} overlaps, touches or precedes the one before`)
      }
    }
    prev = r
  }
}

/** Sorts and merges overlapping or touching ranges into canonical form (input is not modified). */
export function mergeRanges (ranges: Iterable<FileRange>): FileRange[] {
  const checked: FileRange[] = []
  for (const r of ranges) {
    if (!Number.isInteger(r.fileId) || r.fileId < 0 || r.fileId > 0xffff_ffff || !Number.isSafeInteger(r.offset) || r.offset < 0 ||
        !Number.isSafeInteger(r.length) || r.length < 0 || r.offset + r.length > Number.MAX_SAFE_INTEGER) {
      throw new ReplicationEncodeError(`invalid range ${String(r.fileId)}:${String(r.offset)}+${String(r.length)}`)
    }
    checked.push(r)
  }
  return mergeFileRanges(checked)
}

/** mergeRanges, then at most `max` ranges: the largest kept, back in canonical order. */
export function durableRanges (ranges: Iterable<FileRange>, max: number): FileRange[] {
  const merged = mergeRanges(ranges)
  if (merged.length <= max) return merged
  const keep = merged
    .map((r, i) => ({ r, i }))
    .sort((a, b) => b.r.length - a.r.length || a.i - b.i)
    .slice(0, Math.max(0, max))
    .sort((a, b) => a.i - b.i)
  return keep.map(k => k.r)
}
