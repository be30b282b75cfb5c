/** What the format parsers report about a disk image. Plain data, JSON-safe. */
import type { ByteRange } from './ranges.ts'

export type { ByteRange } from './ranges.ts'

export type DiskFormat = 'vhd' | 'vhdx'
export type DiskSubformat = 'fixed' | 'dynamic' | 'differencing'

/** One way a differencing disk names its parent (VHD platform code or VHDX locator key). */
export interface ParentLocator {
  /** VHD: platform code ("W2ku", "W2ru", "MacX"); VHDX: key ("relative_path", ...). */
  kind: string
  path: string
}

export interface VhdDetails {
  /** Which footer was used: the one at the end, or the copy at offset 0 (end one damaged). */
  footerSource: 'end' | 'copy'
  creatorApp: string
  creatorVersion: number
  creatorHostOs: string
  /** Footer timestamp as ISO-8601 (seconds since 2000-01-01 UTC in the file). */
  timestamp: string
  uniqueId: string
  savedState: boolean
  originalSize: number
  geometry: { cylinders: number, heads: number, sectorsPerTrack: number }
  /** Dynamic/differencing only (null for fixed). */
  dynamicHeaderOffset: number | null
  batOffset: number | null
  maxTableEntries: number | null
  parentUniqueId: string | null
}

export interface VhdxBlockStates {
  notPresent: number
  undefined: number
  zero: number
  /** Includes the legacy value 5 of the v0.95 spec, which qemu still accepts. */
  unmapped: number
  fullyPresent: number
  partiallyPresent: number
}

export interface VhdxDetails {
  creator: string
  /** 1 (at 64 KiB) or 2 (at 128 KiB): the valid header with the higher sequence number. */
  currentHeader: 1 | 2
  /** Sequence number of the current header, as a decimal string (it is a uint64). */
  headerSequence: string
  validHeaders: number
  /** 1 (at 192 KiB) or 2 (at 256 KiB): the region table that was used. */
  regionTable: 1 | 2
  fileWriteGuid: string
  dataWriteGuid: string
  logGuid: string
  logOffset: number
  logLength: number
  batOffset: number
  batLength: number
  batEntries: number
  metadataOffset: number
  metadataLength: number
  chunkRatio: number
  leaveBlocksAllocated: boolean
  hasParent: boolean
  page83: string
  blockStates: VhdxBlockStates
  sectorBitmapBlocks: number
  /** Differencing only: the parent_linkage GUID the parent's DataWriteGuid must match. */
  parentLinkage: string | null
}

/**
 * The `vmesh inspect FILE --json` shape (a CLI contract, README "Command line") plus extras. `scanRanges` is kept out of
 * the inspect output; use dataRanges(info) to get it.
 */
export interface DiskInfo {
  file: string
  format: DiskFormat
  subformat: DiskSubformat
  virtualSize: number
  fileSize: number
  /** Payload block size; 0 for a fixed VHD, which has no blocks. */
  blockSize: number
  /** Blocks with data in this file: VHD BAT entries set; VHDX FULLY/PARTIALLY_PRESENT. */
  allocatedBlocks: number
  /** Best path to the parent (absolute, else relative, else name); null if not differencing. */
  parent: string | null
  /** VHDX header LogGuid non-zero: the log must be replayed before the BAT can be trusted. */
  logPending: boolean
  /** ceil(virtualSize / blockSize); 0 for a fixed VHD. */
  totalBlocks: number
  logicalSectorSize: number
  physicalSectorSize: number
  parentLocators: ParentLocator[]
  /** Bytes a change scan must read (sum of scanRanges). */
  scanBytes: number
  /** Sorted, merged file ranges a change scan must read; the rest reads as zeros. */
  scanRanges: ByteRange[]
  /** Non-fatal findings (one damaged header, footer copy used, ...). */
  warnings: string[]
  vhd?: VhdDetails
  vhdx?: VhdxDetails
}

/** DiskInfo without the file path, as the parsers produce it. */
export type ParsedDisk = Omit<DiskInfo, 'file'>

export interface ParseOptions {
  signal?: AbortSignal
}
