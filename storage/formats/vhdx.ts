/**
 * VHDX reader (MS-VHDX). Flow: file identifier "vhdxfile" at 0 → the two 4 KiB headers at 64 KiB
 * and 128 KiB (CRC-32C; the valid one with the higher sequence number is current; a non-zero
 * LogGuid means a log replay is pending, which we report and do not perform) → the region tables
 * at 192 KiB and 256 KiB (the first valid one is used) → the metadata region (block size, sizes,
 * parent locator) → the BAT, streamed. Everything is little-endian; every offset is checked
 * against the file size and every checksum verified before a field is used.
 *
 * Scan ranges: a change scan must read every byte a VHDX reader could read — the 1 MiB header
 * section, the log, every region and every present payload / sector bitmap block. Other bytes
 * (space of blocks in ZERO/UNMAPPED/NOT_PRESENT state, slack) are never read by any VHDX reader,
 * so the replica may hold zeros there. With a pending log the BAT on disk is not the whole truth
 * (replay may point blocks at bytes we would skip), so then the whole file is scanned.
 */
import {
  VhdxBadAlignmentError, VhdxBadChecksumError, VhdxBadSignatureError, VhdxBatTooSmallError, VhdxDuplicateRegionError,
  VhdxHeaderSequenceConflictError, VhdxMissingRegionError, VhdxNoValidHeaderError,
  VhdxOffsetOutOfRangeError, VhdxRegionOverlapError, VhdxTooManyEntriesError, VhdxTruncatedError,
  VhdxUnknownRequiredRegionError, VhdxUnsupportedVersionError
} from './errors.ts'
import type { FormatError } from './errors.ts'
import { MAX_SAFE, decodeUtf16, hasAscii, isAllZero, msGuid, view } from './bytes.ts'
import { crc32c } from './crc32c.ts'
import { mergeRanges, rangesFromStarts, totalLength } from './ranges.ts'
import type { ByteRange } from './ranges.ts'
import { readChecked } from './reader.ts'
import type { ByteReader } from './reader.ts'
import { scanBat } from './vhdx-bat.ts'
import type { Extent } from './vhdx-bat.ts'
import { MAX_TABLE_ENTRIES, readMetadata } from './vhdx-metadata.ts'
import type { DiskSubformat, ParentLocator, ParseOptions, ParsedDisk, VhdxDetails } from './types.ts'

const KiB = 1024
const MiB = 1024 * KiB
export const VHDX_HEADER_OFFSETS = [64 * KiB, 128 * KiB] as const
export const VHDX_REGION_TABLE_OFFSETS = [192 * KiB, 256 * KiB] as const
export const VHDX_HEADER_SIZE = 4 * KiB
export const VHDX_REGION_TABLE_SIZE = 64 * KiB
/** The header section (file identifier, headers, region tables, reserved) is the first 1 MiB. */
export const VHDX_HEADER_SECTION = 1 * MiB
export const REGION_GUIDS = {
  bat: '2dc27766-f623-4200-9d64-115e9bfd4a08',
  metadata: '8b7ca206-4790-4b9a-b8fe-575f050f886e'
} as const
/**
 * Above this many BAT entries (128 MiB of BAT) we do not keep block offsets for scan ranges and
 * scan the whole file instead: still correct, and memory stays bounded.
 */
const MAX_COLLECTED_ENTRIES = 16 * 1024 * 1024

interface Header {
  sequence: bigint
  fileWriteGuid: string
  dataWriteGuid: string
  logGuid: string
  logPending: boolean
  logVersion: number
  version: number
  logLength: number
  logOffset: bigint
  bytes: Uint8Array
}

/** CRC-32C of a structure whose checksum lives at bytes 4..8, computed as if those were zero. */
export function vhdxChecksum (bytes: Uint8Array): number {
  return crc32c(bytes, 0, [4, 8])
}

