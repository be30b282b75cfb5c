/**
 * Hand-built, minimal, valid VHD and VHDX images for the format tests, written field by field from
 * the specs (not with the parsers' code), plus the layout so tests can corrupt a chosen field and
 * `fix*Checksums` to make a corruption reach past the checksum checks.
 */
import { crc32c } from '../../../storage/formats/crc32c.ts'
import { msGuidBytes } from '../../../storage/formats/bytes.ts'

const MiB = 1024 * 1024
const KiB = 1024

function ascii (buf: Uint8Array, off: number, s: string): void {
  for (let i = 0; i < s.length; i++) buf[off + i] = s.charCodeAt(i)
}
function utf16 (s: string, bigEndian: boolean): Uint8Array {
  const out = new Uint8Array(s.length * 2)
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    out[i * 2 + (bigEndian ? 0 : 1)] = c >>> 8
    out[i * 2 + (bigEndian ? 1 : 0)] = c & 0xff
  }
  return out
}
function dv (b: Uint8Array): DataView { return new DataView(b.buffer, b.byteOffset, b.byteLength) }
const pad = (n: number, to: number): number => Math.ceil(n / to) * to

// ---- VHD ------------------------------------------------------------------------------------------

export interface VhdOptions {
  type: 'fixed' | 'dynamic' | 'differencing'
  virtualSize: number
  /** Default 4096 (small, so images stay tiny). */
  blockSize?: number
  /** Default ceil(virtualSize / blockSize). */
  maxTableEntries?: number
  /** Block indices that get data (dynamic/differencing). */
  allocated?: number[]
  fill?: number
  parentName?: string
  locators?: Array<{ code: string, path: string }>
}

export interface VhdImage {
  bytes: Uint8Array
  footerOffset: number
  headerOffset: number
  batOffset: number
  /** File offset of each allocated block (its sector bitmap), by block index. */
  blockOffsets: Map<number, number>
  locatorOffsets: number[]
}

export function vhdChecksumOf (bytes: Uint8Array, at: number, length: number, sumAt: number): number {
  let s = 0
  for (let i = 0; i < length; i++) if (i < sumAt || i >= sumAt + 4) s += bytes[at + i] as number
  return ~s >>> 0
}

function vhdFooter (o: VhdOptions, dataOffset: bigint): Uint8Array {
  const f = new Uint8Array(512)
  const v = dv(f)
  ascii(f, 0, 'conectix')
  v.setUint32(8, 2)
  v.setUint32(12, 0x00010000)
  v.setBigUint64(16, dataOffset)
  v.setUint32(24, 0x2a000000)
  ascii(f, 28, 'win ') // qemu trusts current_size for Hyper-V's creator, not CHS
  v.setUint32(32, 0x00010000)
  ascii(f, 36, 'Wi2k')
  v.setBigUint64(40, BigInt(o.virtualSize))
  v.setBigUint64(48, BigInt(o.virtualSize))
  v.setUint16(56, 1024); f[58] = 16; f[59] = 63
  v.setUint32(60, o.type === 'fixed' ? 2 : o.type === 'dynamic' ? 3 : 4)
  for (let i = 0; i < 16; i++) f[68 + i] = 0x10 + i
  v.setUint32(64, vhdChecksumOf(f, 0, 512, 64))
  return f
}

