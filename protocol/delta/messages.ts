/**
 * The frames of one generation of changes to a VM's files, in stream order:
 * begin, then any number of blocks / resize frames, then end.
 * Numbers are u64 on the wire but plain JS numbers here: decoders refuse values above 2^53 - 1.
 */
import type { EncodedBlock } from './block.ts'

/** Frame type byte. Wire values; append-only. */
export enum FrameType {
  Begin = 1,
  Blocks = 2,
  Resize = 3,
  End = 4
}

/** What a file is. Wire values; append-only. */
export enum FileKind {
  /** a virtual disk (VHD/VHDX/raw...): block deltas applied in place */
  Disk = 0,
  /** a small file replicated whole (configuration, NVRAM, ...) */
  WholeFile = 1
}

export interface DeltaFile {
  /** u32, unique within the generation */
  fileId: number
  /** source path, non-empty, at most maxPathBytes of UTF-8, no NUL */
  path: string
  /** size of the file at this generation (u64); every block lies within it */
  size: number
  /** largest block length for this file (u32, 1..maxBlockLength) */
  blockSize: number
  kind: FileKind
}

export interface BeginFrame {
  type: 'begin'
  /** VM name, non-empty, at most maxVmNameBytes of UTF-8, no NUL */
  vm: string
  /** u64, > baseGeneration */
  generation: number
  /** the generation these changes apply on top of (u64; 0 = from scratch) */
  baseGeneration: number
  /** true when captured at one instant (a recovery point); false for a fuzzy scan */
  consistent: boolean
  /** wall-clock epoch ms at capture (u64); for display, never for ordering */
  createdAtMs: number
  files: DeltaFile[]
}

export interface BlockEntry extends EncodedBlock {
  /** byte offset in the file (u64) */
  offset: number
}

export interface BlocksFrame {
  type: 'blocks'
  fileId: number
  /** 1..maxEntriesPerFrame entries, ascending and non-overlapping */
  entries: BlockEntry[]
}

/** The file's size changed since the base generation: truncate or extend it to `size`. */
export interface ResizeFrame {
  type: 'resize'
  fileId: number
  /** must equal the size declared for the file in begin */
  size: number
}

export interface EndFrame {
  type: 'end'
  generation: number
  /** number of block entries in the generation */
  blockCount: number
  /** sum of their raw lengths */
  byteCount: number
  /** optional BLAKE3-128 over every block and resize record, in stream order (see generation.ts) */
  digest?: Uint8Array
}

export type Frame = BeginFrame | BlocksFrame | ResizeFrame | EndFrame