function checkCrc (bytes: Uint8Array): { stored: number, computed: number } {
  return { stored: view(bytes).getUint32(4, true), computed: vhdxChecksum(bytes) }
}

function decodeHeader (bytes: Uint8Array): Header | null {
  if (!hasAscii(bytes, 0, 'head')) return null
  const { stored, computed } = checkCrc(bytes)
  if (stored !== computed) return null
  const v = view(bytes)
  return {
    sequence: v.getBigUint64(8, true),
    fileWriteGuid: msGuid(bytes, 16),
    dataWriteGuid: msGuid(bytes, 32),
    logGuid: msGuid(bytes, 48),
    logPending: !isAllZero(bytes.subarray(48, 64)),
    logVersion: v.getUint16(64, true),
    version: v.getUint16(66, true),
    logLength: v.getUint32(68, true),
    logOffset: v.getBigUint64(72, true),
    bytes
  }
}

interface Region { guid: string, offset: number, offsetBig: bigint, length: number, required: boolean }

/** Validates one region table; returns its entries or the error describing why it is unusable. */
function decodeRegionTable (bytes: Uint8Array, which: string): Region[] | FormatError {
  if (!hasAscii(bytes, 0, 'regi')) return new VhdxBadSignatureError(which)
  const { stored, computed } = checkCrc(bytes)
  if (stored !== computed) return new VhdxBadChecksumError(which, stored, computed)
  const v = view(bytes)
  const count = v.getUint32(8, true)
  if (count > MAX_TABLE_ENTRIES) return new VhdxTooManyEntriesError(which, count)
  const regions: Region[] = []
  for (let i = 0; i < count; i++) {
    const e = 16 + i * 32
    const offset = v.getBigUint64(e + 16, true)
    regions.push({
      guid: msGuid(bytes, e),
      offset: offset > MAX_SAFE ? Number.MAX_SAFE_INTEGER : Number(offset),
      offsetBig: offset,
      length: v.getUint32(e + 24, true),
      required: (v.getUint32(e + 28, true) & 1) !== 0
    })
  }
  return regions
}

