/**
 * Where a virtual-disk byte lives in the file, and which file bytes a write to the virtual disk
 * can touch besides the payload. Used by change sources that are *told* virtual-disk ranges
 * (Hyper-V RCT, QEMU dirty bitmaps on the format node) to keep a byte-identical replica of the
 * file.
 *
 * Flow: `readDiskLayout(path)` parses the file (parseDisk: every structure validated) and reads
 * its BAT bytes once; `mapVirtualRanges` turns virtual ranges into the payload bytes plus the
 * per-block metadata a write touches (VHD block bitmap, VHDX sector bitmap bits of a differencing
 * disk); `batChanges` compares two BAT copies and names, for every entry that changed, the entry
 * itself and the whole block it now points at (a block that was allocated or moved is sent
 * whole: nothing says what the hypervisor wrote around the guest's bytes); `metadata` lists the
 * small fixed structures a write can rewrite (VHD footer, its copy and the dynamic header; VHDX
 * headers and region tables, the log, the metadata region) — the caller fingerprints them and
 * sends the ones that changed.
 */
import { UnknownFormatError } from './errors.ts'
import { FileReader } from './reader.ts'
import type { ByteReader } from './reader.ts'
import { parseDisk } from './open.ts'
import { mergeRanges } from './ranges.ts'
import type { ByteRange } from './ranges.ts'
import { batOffsetBytes, BAT_STATE, SB_STATE } from './vhdx-bat.ts'
import { VHD_DYNAMIC_HEADER_SIZE, VHD_FOOTER_SIZE } from './vhd.ts'
import { VHDX_REGION_TABLE_OFFSETS, VHDX_REGION_TABLE_SIZE } from './vhdx.ts'
import type { DiskSubformat, ParsedDisk } from './types.ts'

const MiB = 1024 * 1024
const VHD_UNUSED = 0xffffffff
/** BATs above this are not copied (a 64 TiB VHDX at 32 MiB blocks has a 16 MiB BAT). */
export const MAX_LAYOUT_BAT_BYTES = 64 * MiB

export interface DiskLayout {
  format: 'raw' | 'vhd' | 'vhdx'
  subformat: DiskSubformat
  fileSize: number
  virtualSize: number
  /** Payload block size; 0 when virtual offset = file offset (raw, fixed VHD). */
  blockSize: number
  /** VHD: sector bitmap in front of each block (bytes). */
  vhdBitmapBytes: number
  /** VHDX: payload blocks per sector-bitmap chunk. */
  chunkRatio: number
  logicalSectorSize: number
  hasParent: boolean
  /** VHDX log replay pending: the BAT on disk is not the whole truth, do not map through it. */
  logPending: boolean
  /** The BAT's place in the file; null without one. */
  bat: { offset: number, length: number, entryBytes: 4 | 8 } | null
  /** Small structures a write may rewrite (file offsets, merged). */
  metadata: ByteRange[]
}

export interface LayoutSnapshot {
  layout: DiskLayout
  /** The BAT's bytes at read time; null without a BAT or when it is over MAX_LAYOUT_BAT_BYTES. */
  bat: Uint8Array | null
}

/** Layout of an already parsed VHD/VHDX. */
export function layoutOf (info: ParsedDisk): DiskLayout {
  const size = info.fileSize
  const base = {
    format: info.format,
    subformat: info.subformat,
    fileSize: size,
    virtualSize: info.virtualSize,
    logicalSectorSize: info.logicalSectorSize,
    hasParent: info.subformat === 'differencing',
    logPending: info.logPending
  }
  if (info.format === 'vhd') {
    const d = info.vhd
    const footer = { offset: size - VHD_FOOTER_SIZE, length: VHD_FOOTER_SIZE }
    if (info.subformat === 'fixed' || d === undefined || d.batOffset === null || d.maxTableEntries === null || d.dynamicHeaderOffset === null) {
      return { ...base, blockSize: 0, vhdBitmapBytes: 0, chunkRatio: 0, bat: null, metadata: [footer] }
    }
    return {
      ...base,
      blockSize: info.blockSize,
      vhdBitmapBytes: Math.ceil(info.blockSize / 512 / 8 / 512) * 512,
      chunkRatio: 0,
      bat: { offset: d.batOffset, length: d.maxTableEntries * 4, entryBytes: 4 },
      metadata: mergeRanges([
        { offset: 0, length: VHD_FOOTER_SIZE },
        { offset: d.dynamicHeaderOffset, length: VHD_DYNAMIC_HEADER_SIZE },
        footer
      ], size)
    }
  }
  const x = info.vhdx
  if (x === undefined) throw new UnknownFormatError('VHDX without details')
  const metadata: ByteRange[] = [
    // File identifier, both headers, both region tables: [0, 320 KiB).
    { offset: 0, length: VHDX_REGION_TABLE_OFFSETS[1] + VHDX_REGION_TABLE_SIZE },
    { offset: x.metadataOffset, length: x.metadataLength }
  ]
  if (x.logLength > 0) metadata.push({ offset: x.logOffset, length: x.logLength })
  return {
    ...base,
    blockSize: info.blockSize,
    vhdBitmapBytes: 0,
    chunkRatio: x.chunkRatio,
    bat: { offset: x.batOffset, length: x.batEntries * 8, entryBytes: 8 },
    metadata: mergeRanges(metadata, size)
  }
}

