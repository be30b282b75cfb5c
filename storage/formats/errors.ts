/**
 * Errors of the VHD/VHDX parsers. Every damaged-file condition has its own class and stable code;
 * all extend FormatError so a caller can tell "this file is damaged / not a disk image" from I/O
 * trouble. `structure` (where present) names the on-disk structure at fault, for the message and
 * for logs; tests and scripts match on `name`/`code` only.
 */
import { VmeshError } from '../../common/errors.ts'

/** Base of every disk-format error. `file` is filled in by openDisk when a path is known. */
export class FormatError extends VmeshError {
  file: string | undefined
  constructor (code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.file = undefined
  }
}

/** Neither a VHDX file identifier at offset 0 nor a VHD footer: treat the file as raw. */
export class UnknownFormatError extends FormatError {
  constructor (message = 'not a VHD or VHDX file') {
    super('ERR_FORMAT_UNKNOWN', message)
  }
}

/**
 * A read past the end of the data. Parsers bounds-check before reading, so from a buffer this is a
 * parser bug; from a file it means the file shrank while being read.
 */
export class ReadOutOfRangeError extends FormatError {
  constructor (readonly offset: number, readonly length: number, readonly size: number) {
    super('ERR_FORMAT_READ_OUT_OF_RANGE', `read of ${length} bytes at ${offset} is outside the ${size}-byte input`)
  }
}

/** The file could not be opened, stat'ed or read (ENOENT, EACCES, EIO...). */
export class DiskIoError extends FormatError {
  constructor (message: string, options?: { cause?: unknown }) {
    super('ERR_FORMAT_IO', message, options)
  }
}

// ---- VHD ----------------------------------------------------------------------------------------

/** The footer does not start with "conectix". */
export class VhdBadCookieError extends FormatError {
  constructor (readonly structure: string, detail = '') {
    super('ERR_VHD_BAD_COOKIE', `VHD ${structure}: missing "conectix" cookie${detail}`)
  }
}

/** The dynamic disk header does not start with "cxsparse". */
export class VhdBadDynamicHeaderCookieError extends FormatError {
  constructor () {
    super('ERR_VHD_BAD_DYNAMIC_HEADER_COOKIE', 'VHD dynamic disk header: missing "cxsparse" cookie')
  }
}

/** A one's-complement checksum (footer or dynamic header) does not match. */
export class VhdBadChecksumError extends FormatError {
  constructor (readonly structure: string, stored: number, computed: number) {
    super('ERR_VHD_BAD_CHECKSUM', `VHD ${structure}: checksum mismatch (stored 0x${hex32(stored)}, computed 0x${hex32(computed)})`)
  }
}

/** The footer's disk type is not fixed (2), dynamic (3) or differencing (4). */
export class VhdUnsupportedDiskTypeError extends FormatError {
  constructor (readonly diskType: number) {
    super('ERR_VHD_UNSUPPORTED_DISK_TYPE', `VHD footer: unsupported disk type ${diskType}`)
  }
}

/** A format version field has a major version other than 1. */
export class VhdUnsupportedVersionError extends FormatError {
  constructor (readonly structure: string, version: number) {
    super('ERR_VHD_UNSUPPORTED_VERSION', `VHD ${structure}: unsupported version 0x${hex32(version)}`)
  }
}

/** The file is too short for what its footer describes (or for a footer at all). */
export class VhdTruncatedError extends FormatError {
  constructor (detail: string) {
    super('ERR_VHD_TRUNCATED', `VHD truncated: ${detail}`)
  }
}

/** An offset or offset+length (header, BAT, block, locator) lies outside the file's data area. */
export class VhdOffsetOutOfRangeError extends FormatError {
  constructor (readonly structure: string, offset: number, length: number, limit: number) {
    super('ERR_VHD_OFFSET_OUT_OF_RANGE', `VHD ${structure}: ${length} bytes at offset ${offset} exceed the data area (${limit} bytes)`)
  }
}

/** A size field is beyond what can be represented or supported. */
export class VhdSizeOutOfRangeError extends FormatError {
  constructor (readonly field: string, value: bigint | number) {
    super('ERR_VHD_SIZE_OUT_OF_RANGE', `VHD ${field} out of range: ${value}`)
  }
}