export function buildVhd (o: VhdOptions): VhdImage {
  const fill = o.fill ?? 0xab
  if (o.type === 'fixed') {
    const bytes = new Uint8Array(o.virtualSize + 512)
    bytes.fill(fill, 0, o.virtualSize)
    bytes.set(vhdFooter(o, 0xffffffffffffffffn), o.virtualSize)
    return { bytes, footerOffset: o.virtualSize, headerOffset: -1, batOffset: -1, blockOffsets: new Map(), locatorOffsets: [] }
  }
  const blockSize = o.blockSize ?? 4096
  const entries = o.maxTableEntries ?? Math.ceil(o.virtualSize / blockSize)
  const headerOffset = 512
  const batOffset = 1536
  let end = batOffset + pad(entries * 4, 512)
  const locs = (o.locators ?? []).map(l => {
    const data = l.code === 'MacX' ? new TextEncoder().encode(l.path) : utf16(l.path, false)
    const at = end
    end += pad(Math.max(1, data.length), 512)
    return { code: l.code, data, at }
  })
  const bitmapSize = pad(Math.ceil(blockSize / 512 / 8), 512)
  const blockOffsets = new Map<number, number>()
  for (const b of o.allocated ?? []) {
    blockOffsets.set(b, end)
    end += bitmapSize + blockSize
  }
  const bytes = new Uint8Array(end + 512)
  const footer = vhdFooter(o, BigInt(headerOffset))
  bytes.set(footer, 0)
  bytes.set(footer, end)

  const h = bytes.subarray(headerOffset, headerOffset + 1024)
  const hv = dv(h)
  ascii(h, 0, 'cxsparse')
  hv.setBigUint64(8, 0xffffffffffffffffn)
  hv.setBigUint64(16, BigInt(batOffset))
  hv.setUint32(24, 0x00010000)
  hv.setUint32(28, entries)
  hv.setUint32(32, blockSize)
  if (o.type === 'differencing') {
    for (let i = 0; i < 16; i++) h[40 + i] = 0xa0 + i
    h.set(utf16(o.parentName ?? 'parent.vhd', true).subarray(0, 510), 64)
    locs.forEach((l, i) => {
      const e = 576 + i * 24
      ascii(h, e, l.code)
      hv.setUint32(e + 4, pad(Math.max(1, l.data.length), 512))
      hv.setUint32(e + 8, l.data.length)
      hv.setBigUint64(e + 16, BigInt(l.at))
      bytes.set(l.data, l.at)
    })
  }
  hv.setUint32(36, vhdChecksumOf(h, 0, 1024, 36))

  const bat = dv(bytes.subarray(batOffset, batOffset + pad(entries * 4, 512)))
  for (let i = 0; i < pad(entries * 4, 512) / 4; i++) bat.setUint32(i * 4, 0xffffffff)
  for (const [b, off] of blockOffsets) {
    bat.setUint32(b * 4, off / 512)
    bytes.fill(0xff, off, off + bitmapSize)
    bytes.fill(fill, off + bitmapSize, off + bitmapSize + blockSize)
  }
  return { bytes, footerOffset: end, headerOffset, batOffset, blockOffsets, locatorOffsets: locs.map(l => l.at) }
}

/** Recomputes the footer checksums (end and, if it has the cookie, the copy at 0) and the dynamic header's. */
export function fixVhdChecksums (bytes: Uint8Array, size = bytes.length): void {
  const fix = (at: number, len: number, sumAt: number): void => {
    if (at < 0 || at + len > size) return
    dv(bytes).setUint32(at + sumAt, vhdChecksumOf(bytes, at, len, sumAt))
  }
  if (size >= 512) fix(size - 512, 512, 64)
  if (size >= 1024 && bytes[0] === 0x63) fix(0, 512, 64)
  if (size >= 512) {
    const off = dv(bytes).getBigUint64(size - 512 + 16)
    if (off < BigInt(size)) fix(Number(off), 1024, 36)
  }
}

// ---- VHDX -----------------------------------------------------------------------------------------

export const GUIDS = {
  bat: '2dc27766-f623-4200-9d64-115e9bfd4a08',
  metadata: '8b7ca206-4790-4b9a-b8fe-575f050f886e',
  fileParameters: 'caa16737-fa36-4d43-b3b6-33f0aa44e76b',
  virtualDiskSize: '2fa54224-cd1b-4876-b211-5dbed83bf4b8',
  page83: 'beca12ab-b2e6-4523-93ef-c309e000c746',
  logicalSectorSize: '8141bf1d-a96f-4709-ba47-f233a8faab5f',
  physicalSectorSize: 'cda348c7-445d-4471-9cc9-e9885251c556',
  parentLocator: 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c',
  locatorType: 'b04aefb7-d19e-4a81-b789-25b8e9445913'
}

export interface VhdxOptions {
  virtualSize: number
  /** Default 1 MiB. */
  blockSize?: number
  logicalSectorSize?: number
  physicalSectorSize?: number
  leaveBlocksAllocated?: boolean
  /** Parent locator key/values; makes a differencing disk. */
  parent?: Record<string, string>
  /** Default 1 MiB; 0 for no log. */
  logLength?: number
  logPending?: boolean
  /** Payload block index → BAT state. Present states (6, 7) get file space. */
  blocks?: Record<number, number>
  /** Chunk indices whose sector bitmap block is present. */
  sectorBitmaps?: number[]
  /** Sequence numbers of header 1 and header 2. Default [1n, 2n]. */
  sequences?: [bigint, bigint]
  fill?: number
}