function sameBytes (a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** Reads and validates a VHDX from `reader`. */
export async function parseVhdx (reader: ByteReader, opts: ParseOptions = {}): Promise<ParsedDisk> {
  const { signal } = opts
  const size = reader.size
  const warnings: string[] = []
  if (size < VHDX_HEADER_SECTION) throw new VhdxTruncatedError(`${size} bytes is smaller than the 1 MiB header section`)

  // ---- file identifier
  const ident = await readChecked(reader, 0, 8 + 512, signal)
  if (!hasAscii(ident, 0, 'vhdxfile')) throw new VhdxBadSignatureError('file identifier')
  const creator = decodeUtf16(ident.subarray(8), false) ?? ''

  // ---- headers
  const h1 = decodeHeader(await readChecked(reader, VHDX_HEADER_OFFSETS[0], VHDX_HEADER_SIZE, signal))
  const h2 = decodeHeader(await readChecked(reader, VHDX_HEADER_OFFSETS[1], VHDX_HEADER_SIZE, signal))
  let header: Header
  let currentHeader: 1 | 2
  if (h1 === null && h2 === null) throw new VhdxNoValidHeaderError()
  if (h1 !== null && h2 !== null) {
    if (h1.sequence > h2.sequence) { header = h1; currentHeader = 1 } else if (h2.sequence > h1.sequence) { header = h2; currentHeader = 2 } else {
      // Some tools (Disk2VHD) write two identical headers; identical is fine, different is not.
      if (!sameBytes(h1.bytes, h2.bytes)) throw new VhdxHeaderSequenceConflictError(h1.sequence)
      header = h1; currentHeader = 1
    }
  } else if (h1 !== null) {
    header = h1; currentHeader = 1
    warnings.push('header 2 (at 128 KiB) is invalid; using header 1')
  } else {
    header = h2 as Header; currentHeader = 2
    warnings.push('header 1 (at 64 KiB) is invalid; using header 2')
  }
  if (header.version !== 1) throw new VhdxUnsupportedVersionError('version', header.version)
  if (header.logVersion !== 0) throw new VhdxUnsupportedVersionError('log version', header.logVersion)
  if (header.logOffset % BigInt(MiB) !== 0n) throw new VhdxBadAlignmentError('log offset', header.logOffset)
  if (header.logLength % MiB !== 0) throw new VhdxBadAlignmentError('log length', header.logLength)
  const logOffset = header.logOffset > MAX_SAFE ? Number.MAX_SAFE_INTEGER : Number(header.logOffset)
  const logLength = header.logLength
  if (logLength > 0 && (logOffset < VHDX_HEADER_SECTION || logOffset + logLength > size)) {
    throw new VhdxOffsetOutOfRangeError('log', header.logOffset, logLength, size)
  }

  // ---- region tables
  const rt1 = decodeRegionTable(await readChecked(reader, VHDX_REGION_TABLE_OFFSETS[0], VHDX_REGION_TABLE_SIZE, signal), 'region table 1')
  const rt2 = decodeRegionTable(await readChecked(reader, VHDX_REGION_TABLE_OFFSETS[1], VHDX_REGION_TABLE_SIZE, signal), 'region table 2')
  let regions: Region[]
  let regionTable: 1 | 2
  if (Array.isArray(rt1)) {
    regions = rt1; regionTable = 1
    if (!Array.isArray(rt2)) warnings.push(`region table 2 is unusable (${rt2.code})`)
  } else if (Array.isArray(rt2)) {
    regions = rt2; regionTable = 2
    warnings.push(`region table 1 is unusable (${rt1.code}); using region table 2`)
  } else {
    throw rt1
  }

  const extents: Extent[] = [{ name: 'header section', offset: 0, length: VHDX_HEADER_SECTION }]
  if (logLength > 0) extents.push({ name: 'log', offset: logOffset, length: logLength })
  let bat: Region | undefined
  let meta: Region | undefined
  for (const r of regions) {
    const name = r.guid === REGION_GUIDS.bat ? 'BAT' : r.guid === REGION_GUIDS.metadata ? 'metadata' : `region ${r.guid}`
    if (r.guid === REGION_GUIDS.bat) {
      if (bat !== undefined) throw new VhdxDuplicateRegionError('BAT')
      bat = r
    } else if (r.guid === REGION_GUIDS.metadata) {
      if (meta !== undefined) throw new VhdxDuplicateRegionError('metadata')
      meta = r
    } else if (r.required) {
      throw new VhdxUnknownRequiredRegionError(r.guid)
    }
    if (r.offsetBig < BigInt(VHDX_HEADER_SECTION) || r.offsetBig + BigInt(r.length) > BigInt(size)) {
      throw new VhdxOffsetOutOfRangeError(name, r.offsetBig, r.length, size)
    }
    if (r.offset % MiB !== 0) throw new VhdxBadAlignmentError(`${name} offset`, r.offset)
    if (r.length % MiB !== 0) throw new VhdxBadAlignmentError(`${name} length`, r.length)
    if (r.length > 0) extents.push({ name, offset: r.offset, length: r.length })
  }
  if (bat === undefined) throw new VhdxMissingRegionError('BAT')
  if (meta === undefined) throw new VhdxMissingRegionError('metadata')
  extents.sort((a, b) => a.offset - b.offset)
  for (let i = 1; i < extents.length; i++) {
    const prev = extents[i - 1] as Extent
    const cur = extents[i] as Extent
    if (cur.offset < prev.offset + prev.length) throw new VhdxRegionOverlapError(prev.name, cur.name)
  }

  // ---- metadata
  const md = await readMetadata(reader, meta.offset, meta.length, signal)
  const { blockSize, logicalSectorSize, virtualSize, hasParent } = md

  // ---- BAT geometry (MS-VHDX 2.5): chunkRatio payload entries, then one sector bitmap entry.
  const chunkRatio = (2 ** 23 * logicalSectorSize) / blockSize
  const dataBlocks = Math.ceil(virtualSize / blockSize)
  const bitmapBlocks = Math.ceil(dataBlocks / chunkRatio)
  const batEntries = hasParent
    ? bitmapBlocks * (chunkRatio + 1)
    : dataBlocks === 0 ? 0 : dataBlocks + Math.floor((dataBlocks - 1) / chunkRatio)
  if (batEntries * 8 > bat.length) throw new VhdxBatTooSmallError(batEntries * 8, bat.length)

  const collect = !header.logPending && batEntries <= MAX_COLLECTED_ENTRIES
  const scan = await scanBat(reader, {
    batOffset: bat.offset,
    entries: batEntries,
    chunkRatio,
    blockSize,
    virtualSize,
    dataBlocks,
    hasParent,
    fileSize: size,
    structures: extents,
    collect
  }, signal)

  let scanRanges: ByteRange[]
  if (!collect || scan.payloadStarts === null || scan.bitmapStarts === null) {
    scanRanges = [{ offset: 0, length: size }]
  } else {
    const parts: ByteRange[] = extents.map(e => ({ offset: e.offset, length: e.length }))
    // The other header's log region too, if it is valid: cheap, and safe if the two disagree.
    const other = currentHeader === 1 ? h2 : h1
    if (other !== null && other.logLength > 0 && other.logOffset <= MAX_SAFE) {
      parts.push({ offset: Number(other.logOffset), length: other.logLength })
    }
    parts.push(...rangesFromStarts(scan.payloadStarts, blockSize, size))
    parts.push(...rangesFromStarts(scan.bitmapStarts, MiB, size))
    scanRanges = mergeRanges(parts, size)
  }

  let subformat: DiskSubformat = 'dynamic'
  if (hasParent) subformat = 'differencing'
  else if (md.leaveBlocksAllocated) subformat = 'fixed'

  const parentLocators: ParentLocator[] = []
  let parent: string | null = null
  let parentLinkage: string | null = null
  if (md.parentLocator !== null) {
    for (const [kind, path] of md.parentLocator) parentLocators.push({ kind, path })
    parentLinkage = md.parentLocator.get('parent_linkage') ?? null
    parent = md.parentLocator.get('absolute_win32_path') ?? md.parentLocator.get('volume_path') ??
      md.parentLocator.get('relative_path') ?? null
  }

  const details: VhdxDetails = {
    creator,
    currentHeader,
    headerSequence: header.sequence.toString(),
    validHeaders: (h1 !== null ? 1 : 0) + (h2 !== null ? 1 : 0),
    regionTable,
    fileWriteGuid: header.fileWriteGuid,
    dataWriteGuid: header.dataWriteGuid,
    logGuid: header.logGuid,
    logOffset,
    logLength,
    batOffset: bat.offset,
    batLength: bat.length,
    batEntries,
    metadataOffset: meta.offset,
    metadataLength: meta.length,
    chunkRatio,
    leaveBlocksAllocated: md.leaveBlocksAllocated,
    hasParent,
    page83: md.page83,
    blockStates: scan.states,
    sectorBitmapBlocks: scan.sectorBitmapBlocks,
    parentLinkage
  }

  return {
    format: 'vhdx',
    subformat,
    virtualSize,
    fileSize: size,
    blockSize,
    allocatedBlocks: scan.allocatedBlocks,
    parent,
    logPending: header.logPending,
    totalBlocks: dataBlocks,
    logicalSectorSize,
    physicalSectorSize: md.physicalSectorSize,
    parentLocators,
    scanBytes: totalLength(scanRanges),
    scanRanges,
    warnings,
    vhdx: details
  }
}