/** The dynamic header's block size is not a power of two of at least 512 bytes. */
export class VhdBadBlockSizeError extends FormatError {
  constructor (readonly blockSize: number) {
    super('ERR_VHD_BAD_BLOCK_SIZE', `VHD dynamic header: bad block size ${blockSize}`)
  }
}

/** MaxTableEntries × BlockSize does not cover the disk's current size. */
export class VhdBatTooSmallError extends FormatError {
  constructor (entries: number, blockSize: number, virtualSize: number) {
    super('ERR_VHD_BAT_TOO_SMALL', `VHD BAT: ${entries} entries of ${blockSize} bytes do not cover ${virtualSize} bytes`)
  }
}

/** A parent locator entry of a differencing disk is malformed (length, encoding). */
export class VhdBadParentLocatorError extends FormatError {
  constructor (detail: string) {
    super('ERR_VHD_BAD_PARENT_LOCATOR', `VHD parent locator: ${detail}`)
  }
}

// ---- VHDX ---------------------------------------------------------------------------------------

/** A structure signature is wrong: "vhdxfile", "regi", "metadata" (headers: see NoValidHeader). */
export class VhdxBadSignatureError extends FormatError {
  constructor (readonly structure: string) {
    super('ERR_VHDX_BAD_SIGNATURE', `VHDX ${structure}: bad signature`)
  }
}

/** Neither header at 64 KiB nor at 128 KiB has a good signature and CRC-32C. */
export class VhdxNoValidHeaderError extends FormatError {
  constructor () {
    super('ERR_VHDX_NO_VALID_HEADER', 'VHDX: neither header is valid (signature or CRC-32C)')
  }
}

/** Both headers are valid, carry the same sequence number, and differ. */
export class VhdxHeaderSequenceConflictError extends FormatError {
  constructor (sequence: bigint) {
    super('ERR_VHDX_HEADER_SEQUENCE_CONFLICT', `VHDX: both headers have sequence number ${sequence} but differ`)
  }
}

/** A CRC-32C does not match (both region tables; a single damaged header is not an error). */
export class VhdxBadChecksumError extends FormatError {
  constructor (readonly structure: string, stored: number, computed: number) {
    super('ERR_VHDX_BAD_CHECKSUM', `VHDX ${structure}: CRC-32C mismatch (stored 0x${hex32(stored)}, computed 0x${hex32(computed)})`)
  }
}

/** The current header's Version is not 1 (or LogVersion not 0). */
export class VhdxUnsupportedVersionError extends FormatError {
  constructor (readonly field: string, version: number) {
    super('ERR_VHDX_UNSUPPORTED_VERSION', `VHDX header: unsupported ${field} ${version}`)
  }
}

/** The file is too short to hold the 1 MiB header section. */
export class VhdxTruncatedError extends FormatError {
  constructor (detail: string) {
    super('ERR_VHDX_TRUNCATED', `VHDX truncated: ${detail}`)
  }
}

/** An offset or offset+length (log, region, metadata item, block) lies outside its container. */
export class VhdxOffsetOutOfRangeError extends FormatError {
  constructor (readonly structure: string, offset: number | bigint, length: number | bigint, limit: number) {
    super('ERR_VHDX_OFFSET_OUT_OF_RANGE', `VHDX ${structure}: ${length} bytes at offset ${offset} exceed ${limit} bytes`)
  }
}

/** An offset or length that must be a multiple of 1 MiB is not. */
export class VhdxBadAlignmentError extends FormatError {
  constructor (readonly structure: string, value: number | bigint) {
    super('ERR_VHDX_BAD_ALIGNMENT', `VHDX ${structure}: ${value} is not a multiple of 1 MiB`)
  }
}

/** Two structures (header section, log, regions, blocks) claim the same bytes of the file. */
export class VhdxRegionOverlapError extends FormatError {
  constructor (a: string, b: string) {
    super('ERR_VHDX_REGION_OVERLAP', `VHDX: ${a} overlaps ${b}`)
  }
}

