/**
 * The VHDX metadata region: a 64 KiB table ("metadata", up to 2047 entries of 32 bytes) whose
 * entries point at items inside the region. We read the five system items every VHDX must have
 * and, for differencing disks, the parent locator (UTF-16LE key/value pairs). Offsets are relative
 * to the region start and checked against the region length before any read.
 */
import {
  VhdxBadBlockSizeError, VhdxBadMetadataError, VhdxBadParentLocatorError, VhdxBadSectorSizeError,
  VhdxBadSignatureError, VhdxBadVirtualSizeError, VhdxMissingMetadataError, VhdxOffsetOutOfRangeError,
  VhdxTooManyEntriesError, VhdxUnknownRequiredMetadataError
} from './errors.ts'
import { decodeUtf16, hasAscii, isPowerOfTwo, msGuid, view } from './bytes.ts'
import { readChecked } from './reader.ts'
import type { ByteReader } from './reader.ts'

const KiB = 1024
const MiB = 1024 * KiB
export const METADATA_TABLE_SIZE = 64 * KiB
export const MAX_TABLE_ENTRIES = 2047
/** Items start after the table; the spec caps each at 1 MiB. */
const MIN_ITEM_OFFSET = 64 * KiB
const MAX_ITEM_LENGTH = 1 * MiB
export const MAX_VIRTUAL_SIZE = 64n * 1024n ** 4n

export const METADATA_GUIDS = {
  fileParameters: 'caa16737-fa36-4d43-b3b6-33f0aa44e76b',
  virtualDiskSize: '2fa54224-cd1b-4876-b211-5dbed83bf4b8',
  page83: 'beca12ab-b2e6-4523-93ef-c309e000c746',
  logicalSectorSize: '8141bf1d-a96f-4709-ba47-f233a8faab5f',
  physicalSectorSize: 'cda348c7-445d-4471-9cc9-e9885251c556',
  parentLocator: 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c'
} as const
export const VHDX_PARENT_LOCATOR_TYPE = 'b04aefb7-d19e-4a81-b789-25b8e9445913'

type ItemName = keyof typeof METADATA_GUIDS
const NAME_BY_GUID = new Map<string, ItemName>(
  (Object.entries(METADATA_GUIDS) as Array<[ItemName, string]>).map(([k, v]) => [v, k]))
/** Exact lengths of the fixed-size items (the parent locator is variable). */
const ITEM_LENGTH: Partial<Record<ItemName, number>> = {
  fileParameters: 8, virtualDiskSize: 8, page83: 16, logicalSectorSize: 4, physicalSectorSize: 4
}

export interface VhdxMetadata {
  blockSize: number
  leaveBlocksAllocated: boolean
  hasParent: boolean
  virtualSize: number
  logicalSectorSize: number
  physicalSectorSize: number
  page83: string
  /** Differencing only: key → value of the parent locator. */
  parentLocator: Map<string, string> | null
}