export interface VhdxImage {
  bytes: Uint8Array
  logOffset: number
  metadataOffset: number
  batOffset: number
  batLength: number
  chunkRatio: number
  /** Offset inside the metadata region of each item. */
  items: Record<string, number>
  blockOffsets: Map<number, number>
  bitmapOffsets: Map<number, number>
}

export const HEADER_OFFSETS = [64 * KiB, 128 * KiB]
export const REGION_TABLE_OFFSETS = [192 * KiB, 256 * KiB]

function vhdxCrc (b: Uint8Array, at: number, len: number): void {
  const s = b.subarray(at, at + len)
  dv(s).setUint32(4, 0, true)
  dv(s).setUint32(4, crc32c(s), true)
}

export function buildVhdx (o: VhdxOptions): VhdxImage {
  const blockSize = o.blockSize ?? MiB
  const lss = o.logicalSectorSize ?? 512
  const pss = o.physicalSectorSize ?? 4096
  const hasParent = o.parent !== undefined
  const chunkRatio = (2 ** 23 * lss) / blockSize
  const dataBlocks = Math.ceil(o.virtualSize / blockSize)
  const batEntries = hasParent
    ? Math.ceil(dataBlocks / chunkRatio) * (chunkRatio + 1)
    : dataBlocks === 0 ? 0 : dataBlocks + Math.floor((dataBlocks - 1) / chunkRatio)
  const logLength = o.logLength ?? MiB
  const logOffset = MiB
  const metadataOffset = logOffset + logLength
  const batOffset = metadataOffset + MiB
  const batLength = Math.max(MiB, pad(batEntries * 8, MiB))
  let end = batOffset + batLength
  const blockOffsets = new Map<number, number>()
  const bitmapOffsets = new Map<number, number>()
  for (const [k, state] of Object.entries(o.blocks ?? {})) {
    if (state === 6 || state === 7) { blockOffsets.set(Number(k), end); end += blockSize }
  }
  for (const c of o.sectorBitmaps ?? []) { bitmapOffsets.set(c, end); end += MiB }
  const bytes = new Uint8Array(end)

  ascii(bytes, 0, 'vhdxfile')
  bytes.set(utf16('vmesh test builder', false), 8)

  const [s1, s2] = o.sequences ?? [1n, 2n]
  HEADER_OFFSETS.forEach((at, i) => {
    const v = dv(bytes.subarray(at, at + 4 * KiB))
    ascii(bytes, at, 'head')
    v.setBigUint64(8, i === 0 ? s1 : s2, true)
    for (let j = 0; j < 16; j++) { bytes[at + 16 + j] = 0x30 + j; bytes[at + 32 + j] = 0x50 + j }
    if (o.logPending === true) for (let j = 0; j < 16; j++) bytes[at + 48 + j] = 0x70 + j
    v.setUint16(64, 0, true)
    v.setUint16(66, 1, true)
    v.setUint32(68, logLength, true)
    v.setBigUint64(72, BigInt(logLength > 0 ? logOffset : 0), true)
    vhdxCrc(bytes, at, 4 * KiB)
  })

  for (const at of REGION_TABLE_OFFSETS) {
    const v = dv(bytes.subarray(at, at + 64 * KiB))
    ascii(bytes, at, 'regi')
    v.setUint32(8, 2, true)
    bytes.set(msGuidBytes(GUIDS.bat), at + 16)
    v.setBigUint64(32, BigInt(batOffset), true)
    v.setUint32(40, batLength, true)
    v.setUint32(44, 1, true)
    bytes.set(msGuidBytes(GUIDS.metadata), at + 48)
    v.setBigUint64(64, BigInt(metadataOffset), true)
    v.setUint32(72, MiB, true)
    v.setUint32(76, 1, true)
    vhdxCrc(bytes, at, 64 * KiB)
  }

  // metadata table + items
  const m = bytes.subarray(metadataOffset, metadataOffset + MiB)
  const mv = dv(m)
  ascii(m, 0, 'metadata')
  const items: Record<string, number> = {}
  let nextItem = 64 * KiB
  const add = (name: keyof typeof GUIDS, data: Uint8Array, flags: number): void => {
    const n = mv.getUint16(10, true)
    const e = 32 + n * 32
    const off = nextItem
    nextItem += pad(data.length, 8)
    items[name] = off
    m.set(msGuidBytes(GUIDS[name]), e)
    mv.setUint32(e + 16, off, true)
    mv.setUint32(e + 20, data.length, true)
    mv.setUint32(e + 24, flags, true)
    m.set(data, off)
    mv.setUint16(10, n + 1, true)
  }
  const u32 = (x: number): Uint8Array => { const b = new Uint8Array(4); dv(b).setUint32(0, x, true); return b }
  const fp = new Uint8Array(8)
  dv(fp).setUint32(0, blockSize, true)
  dv(fp).setUint32(4, (o.leaveBlocksAllocated === true ? 1 : 0) | (hasParent ? 2 : 0), true)
  add('fileParameters', fp, 4)
  const vs = new Uint8Array(8); dv(vs).setBigUint64(0, BigInt(o.virtualSize), true)
  add('virtualDiskSize', vs, 6)
  add('page83', Uint8Array.from({ length: 16 }, (_, i) => 0x90 + i), 6)
  add('logicalSectorSize', u32(lss), 6)
  add('physicalSectorSize', u32(pss), 6)
  if (o.parent !== undefined) add('parentLocator', parentLocatorItem(o.parent), 6)

  // BAT
  const bat = dv(bytes.subarray(batOffset, batOffset + batLength))
  const entryIndex = (block: number): number => block + Math.floor(block / chunkRatio)
  for (const [k, state] of Object.entries(o.blocks ?? {})) {
    const b = Number(k)
    const off = blockOffsets.get(b) ?? 0
    bat.setUint32(entryIndex(b) * 8, ((off / MiB) % 4096) * 2 ** 20 + state, true)
    bat.setUint32(entryIndex(b) * 8 + 4, Math.floor(off / MiB / 4096), true)
    if (off > 0) bytes.fill(o.fill ?? 0xcd, off, off + blockSize)
  }
  for (const [c, off] of bitmapOffsets) {
    const i = c * (chunkRatio + 1) + chunkRatio
    bat.setUint32(i * 8, (off / MiB) * 2 ** 20 + 6, true)
    bytes.fill(0xff, off, off + MiB)
  }
  return { bytes, logOffset, metadataOffset, batOffset, batLength, chunkRatio, items, blockOffsets, bitmapOffsets }
}