/** A region table or metadata table has more entries than the spec allows (2047). */
export class VhdxTooManyEntriesError extends FormatError {
  constructor (readonly structure: string, count: number) {
    super('ERR_VHDX_TOO_MANY_ENTRIES', `VHDX ${structure}: ${count} entries (at most 2047)`)
  }
}

/** The region table lacks the BAT or the metadata region. */
export class VhdxMissingRegionError extends FormatError {
  constructor (readonly region: string) {
    super('ERR_VHDX_MISSING_REGION', `VHDX region table: ${region} region missing`)
  }
}

/** The region table lists the BAT or the metadata region more than once. */
export class VhdxDuplicateRegionError extends FormatError {
  constructor (readonly region: string) {
    super('ERR_VHDX_DUPLICATE_REGION', `VHDX region table: ${region} region listed twice`)
  }
}

/** The region table has an entry marked Required whose GUID this parser does not know. */
export class VhdxUnknownRequiredRegionError extends FormatError {
  constructor (readonly guid: string) {
    super('ERR_VHDX_UNKNOWN_REQUIRED_REGION', `VHDX region table: unknown required region ${guid}`)
  }
}

/** A required metadata item (file parameters, sizes, page 83, parent locator) is absent. */
export class VhdxMissingMetadataError extends FormatError {
  constructor (readonly item: string) {
    super('ERR_VHDX_MISSING_METADATA', `VHDX metadata: required item ${item} missing`)
  }
}

/** The metadata table has an entry marked IsRequired whose GUID this parser does not know. */
export class VhdxUnknownRequiredMetadataError extends FormatError {
  constructor (readonly guid: string) {
    super('ERR_VHDX_UNKNOWN_REQUIRED_METADATA', `VHDX metadata: unknown required item ${guid}`)
  }
}

/** A metadata entry is malformed: wrong length for its item, duplicated, bad offset rules. */
export class VhdxBadMetadataError extends FormatError {
  constructor (readonly item: string, detail: string) {
    super('ERR_VHDX_BAD_METADATA', `VHDX metadata ${item}: ${detail}`)
  }
}

/** File Parameters block size is not a power of two between 1 MiB and 256 MiB. */
export class VhdxBadBlockSizeError extends FormatError {
  constructor (readonly blockSize: number) {
    super('ERR_VHDX_BAD_BLOCK_SIZE', `VHDX metadata: bad block size ${blockSize}`)
  }
}

/** A logical or physical sector size is neither 512 nor 4096. */
export class VhdxBadSectorSizeError extends FormatError {
  constructor (readonly field: string, value: number) {
    super('ERR_VHDX_BAD_SECTOR_SIZE', `VHDX metadata: bad ${field} ${value}`)
  }
}

/** Virtual disk size is over 64 TiB or not a multiple of the logical sector size. */
export class VhdxBadVirtualSizeError extends FormatError {
  constructor (value: bigint) {
    super('ERR_VHDX_BAD_VIRTUAL_SIZE', `VHDX metadata: bad virtual disk size ${value}`)
  }
}

/** The BAT region is too short for the number of entries the disk size needs. */
export class VhdxBatTooSmallError extends FormatError {
  constructor (needed: number, regionLength: number) {
    super('ERR_VHDX_BAT_TOO_SMALL', `VHDX BAT: needs ${needed} bytes, region has ${regionLength}`)
  }
}

/** A BAT entry has a state that is reserved or not valid for its kind of entry or disk type. */
export class VhdxBadBatEntryError extends FormatError {
  constructor (readonly index: number, state: number, detail: string) {
    super('ERR_VHDX_BAD_BAT_ENTRY', `VHDX BAT entry ${index}: state ${state} ${detail}`)
  }
}

/** The parent locator item of a differencing VHDX is malformed. */
export class VhdxBadParentLocatorError extends FormatError {
  constructor (detail: string) {
    super('ERR_VHDX_BAD_PARENT_LOCATOR', `VHDX parent locator: ${detail}`)
  }
}

function hex32 (n: number): string { return (n >>> 0).toString(16).padStart(8, '0') }