/** Reads the metadata region at [offset, offset+length) of the file. */
export async function readMetadata (reader: ByteReader, offset: number, length: number, signal?: AbortSignal): Promise<VhdxMetadata> {
  if (length < METADATA_TABLE_SIZE) throw new VhdxOffsetOutOfRangeError('metadata table', 0, METADATA_TABLE_SIZE, length)
  const table = await readChecked(reader, offset, METADATA_TABLE_SIZE, signal)
  if (!hasAscii(table, 0, 'metadata')) throw new VhdxBadSignatureError('metadata table')
  const tv = view(table)
  const count = tv.getUint16(10, true)
  if (count > MAX_TABLE_ENTRIES) throw new VhdxTooManyEntriesError('metadata table', count)

  const found = new Map<ItemName, { offset: number, length: number }>()
  const seenUser = new Set<string>()
  for (let i = 0; i < count; i++) {
    const e = 32 + i * 32
    const guid = msGuid(table, e)
    const itemOffset = tv.getUint32(e + 16, true)
    const itemLength = tv.getUint32(e + 20, true)
    const flags = tv.getUint32(e + 24, true)
    const isUser = (flags & 1) !== 0
    const isRequired = (flags & 4) !== 0
    const label = NAME_BY_GUID.get(guid) ?? guid
    if (itemLength === 0) {
      if (itemOffset !== 0) throw new VhdxBadMetadataError(label, 'empty item with a non-zero offset')
    } else {
      if (itemLength > MAX_ITEM_LENGTH) throw new VhdxBadMetadataError(label, `length ${itemLength} over 1 MiB`)
      if (itemOffset < MIN_ITEM_OFFSET || itemOffset + itemLength > length) {
        throw new VhdxOffsetOutOfRangeError(`metadata item ${label}`, itemOffset, itemLength, length)
      }
    }
    const name = isUser ? undefined : NAME_BY_GUID.get(guid)
    if (name === undefined) {
      if (isRequired) throw new VhdxUnknownRequiredMetadataError(guid)
      const key = `${isUser ? 'u' : 's'}:${guid}`
      if (seenUser.has(key)) throw new VhdxBadMetadataError(guid, 'listed twice')
      seenUser.add(key)
      continue
    }
    if (found.has(name)) throw new VhdxBadMetadataError(name, 'listed twice')
    const want = ITEM_LENGTH[name]
    if (want !== undefined && itemLength !== want) throw new VhdxBadMetadataError(name, `length ${itemLength}, expected ${want}`)
    found.set(name, { offset: itemOffset, length: itemLength })
  }

  const item = async (name: ItemName): Promise<Uint8Array> => {
    const loc = found.get(name)
    if (loc === undefined) throw new VhdxMissingMetadataError(name)
    return await readChecked(reader, offset + loc.offset, loc.length, signal)
  }

  const fp = view(await item('fileParameters'))
  const blockSize = fp.getUint32(0, true)
  const fpFlags = fp.getUint32(4, true)
  if (!isPowerOfTwo(blockSize) || blockSize < 1 * MiB || blockSize > 256 * MiB) throw new VhdxBadBlockSizeError(blockSize)

  const logicalSectorSize = view(await item('logicalSectorSize')).getUint32(0, true)
  if (logicalSectorSize !== 512 && logicalSectorSize !== 4096) throw new VhdxBadSectorSizeError('logical sector size', logicalSectorSize)
  const physicalSectorSize = view(await item('physicalSectorSize')).getUint32(0, true)
  if (physicalSectorSize !== 512 && physicalSectorSize !== 4096) throw new VhdxBadSectorSizeError('physical sector size', physicalSectorSize)

  const vsize = view(await item('virtualDiskSize')).getBigUint64(0, true)
  if (vsize > MAX_VIRTUAL_SIZE || vsize % BigInt(logicalSectorSize) !== 0n) throw new VhdxBadVirtualSizeError(vsize)

  const page83 = msGuid(await item('page83'), 0)
  const hasParent = (fpFlags & 2) !== 0
  const parentLocator = hasParent ? parseParentLocator(await item('parentLocator')) : null

  return {
    blockSize,
    leaveBlocksAllocated: (fpFlags & 1) !== 0,
    hasParent,
    virtualSize: Number(vsize),
    logicalSectorSize,
    physicalSectorSize,
    page83,
    parentLocator
  }
}

/** Parent locator item: header (type GUID, count) then 12-byte entries pointing into the item. */
export function parseParentLocator (bytes: Uint8Array): Map<string, string> {
  if (bytes.length < 20) throw new VhdxBadParentLocatorError(`item is ${bytes.length} bytes`)
  const type = msGuid(bytes, 0)
  if (type !== VHDX_PARENT_LOCATOR_TYPE) throw new VhdxBadParentLocatorError(`unknown locator type ${type}`)
  const v = view(bytes)
  const count = v.getUint16(18, true)
  if (20 + count * 12 > bytes.length) throw new VhdxBadParentLocatorError(`${count} entries do not fit in ${bytes.length} bytes`)
  const out = new Map<string, string>()
  const text = (off: number, len: number, what: string): string => {
    if (len === 0 || off + len > bytes.length) throw new VhdxBadParentLocatorError(`${what} of ${len} bytes at ${off} outside the item`)
    const s = decodeUtf16(bytes.subarray(off, off + len), false)
    if (s === null) throw new VhdxBadParentLocatorError(`${what} is not valid UTF-16`)
    return s
  }
  for (let i = 0; i < count; i++) {
    const e = 20 + i * 12
    const key = text(v.getUint32(e, true), v.getUint16(e + 8, true), `key ${i}`)
    const value = text(v.getUint32(e + 4, true), v.getUint16(e + 10, true), `value ${i}`)
    if (out.has(key)) throw new VhdxBadParentLocatorError(`key ${key} listed twice`)
    out.set(key, value)
  }
  if (!out.has('parent_linkage')) throw new VhdxBadParentLocatorError('parent_linkage missing')
  return out
}
