/**
 * Byte ranges of a file: validating, clipping, sorting, merging, totals. Pure, and at the bottom
 * of the layers so that protocol/ (durable ranges on the wire), storage/ (formats, change sets,
 * dirty maps) and daemon/ (what a sender reads) share one implementation.
 *
 * A merged list is sorted, non-overlapping and non-adjacent (touching ranges are joined) with no
 * empty range: every list of ranges has exactly one merged form.
 */
import { InvalidRangeError } from './errors.ts'

/** A byte range of a file. */
export interface ByteRange { offset: number, length: number }

/** A byte range of one of a generation's files. */
export interface FileRange extends ByteRange { fileId: number }

/** Throws InvalidRangeError unless offset and length are non-negative safe integers. */
export function checkRange (r: ByteRange): void {
  if (!Number.isSafeInteger(r.offset) || !Number.isSafeInteger(r.length) || r.offset < 0 || r.length < 0) {
    throw new InvalidRangeError(`bad range offset=${String(r.offset)} length=${String(r.length)}`)
  }
}

/** Appends [offset, end) to `out` (sorted by offset), joining it to the last range when they overlap or touch. */
function append (out: ByteRange[], offset: number, end: number): void {
  const last = out[out.length - 1]
  if (last !== undefined && offset <= last.offset + last.length) {
    last.length = Math.max(last.length, end - last.offset)
  } else {
    out.push({ offset, length: end - offset })
  }
}

/** The merged form of `ranges` (input not modified); InvalidRangeError for a malformed range. */
export function mergeRanges (ranges: Iterable<ByteRange>): ByteRange[] {
  const sorted: ByteRange[] = []
  for (const r of ranges) { checkRange(r); if (r.length > 0) sorted.push(r) }
  sorted.sort((a, b) => a.offset - b.offset)
  const out: ByteRange[] = []
  for (const r of sorted) append(out, r.offset, r.offset + r.length)
  return out
}

/** The merged form per file, sorted by (fileId, offset) (input not modified). */
export function mergeFileRanges (ranges: Iterable<FileRange>): FileRange[] {
  const sorted: FileRange[] = []
  for (const r of ranges) { checkRange(r); if (r.length > 0) sorted.push(r) }
  sorted.sort((a, b) => a.fileId - b.fileId || a.offset - b.offset)
  const out: FileRange[] = []
  let run: ByteRange[] = []
  let fileId = -1
  const flush = (): void => { for (const r of run) out.push({ fileId, offset: r.offset, length: r.length }) }
  for (const r of sorted) {
    if (r.fileId !== fileId) { flush(); run = []; fileId = r.fileId }
    append(run, r.offset, r.offset + r.length)
  }
  flush()
  return out
}

/** Each range cut to [0, limit), empty ones dropped, order kept (e.g. a change set cut to the file's size). */
export function clipRanges (ranges: Iterable<ByteRange>, limit: number): ByteRange[] {
  const out: ByteRange[] = []
  for (const r of ranges) {
    const start = Math.max(0, r.offset)
    const end = Math.min(limit, r.offset + r.length)
    if (end > start) out.push({ offset: start, length: end - start })
  }
  return out
}

/** `ranges` widened to whole blocks, clipped to `fileSize`, merged. */
export function alignRanges (ranges: Iterable<ByteRange>, blockSize: number, fileSize: number): ByteRange[] {
  const out: ByteRange[] = []
  for (const r of mergeRanges(ranges)) {
    const start = Math.floor(r.offset / blockSize) * blockSize
    const end = Math.min(Math.ceil((r.offset + r.length) / blockSize) * blockSize, fileSize)
    if (end > start) out.push({ offset: start, length: end - start })
  }
  return mergeRanges(out)
}

/**
 * Ranges of `length` bytes starting at each of `starts` (any order; not modified), clipped to
 * `limit`, merged. For blocks, whose starts are collected in a typed array so a large table
 * does not become millions of objects.
 */
export function rangesFromStarts (starts: Float64Array, length: number, limit: number): ByteRange[] {
  const sorted = starts.slice().sort()
  const out: ByteRange[] = []
  for (let i = 0; i < sorted.length; i++) {
    const start = sorted[i] as number
    const end = Math.min(limit, start + length)
    if (end > start) append(out, start, end)
  }
  return out
}

/** Sum of the lengths. */
export function totalLength (ranges: readonly ByteRange[]): number {
  let n = 0
  for (const r of ranges) n += r.length
  return n
}