function parentLocatorItem (kv: Record<string, string>): Uint8Array {
  const pairs = Object.entries(kv)
  let off = 20 + pairs.length * 12
  const item = new Uint8Array(off + pairs.reduce((n, [k, v]) => n + 2 * (k.length + v.length), 0))
  const v = dv(item)
  item.set(msGuidBytes(GUIDS.locatorType), 0)
  v.setUint16(18, pairs.length, true)
  pairs.forEach(([key, value], i) => {
    const kb = utf16(key, false)
    const vb = utf16(value, false)
    const e = 20 + i * 12
    v.setUint32(e, off, true); item.set(kb, off); off += kb.length
    v.setUint32(e + 4, off, true); item.set(vb, off); off += vb.length
    v.setUint16(e + 8, kb.length, true)
    v.setUint16(e + 10, vb.length, true)
  })
  return item
}

/** Recomputes the CRC-32C of both headers and both region tables (where their signatures are intact). */
export function fixVhdxChecksums (bytes: Uint8Array): void {
  for (const at of HEADER_OFFSETS) if (at + 4 * KiB <= bytes.length && bytes[at] === 0x68) vhdxCrc(bytes, at, 4 * KiB)
  for (const at of REGION_TABLE_OFFSETS) if (at + 64 * KiB <= bytes.length && bytes[at] === 0x72) vhdxCrc(bytes, at, 64 * KiB)
}

/** bytes[at] ^= mask (a one-byte corruption). */
export function xorByte (bytes: Uint8Array, at: number, mask: number): void {
  bytes[at] = (bytes[at] ?? 0) ^ mask
}
