/**
 * The disk-format layer: VHD and VHDX parsers, format detection, the byte ranges a change scan
 * must read, and `vmesh inspect`. Import from here; the files behind it are implementation.
 */
export type { ByteReader } from './reader.ts'
export { BufferReader, FileReader, MAX_READ_LENGTH } from './reader.ts'
export type { ByteRange } from './ranges.ts'
export type * from './types.ts'
export * from './errors.ts'
export { crc32c } from './crc32c.ts'
export { parseVhd } from './vhd.ts'
export { parseVhdx } from './vhdx.ts'
export { detectFormat, parseDisk, openDisk, dataRanges, dataRangesForFile } from './open.ts'
export type { FileRanges } from './open.ts'
export { inspect, formatInspectText } from './inspect.ts'
export type { InspectResult } from './inspect.ts'
export { readDiskLayout, layoutOf, rawLayout, mapVirtualRanges, batChanges, MAX_LAYOUT_BAT_BYTES } from './layout.ts'
export type { DiskLayout, LayoutSnapshot } from './layout.ts'