/**
 * Whether the hypervisor may make the file longer while the guest writes: a dynamic or
 * differencing VHD/VHDX allocates blocks at the file's end — and so does a "fixed" VHDX whose
 * payload blocks are not all present: QEMU's `qemu-img create -o subformat=fixed` marks them
 * ZERO on a fresh file and allocates each one at the end of the file on its first write (the
 * file grew from 72 to 83 MiB under a guest, QEMU 7.2). A raw file, a fixed VHD and a fixed
 * VHDX with every payload block present keep their size (fleecing depends on that: QEMU 7.2
 * aborts when a fleeced file node grows). An unknown BAT (`bat` null: over the copy cap) may grow.
 */
export function fileMayGrow (snap: { layout: Pick<DiskLayout, 'subformat' | 'format' | 'chunkRatio' | 'bat'>, bat: Uint8Array | null }): boolean {
  const { layout, bat } = snap
  if (layout.subformat !== 'fixed') return true
  if (layout.format !== 'vhdx' || layout.bat === null) return false
  if (bat === null) return true
  const dv = new DataView(bat.buffer, bat.byteOffset, bat.byteLength)
  const n = Math.floor(bat.length / 8)
  for (let i = 0; i < n; i++) {
    // sector-bitmap entries (every chunkRatio+1-th) are not payload
    if (layout.chunkRatio > 0 && i % (layout.chunkRatio + 1) === layout.chunkRatio) continue
    if ((dv.getUint32(i * 8, true) & 7) !== BAT_STATE.fullyPresent) return true
  }
  return false
}

/** The layout of a file that is not VHD/VHDX: bytes are where the virtual disk has them. */
export function rawLayout (fileSize: number): DiskLayout {
  return {
    format: 'raw', subformat: 'fixed', fileSize, virtualSize: fileSize, blockSize: 0, vhdBitmapBytes: 0,
    chunkRatio: 0, logicalSectorSize: 512, hasParent: false, logPending: false, bat: null, metadata: []
  }
}

/**
 * Parses `path` and copies its BAT. A file with no VHD/VHDX signature is raw; a damaged image
 * rejects with its FormatError (the caller cannot map into it).
 */
export async function readDiskLayout (path: string, opts: { signal?: AbortSignal } = {}): Promise<LayoutSnapshot> {
  const reader = await FileReader.open(path)
  try {
    return await readLayoutFrom(reader, opts)
  } finally {
    await reader.close().catch(() => {})
  }
}

/**
 * readDiskLayout of any byte source — e.g. a point-in-time view of the file (QEMU fleecing,
 * read over NBD), so the layout, BAT and payload all come from the same instant.
 */
export async function readLayoutFrom (reader: ByteReader, opts: { signal?: AbortSignal } = {}): Promise<LayoutSnapshot> {
  let info: ParsedDisk
  try {
    info = await parseDisk(reader, opts)
  } catch (err) {
    if (err instanceof UnknownFormatError) return { layout: rawLayout(reader.size), bat: null }
    throw err
  }
  const layout = layoutOf(info)
  let bat: Uint8Array | null = null
  if (layout.bat !== null && layout.bat.length <= MAX_LAYOUT_BAT_BYTES) {
    bat = new Uint8Array(layout.bat.length)
    for (let done = 0; done < bat.length; done += MiB) {
      const n = Math.min(MiB, bat.length - done)
      bat.set(await reader.read(layout.bat.offset + done, n), done)
    }
  }
  return { layout, bat }
}

/** VHDX BAT index of payload block `b`. */
function vhdxPayloadIndex (b: number, chunkRatio: number): number { return b + Math.floor(b / chunkRatio) }

