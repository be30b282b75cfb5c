/**
 * VHD (Virtual PC / Hyper-V v1) reader. Flow: footer at the last 512 bytes (falling back to the
 * copy at offset 0 when the end one is damaged and the copy describes a dynamic disk) → for
 * dynamic and differencing disks, the dynamic header at the footer's data offset → the BAT, read
 * in 1 MiB pieces, every allocated entry bounds-checked → for differencing disks, the parent name
 * and locators. All multi-byte fields are big-endian; nothing is trusted until checked against the
 * file size, so a hostile file yields a typed FormatError, never a huge allocation.
 */
import {
  VhdBadBlockSizeError, VhdBadChecksumError, VhdBadCookieError, VhdBadDynamicHeaderCookieError,
  VhdBadParentLocatorError, VhdBatTooSmallError, VhdOffsetOutOfRangeError, VhdSizeOutOfRangeError,
  VhdTruncatedError, VhdUnsupportedDiskTypeError, VhdUnsupportedVersionError
} from './errors.ts'
import type { FormatError } from './errors.ts'
import { MAX_SAFE, asciiField, decodeUtf16, decodeUtf8, hasAscii, isPowerOfTwo, uuidRaw, view } from './bytes.ts'
import { readChecked } from './reader.ts'
import type { ByteReader } from './reader.ts'
import type { DiskSubformat, ParentLocator, ParseOptions, ParsedDisk, VhdDetails } from './types.ts'

export const VHD_FOOTER_SIZE = 512
export const VHD_DYNAMIC_HEADER_SIZE = 1024
const VHD_COOKIE = 'conectix'
const VHD_DYNAMIC_COOKIE = 'cxsparse'
const BAT_UNUSED = 0xffffffff
/** BAT entries read per I/O (1 MiB). */
const BAT_CHUNK_ENTRIES = 256 * 1024
/** Longest parent locator payload accepted (a path; Windows paths are far shorter). */
const MAX_LOCATOR_BYTES = 64 * 1024
/** Seconds from the Unix epoch to 2000-01-01T00:00:00Z, the VHD timestamp origin. */
const VHD_EPOCH_SECONDS = 946684800

export const VHD_DISK_TYPE = { fixed: 2, dynamic: 3, differencing: 4 } as const

/** One's-complement of the byte sum, skipping the 4-byte checksum field at `skipAt`. */
export function vhdChecksum (bytes: Uint8Array, skipAt: number): number {
  let sum = 0
  for (let i = 0; i < bytes.length; i++) {
    if (i >= skipAt && i < skipAt + 4) continue
    sum += bytes[i] as number
  }
  return ~sum >>> 0
}

interface Footer {
  features: number
  version: number
  dataOffset: bigint
  timestamp: number
  creatorApp: string
  creatorVersion: number
  creatorHostOs: string
  originalSize: bigint
  currentSize: bigint
  cylinders: number
  heads: number
  sectorsPerTrack: number
  diskType: number
  uniqueId: string
  savedState: boolean
}

/** Validates cookie and checksum of a 512-byte footer; returns the error instead of throwing. */
function checkFooter (bytes: Uint8Array, structure: string): FormatError | null {
  if (!hasAscii(bytes, 0, VHD_COOKIE)) return new VhdBadCookieError(structure)
  const stored = view(bytes).getUint32(64)
  const computed = vhdChecksum(bytes, 64)
  if (stored !== computed) return new VhdBadChecksumError(structure, stored, computed)
  return null
}

function decodeFooter (bytes: Uint8Array): Footer {
  const v = view(bytes)
  return {
    features: v.getUint32(8),
    version: v.getUint32(12),
    dataOffset: v.getBigUint64(16),
    timestamp: v.getUint32(24),
    creatorApp: asciiField(bytes, 28, 4),
    creatorVersion: v.getUint32(32),
    creatorHostOs: asciiField(bytes, 36, 4),
    originalSize: v.getBigUint64(40),
    currentSize: v.getBigUint64(48),
    cylinders: v.getUint16(56),
    heads: v.getUint8(58),
    sectorsPerTrack: v.getUint8(59),
    diskType: v.getUint32(60),
    uniqueId: uuidRaw(bytes, 68),
    savedState: bytes[84] === 1
  }
}

