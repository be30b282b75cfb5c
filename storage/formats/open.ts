/**
 * Opening disk images: detect VHD/VHDX by signature, parse, and tell a change scanner which byte
 * ranges of a file it must read. Detection: "vhdxfile" at offset 0 is VHDX; "conectix" in the last
 * 512 bytes (or, for a dynamic VHD whose end footer is damaged, at offset 0) is VHD; anything else
 * is UnknownFormatError, which dataRangesForFile turns into "raw: read the whole file".
 */
import { AbortedError } from '../../common/errors.ts'
import { DiskIoError, FormatError, ReadOutOfRangeError, UnknownFormatError } from './errors.ts'
import { hasAscii } from './bytes.ts'
import { FileReader, readChecked } from './reader.ts'
import type { ByteReader } from './reader.ts'
import type { ByteRange } from './ranges.ts'
import { parseVhd, vhdChecksum, VHD_DISK_TYPE, VHD_FOOTER_SIZE } from './vhd.ts'
import { parseVhdx } from './vhdx.ts'
import type { DiskFormat, DiskInfo, ParseOptions, ParsedDisk } from './types.ts'

interface Sniffed {
  format: DiskFormat
  /**
   * Both signatures present: "vhdxfile" at 0 and a VHD footer at the end. One of them is guest
   * data (a fixed VHD whose disk holds a raw VHDX, or a VHDX whose last block ends like a VHD).
   */
  ambiguous: boolean
}

async function sniff (reader: ByteReader, signal: AbortSignal | undefined): Promise<Sniffed> {
  const size = reader.size
  const head = size >= 8 ? await readChecked(reader, 0, 8, signal) : new Uint8Array(0)
  const tail = size >= VHD_FOOTER_SIZE ? await readChecked(reader, size - VHD_FOOTER_SIZE, VHD_FOOTER_SIZE, signal) : new Uint8Array(0)
  const vhdxAtHead = hasAscii(head, 0, 'vhdxfile')
  const vhdAtTail = hasAscii(tail, 0, 'conectix')
  if (vhdxAtHead && vhdAtTail) {
    // A checksummed fixed-VHD footer that sizes the file exactly is no accident: it is a fixed VHD
    // (and a fixed VHD is scanned whole anyway).
    const v = new DataView(tail.buffer, tail.byteOffset, tail.byteLength)
    const fixedExact = v.getUint32(64) === vhdChecksum(tail, 64) && v.getUint32(60) === VHD_DISK_TYPE.fixed &&
      v.getBigUint64(48) === BigInt(size - VHD_FOOTER_SIZE)
    return { format: fixedExact ? 'vhd' : 'vhdx', ambiguous: !fixedExact }
  }
  if (vhdxAtHead) return { format: 'vhdx', ambiguous: false }
  if (vhdAtTail) return { format: 'vhd', ambiguous: false }
  if (size >= 2 * VHD_FOOTER_SIZE && hasAscii(head, 0, 'conectix')) return { format: 'vhd', ambiguous: false }
  throw new UnknownFormatError()
}

/** Which format the signatures say, without validating anything else. */
export async function detectFormat (reader: ByteReader, opts: ParseOptions = {}): Promise<DiskFormat> {
  return (await sniff(reader, opts.signal)).format
}

/** Detects and parses the image behind `reader`. */
export async function parseDisk (reader: ByteReader, opts: ParseOptions = {}): Promise<ParsedDisk> {
  const { format, ambiguous } = await sniff(reader, opts.signal)
  const parsed = format === 'vhdx' ? await parseVhdx(reader, opts) : await parseVhd(reader, opts)
  if (ambiguous) {
    // Skipping ranges on a misidentified file could drop guest data: read it all.
    parsed.warnings.push('file also ends with a VHD footer; scanning the whole file')
    parsed.scanRanges = reader.size > 0 ? [{ offset: 0, length: reader.size }] : []
    parsed.scanBytes = reader.size
  }
  return parsed
}

/** Adds the path to a FormatError (property and message) so the CLI can print it as is. */
function withFile<E> (err: E, path: string): E {
  if (err instanceof FormatError && err.file === undefined) {
    err.file = path
    if (!(err instanceof DiskIoError)) err.message = `${path}: ${err.message}`
  }
  return err
}

/**
 * Opens `path`, detects VHD or VHDX and validates it. Rejects with a FormatError subclass naming
 * what is wrong (UnknownFormatError for neither format, DiskIoError when it cannot be read) or
 * AbortedError.
 */
export async function openDisk (path: string, opts: ParseOptions = {}): Promise<DiskInfo> {
  const reader = await FileReader.open(path)
  try {
    const parsed = await parseDisk(reader, opts)
    return { file: path, ...parsed }
  } catch (err) {
    throw withFile(err, path)
  } finally {
    await reader.close().catch(() => {})
  }
}

/**
 * The file byte ranges a change scan must read (sorted, disjoint); bytes outside them may be
 * treated as zeros. Whole file for VHD; for VHDX only what a VHDX reader can reach, unless a log
 * replay is pending. Returns a fresh array the caller may keep or modify.
 */
export function dataRanges (info: DiskInfo): ByteRange[] {
  return info.scanRanges.map(r => ({ offset: r.offset, length: r.length }))
}

export interface FileRanges {
  /** 'raw' when the file is neither VHD nor VHDX, or is damaged. */
  format: DiskFormat | 'raw'
  fileSize: number
  ranges: ByteRange[]
  /** The parsed image, when it parsed. */
  info: DiskInfo | null
  /** Why the file is scanned whole: UnknownFormatError, or the damage found in a VHD/VHDX. */
  error: FormatError | null
}

/**
 * Ranges to scan for any file: dataRanges of a valid VHD/VHDX, otherwise the whole file. A
 * damaged image is also scanned whole (the replica is a byte copy, so copying the damage is the
 * faithful thing to do) and the damage is reported in `error`. I/O errors, a file that shrinks
 * while being parsed, and aborts are thrown.
 */
export async function dataRangesForFile (path: string, opts: ParseOptions = {}): Promise<FileRanges> {
  const reader = await FileReader.open(path)
  try {
    const parsed = await parseDisk(reader, opts)
    const info: DiskInfo = { file: path, ...parsed }
    return { format: info.format, fileSize: info.fileSize, ranges: dataRanges(info), info, error: null }
  } catch (err) {
    if (err instanceof AbortedError || err instanceof DiskIoError || err instanceof ReadOutOfRangeError || !(err instanceof FormatError)) {
      throw withFile(err, path)
    }
    const size = reader.size
    return { format: 'raw', fileSize: size, ranges: size > 0 ? [{ offset: 0, length: size }] : [], info: null, error: withFile(err, path) }
  } finally {
    await reader.close().catch(() => {})
  }
}