/** File offset an entry points at, or -1 when the block has no bytes in this file. */
function entryTarget (layout: DiskLayout, bat: Uint8Array, index: number, sectorBitmap: boolean): number {
  const v = new DataView(bat.buffer, bat.byteOffset, bat.byteLength)
  if (layout.format === 'vhd') {
    if ((index + 1) * 4 > bat.length) return -1
    const sector = v.getUint32(index * 4)
    return sector === VHD_UNUSED ? -1 : sector * 512
  }
  if ((index + 1) * 8 > bat.length) return -1
  const lo = v.getUint32(index * 8, true)
  const hi = v.getUint32(index * 8 + 4, true)
  const state = lo & 7
  const present = sectorBitmap
    ? state === SB_STATE.present
    : state === BAT_STATE.fullyPresent || state === BAT_STATE.partiallyPresent
  return present ? batOffsetBytes(lo, hi) : -1
}

/**
 * File ranges holding the virtual `ranges` (clipped to the virtual size), plus the block bitmap
 * (VHD) or sector bitmap bits (differencing VHDX) of every touched block and the BAT entry of
 * every touched block. Blocks with no bytes in the file contribute only their BAT entry (a
 * write there allocates, which `batChanges` reports). `bat` null (over the copy cap) treats the
 * whole BAT region's touched entries as unknown: the caller must widen (see told.ts).
 */
export function mapVirtualRanges (layout: DiskLayout, bat: Uint8Array | null, ranges: Iterable<ByteRange>): ByteRange[] {
  const out: ByteRange[] = []
  const vsize = layout.virtualSize
  if (layout.blockSize === 0) {
    for (const r of ranges) {
      const end = Math.min(vsize, r.offset + r.length)
      if (end > r.offset) out.push({ offset: r.offset, length: end - r.offset })
    }
    return mergeRanges(out, layout.fileSize)
  }
  const bs = layout.blockSize
  const batRegion = layout.bat
  for (const r of mergeRanges([...ranges], vsize)) {
    for (let v = r.offset; v < r.offset + r.length;) {
      const b = Math.floor(v / bs)
      const inner = v - b * bs
      const len = Math.min(r.offset + r.length - v, bs - inner)
      const index = layout.format === 'vhd' ? b : vhdxPayloadIndex(b, layout.chunkRatio)
      if (batRegion !== null) out.push({ offset: batRegion.offset + index * batRegion.entryBytes, length: batRegion.entryBytes })
      const target = bat === null ? -1 : entryTarget(layout, bat, index, false)
      if (target >= 0) {
        if (layout.format === 'vhd') {
          out.push({ offset: target, length: layout.vhdBitmapBytes })
          out.push({ offset: target + layout.vhdBitmapBytes + inner, length: len })
        } else {
          out.push({ offset: target + inner, length: len })
        }
      }
      if (layout.format === 'vhdx' && layout.hasParent && batRegion !== null) {
        const chunk = Math.floor(b / layout.chunkRatio)
        const sbIndex = chunk * (layout.chunkRatio + 1) + layout.chunkRatio
        out.push({ offset: batRegion.offset + sbIndex * 8, length: 8 })
        const sb = bat === null ? -1 : entryTarget(layout, bat, sbIndex, true)
        if (sb >= 0) {
          const chunkStart = chunk * layout.chunkRatio * bs
          const firstBit = Math.floor((v - chunkStart) / layout.logicalSectorSize)
          const lastBit = Math.floor((v + len - 1 - chunkStart) / layout.logicalSectorSize)
          out.push({ offset: sb + Math.floor(firstBit / 8), length: Math.floor(lastBit / 8) - Math.floor(firstBit / 8) + 1 })
        }
      }
      v += len
    }
  }
  return mergeRanges(out, layout.fileSize)
}

/**
 * Entries that differ between two copies of the same disk's BAT: each entry's bytes, and the
 * whole block it now points at (payload block, VHD bitmap + block, or a 1 MiB VHDX sector
 * bitmap block). A BAT that grew counts its new entries as changed.
 */
export function batChanges (layout: DiskLayout, before: Uint8Array, after: Uint8Array): ByteRange[] {
  const region = layout.bat
  if (region === null) return []
  const eb = region.entryBytes
  const out: ByteRange[] = []
  const n = Math.floor(after.length / eb)
  for (let i = 0; i < n; i++) {
    const at = i * eb
    let same = at + eb <= before.length
    for (let k = 0; same && k < eb; k++) same = before[at + k] === after[at + k]
    if (same) continue
    out.push({ offset: region.offset + at, length: eb })
    if (layout.format === 'vhd') {
      const target = entryTarget(layout, after, i, false)
      if (target >= 0) out.push({ offset: target, length: layout.vhdBitmapBytes + layout.blockSize })
    } else {
      const isSb = i % (layout.chunkRatio + 1) === layout.chunkRatio
      const target = entryTarget(layout, after, i, isSb)
      if (target >= 0) out.push({ offset: target, length: isSb ? MiB : layout.blockSize })
    }
  }
  return mergeRanges(out, layout.fileSize)
}