/** Reads and validates a VHD of any kind from `reader`. */
export async function parseVhd (reader: ByteReader, opts: ParseOptions = {}): Promise<ParsedDisk> {
  const { signal } = opts
  const size = reader.size
  const warnings: string[] = []
  if (size < VHD_FOOTER_SIZE) throw new VhdTruncatedError(`${size} bytes is smaller than a footer`)
  // The data area is everything before the end footer; no structure may reach into it.
  const dataEnd = size - VHD_FOOTER_SIZE

  const endBytes = await readChecked(reader, dataEnd, VHD_FOOTER_SIZE, signal)
  const endError = checkFooter(endBytes, 'footer')
  let footerBytes = endBytes
  let footerSource: 'end' | 'copy' = 'end'
  if (endError !== null) {
    // A dynamic disk keeps a footer copy at offset 0 precisely for this case.
    if (size < 2 * VHD_FOOTER_SIZE) throw endError
    const copy = await readChecked(reader, 0, VHD_FOOTER_SIZE, signal)
    const copyType = view(copy).getUint32(60)
    if (checkFooter(copy, 'footer copy') !== null ||
        (copyType !== VHD_DISK_TYPE.dynamic && copyType !== VHD_DISK_TYPE.differencing)) throw endError
    footerBytes = copy
    footerSource = 'copy'
    warnings.push(`footer at end damaged (${endError.code}); used the copy at offset 0`)
  }
  const footer = decodeFooter(footerBytes)
  if (footer.version >>> 16 !== 1) throw new VhdUnsupportedVersionError('footer', footer.version)
  if (footer.currentSize > MAX_SAFE) throw new VhdSizeOutOfRangeError('current size', footer.currentSize)
  const virtualSize = Number(footer.currentSize)

  let subformat: DiskSubformat
  switch (footer.diskType) {
    case VHD_DISK_TYPE.fixed: subformat = 'fixed'; break
    case VHD_DISK_TYPE.dynamic: subformat = 'dynamic'; break
    case VHD_DISK_TYPE.differencing: subformat = 'differencing'; break
    default: throw new VhdUnsupportedDiskTypeError(footer.diskType)
  }

  const details: VhdDetails = {
    footerSource,
    creatorApp: footer.creatorApp,
    creatorVersion: footer.creatorVersion,
    creatorHostOs: footer.creatorHostOs,
    timestamp: new Date((VHD_EPOCH_SECONDS + footer.timestamp) * 1000).toISOString(),
    uniqueId: footer.uniqueId,
    savedState: footer.savedState,
    originalSize: footer.originalSize > MAX_SAFE ? Number.MAX_SAFE_INTEGER : Number(footer.originalSize),
    geometry: { cylinders: footer.cylinders, heads: footer.heads, sectorsPerTrack: footer.sectorsPerTrack },
    dynamicHeaderOffset: null,
    batOffset: null,
    maxTableEntries: null,
    parentUniqueId: null
  }
  const base = {
    format: 'vhd' as const,
    subformat,
    virtualSize,
    fileSize: size,
    logPending: false,
    logicalSectorSize: 512,
    physicalSectorSize: 512,
    // The replica is a byte copy and VHD has no "zero" block state worth skipping: scan it all.
    scanBytes: size,
    scanRanges: size > 0 ? [{ offset: 0, length: size }] : [],
    warnings,
    vhd: details
  }

  if (subformat === 'fixed') {
    if (virtualSize > dataEnd) throw new VhdTruncatedError(`fixed disk of ${virtualSize} bytes in a ${size}-byte file`)
    return { ...base, blockSize: 0, allocatedBlocks: 0, totalBlocks: 0, parent: null, parentLocators: [] }
  }

  if (footerSource === 'end' && size >= 2 * VHD_FOOTER_SIZE) {
    const copy = await readChecked(reader, 0, VHD_FOOTER_SIZE, signal)
    if (checkFooter(copy, 'footer copy') !== null) warnings.push('footer copy at offset 0 is damaged')
    else if (!sameBytes(copy, endBytes)) warnings.push('footer copy at offset 0 differs from the footer')
  }

  // ---- dynamic header
  if (footer.dataOffset > MAX_SAFE) throw new VhdOffsetOutOfRangeError('dynamic header', Number.MAX_SAFE_INTEGER, VHD_DYNAMIC_HEADER_SIZE, dataEnd)
  const headerOffset = Number(footer.dataOffset)
  if (headerOffset < VHD_FOOTER_SIZE || headerOffset + VHD_DYNAMIC_HEADER_SIZE > dataEnd) {
    throw new VhdOffsetOutOfRangeError('dynamic header', headerOffset, VHD_DYNAMIC_HEADER_SIZE, dataEnd)
  }
  const hdr = await readChecked(reader, headerOffset, VHD_DYNAMIC_HEADER_SIZE, signal)
  if (!hasAscii(hdr, 0, VHD_DYNAMIC_COOKIE)) throw new VhdBadDynamicHeaderCookieError()
  const hv = view(hdr)
  const storedSum = hv.getUint32(36)
  const computedSum = vhdChecksum(hdr, 36)
  if (storedSum !== computedSum) throw new VhdBadChecksumError('dynamic header', storedSum, computedSum)
  const headerVersion = hv.getUint32(24)
  if (headerVersion >>> 16 !== 1) throw new VhdUnsupportedVersionError('dynamic header', headerVersion)
  const tableOffsetBig = hv.getBigUint64(16)
  const maxTableEntries = hv.getUint32(28)
  const blockSize = hv.getUint32(32)
  if (!isPowerOfTwo(blockSize) || blockSize < 512) throw new VhdBadBlockSizeError(blockSize)
  if (maxTableEntries * blockSize < virtualSize) throw new VhdBatTooSmallError(maxTableEntries, blockSize, virtualSize)
  const batBytes = maxTableEntries * 4
  if (tableOffsetBig > MAX_SAFE) throw new VhdOffsetOutOfRangeError('BAT', Number.MAX_SAFE_INTEGER, batBytes, dataEnd)
  const tableOffset = Number(tableOffsetBig)
  if (tableOffset < VHD_FOOTER_SIZE || tableOffset + batBytes > dataEnd) {
    throw new VhdOffsetOutOfRangeError('BAT', tableOffset, batBytes, dataEnd)
  }
  details.dynamicHeaderOffset = headerOffset
  details.batOffset = tableOffset
  details.maxTableEntries = maxTableEntries

  // ---- BAT: each allocated block is a sector bitmap (padded to 512 bytes) followed by the data.
  const totalBlocks = Math.ceil(virtualSize / blockSize)
  const bitmapSize = Math.ceil(blockSize / 512 / 8 / 512) * 512
  let allocatedBlocks = 0
  for (let first = 0; first < maxTableEntries; first += BAT_CHUNK_ENTRIES) {
    const count = Math.min(BAT_CHUNK_ENTRIES, maxTableEntries - first)
    const chunk = view(await readChecked(reader, tableOffset + first * 4, count * 4, signal))
    for (let j = 0; j < count; j++) {
      const sector = chunk.getUint32(j * 4)
      if (sector === BAT_UNUSED) continue
      const start = sector * 512
      if (start < VHD_FOOTER_SIZE || start + bitmapSize + blockSize > dataEnd) {
        throw new VhdOffsetOutOfRangeError(`BAT entry ${first + j}`, start, bitmapSize + blockSize, dataEnd)
      }
      if (first + j < totalBlocks) allocatedBlocks++
    }
  }

  let parent: string | null = null
  const parentLocators: ParentLocator[] = []
  if (subformat === 'differencing') {
    details.parentUniqueId = uuidRaw(hdr, 40)
    const name = decodeUtf16(hdr.subarray(64, 576), true)
    if (name === null) throw new VhdBadParentLocatorError('parent unicode name is not valid UTF-16')
    for (let i = 0; i < 8; i++) {
      const e = 576 + i * 24
      const code = hv.getUint32(e)
      if (code === 0) continue
      const kind = asciiField(hdr, e, 4)
      const dataLength = hv.getUint32(e + 8)
      const dataOffsetBig = hv.getBigUint64(e + 16)
      if (dataLength === 0) continue
      if (dataLength > MAX_LOCATOR_BYTES) throw new VhdBadParentLocatorError(`entry ${i} (${kind}) is ${dataLength} bytes`)
      const dataOffset = dataOffsetBig > MAX_SAFE ? Number.MAX_SAFE_INTEGER : Number(dataOffsetBig)
      if (dataOffset < VHD_FOOTER_SIZE || dataOffset + dataLength > dataEnd) {
        throw new VhdOffsetOutOfRangeError(`parent locator ${i}`, dataOffset, dataLength, dataEnd)
      }
      const data = await readChecked(reader, dataOffset, dataLength, signal)
      let path: string | null
      if (kind === 'W2ku' || kind === 'W2ru') path = decodeUtf16(data, false)
      else if (kind === 'MacX') path = decodeUtf8(data)
      else continue // Wi2r/Wi2k/Mac: deprecated encodings nobody writes any more
      if (path === null) throw new VhdBadParentLocatorError(`entry ${i} (${kind}) is not valid text`)
      parentLocators.push({ kind, path })
    }
    const pick = (k: string): string | undefined => parentLocators.find(l => l.kind === k)?.path
    parent = pick('W2ku') ?? pick('W2ru') ?? pick('MacX') ?? (name !== '' ? name : null)
  }

  return { ...base, blockSize, allocatedBlocks, totalBlocks, parent, parentLocators }
}

function sameBytes (a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}
