/**
 * Fuzz inputs for the disk-format parsers (storage/formats), shared by their unit test (CI
 * counts) and `npm run bench -- fuzz` (millions): valid small images, mutated (bit flips, fields
 * overwritten with extreme values, random bytes, truncation, extension), with checksums
 * recomputed for most inputs so mutations reach past the checksum checks. Images are shared;
 * mutations live in an overlay, so many inputs need no image copies.
 */
import type { Random } from '../../../common/random.ts'
import { crc32c } from '../../../storage/formats/crc32c.ts'
import { checkSpan } from '../../../storage/formats/reader.ts'
import type { ByteReader } from '../../../storage/formats/reader.ts'
import { HEADER_OFFSETS, REGION_TABLE_OFFSETS, buildVhd, buildVhdx, vhdChecksumOf } from '../../unit/formats/images.ts'

const MiB = 1024 * 1024
const KiB = 1024

export interface Patch { offset: number, bytes: Uint8Array }

/** A read-only base image plus byte patches and a (possibly different) size; counts its reads. */
export class OverlayReader implements ByteReader {
  reads = 0
  bytesRead = 0
  maxRead = 0
  constructor (readonly base: Uint8Array, public size: number, readonly patches: Patch[] = []) {}

  view (offset: number, length: number): Uint8Array {
    const end = offset + length
    const touched = this.patches.some(p => p.offset < end && p.offset + p.bytes.length > offset)
    if (!touched && end <= this.base.length) return this.base.subarray(offset, end)
    const out = new Uint8Array(length)
    if (offset < this.base.length) out.set(this.base.subarray(offset, Math.min(end, this.base.length)))
    for (const p of this.patches) {
      const s = Math.max(offset, p.offset)
      const e = Math.min(end, p.offset + p.bytes.length)
      if (s < e) out.set(p.bytes.subarray(s - p.offset, e - p.offset), s - offset)
    }
    return out
  }

  async read (offset: number, length: number): Promise<Uint8Array> {
    checkSpan(offset, length, this.size)
    this.reads++
    this.bytesRead += length
    this.maxRead = Math.max(this.maxRead, length)
    return this.view(offset, length)
  }
}

export interface Field { offset: number, width: number, kind?: 'bat' }
export interface FormatBase { name: string, bytes: Uint8Array, littleEndian: boolean, fields: Field[], hot: Array<[number, number]>, fix: (r: OverlayReader) => void }

function encode (value: bigint, width: number, le: boolean): Uint8Array {
  const out = new Uint8Array(width)
  let v = BigInt.asUintN(width * 8, value)
  for (let i = 0; i < width; i++) {
    out[le ? i : width - 1 - i] = Number(v & 0xffn)
    v >>= 8n
  }
  return out
}

function interesting (rng: Random, width: number, size: number): bigint {
  const bits = BigInt(width * 8)
  const all = (1n << bits) - 1n
  switch (rng.int(12)) {
    case 0: return 0n
    case 1: return 1n
    case 2: return all
    case 3: return 1n << (bits - 1n)
    case 4: return (1n << (bits - 1n)) - 1n
    case 5: return BigInt(rng.int(17))
    case 6: return 1n << BigInt(rng.int(width * 8))
    case 7: return BigInt(size + rng.int(3) - 1)
    case 8: return BigInt(rng.int(Math.max(1, Math.ceil(size / MiB)) + 2)) * BigInt(MiB)
    case 9: return BigInt(rng.int(2 ** 31)) * 2n + BigInt(rng.int(2))
    case 10: return BigInt(rng.int(65536)) * 512n
    default: return all - BigInt(rng.int(16))
  }
}

/** A BAT entry worth trying: a valid or reserved state with a plausible or hostile offset. */
function batValue (rng: Random, size: number): bigint {
  const states = [0, 1, 2, 3, 4, 5, 6, 7]
  const state = BigInt(states[rng.int(states.length)] as number)
  const mbs = [0, 1, 2, 3, Math.floor(size / MiB) - 1, Math.floor(size / MiB), Math.floor(size / MiB) + 1, 2 ** 44 - 1, rng.int(4096)]
  const mb = BigInt(mbs[rng.int(mbs.length)] as number)
  return (mb << 20n) | (BigInt(rng.int(2)) === 1n ? BigInt(rng.int(1 << 17)) << 3n : 0n) | state
}

/** 1–3 mutations of a base image (fields set to extreme values, bit flips, random bytes, truncation, extension), checksums recomputed for 70 % of inputs. */
export function mutateImage (base: FormatBase, rng: Random): OverlayReader {
  const r = new OverlayReader(base.bytes, base.bytes.length)
  const count = 1 + rng.int(3)
  for (let k = 0; k < count; k++) {
    const roll = rng.next()
    if (roll < 0.4) {
      const f = base.fields[rng.int(base.fields.length)] as Field
      const value = f.kind === 'bat' && rng.next() < 0.6 ? batValue(rng, r.size) : interesting(rng, f.width, r.size)
      r.patches.push({ offset: f.offset, bytes: encode(value, f.width, base.littleEndian) })
    } else if (roll < 0.6) {
      const [s, len] = base.hot[rng.int(base.hot.length)] as [number, number]
      const at = s + rng.int(len)
      const cur = r.view(at, 1)[0] as number
      r.patches.push({ offset: at, bytes: Uint8Array.of(cur ^ (1 << rng.int(8))) })
    } else if (roll < 0.72) {
      const [s, len] = base.hot[rng.int(base.hot.length)] as [number, number]
      const n = 1 + rng.int(32)
      r.patches.push({ offset: s + rng.int(len), bytes: Uint8Array.from({ length: n }, () => rng.int(256)) })
    } else if (roll < 0.82) {
      const edges = base.hot.flatMap(([s, len]) => [s, s + len])
      const pick = rng.next() < 0.5 ? (edges[rng.int(edges.length)] as number) + rng.int(3) - 1 : rng.int(r.size + 1)
      r.size = Math.max(0, Math.min(r.size, pick))
    } else if (roll < 0.88) {
      r.size += 1 + rng.int(2 * MiB)
    } else {
      const n = 1 + rng.int(8)
      r.patches.push({ offset: rng.int(Math.max(1, r.size)), bytes: Uint8Array.from({ length: n }, () => rng.int(256)) })
    }
  }
  if (rng.next() < 0.7) base.fix(r)
  return r
}

// ---- base images and where their fields are

function vhdBase (name: string, img: ReturnType<typeof buildVhd>): FormatBase {
  const { bytes, footerOffset, headerOffset, batOffset } = img
  const fields: Field[] = []
  const footerFields = [[0, 8], [12, 4], [16, 8], [40, 8], [48, 8], [60, 4], [64, 4]] as const
  for (const at of headerOffset >= 0 ? [0, footerOffset] : [footerOffset]) {
    for (const [o, w] of footerFields) fields.push({ offset: at + o, width: w })
  }
  const hot: Array<[number, number]> = [[footerOffset, 512]]
  if (headerOffset >= 0) {
    hot.push([0, 512], [headerOffset, 1024], [batOffset, 64])
    for (const [o, w] of [[0, 8], [16, 8], [24, 4], [28, 4], [32, 4], [36, 4]] as const) fields.push({ offset: headerOffset + o, width: w })
    for (let i = 0; i < 4; i++) {
      const e = headerOffset + 576 + i * 24
      fields.push({ offset: e, width: 4 }, { offset: e + 8, width: 4 }, { offset: e + 16, width: 8 })
    }
    for (let i = 0; i < 16; i++) fields.push({ offset: batOffset + i * 4, width: 4 })
  }
  const fix = (r: OverlayReader): void => {
    const setSum = (at: number, len: number, sumAt: number): void => {
      if (at < 0 || at + len > r.size) return
      const v = r.view(at, len)
      r.patches.push({ offset: at + sumAt, bytes: encode(BigInt(vhdChecksumOf(v, 0, len, sumAt)), 4, false) })
    }
    if (r.size < 512) return
    setSum(r.size - 512, 512, 64)
    setSum(0, 512, 64)
    const footer = r.view(r.size - 512, 512)
    const dataOffset = new DataView(footer.buffer, footer.byteOffset, 512).getBigUint64(16)
    if (dataOffset < BigInt(r.size)) setSum(Number(dataOffset), 1024, 36)
  }
  return { name, bytes, littleEndian: false, fields, hot, fix }
}

function vhdxBase (name: string, img: ReturnType<typeof buildVhdx>): FormatBase {
  const { bytes, metadataOffset: m, batOffset } = img
  const fields: Field[] = [{ offset: 0, width: 8 }]
  for (const h of HEADER_OFFSETS) {
    for (const [o, w] of [[0, 4], [8, 8], [48, 8], [56, 8], [64, 2], [66, 2], [68, 4], [72, 8]] as const) fields.push({ offset: h + o, width: w })
  }
  for (const t of REGION_TABLE_OFFSETS) {
    fields.push({ offset: t, width: 4 }, { offset: t + 8, width: 4 })
    for (let i = 0; i < 3; i++) {
      const e = t + 16 + i * 32
      fields.push({ offset: e, width: 4 }, { offset: e + 16, width: 8 }, { offset: e + 24, width: 4 }, { offset: e + 28, width: 4 })
    }
  }
  fields.push({ offset: m, width: 8 }, { offset: m + 10, width: 2 })
  for (let i = 0; i < 7; i++) {
    const e = m + 32 + i * 32
    fields.push({ offset: e, width: 4 }, { offset: e + 16, width: 4 }, { offset: e + 20, width: 4 }, { offset: e + 24, width: 4 })
  }
  for (const [item, off] of Object.entries(img.items)) {
    const at = m + off
    if (item === 'parentLocator') {
      fields.push({ offset: at, width: 4 }, { offset: at + 18, width: 2 })
      for (let i = 0; i < 4; i++) {
        const e = at + 20 + i * 12
        fields.push({ offset: e, width: 4 }, { offset: e + 4, width: 4 }, { offset: e + 8, width: 2 }, { offset: e + 10, width: 2 })
      }
    } else {
      fields.push({ offset: at, width: 4 }, { offset: at + 4, width: 4 })
    }
  }
  const batFields = Math.min(24, img.batLength / 8)
  for (let i = 0; i < batFields; i++) fields.push({ offset: batOffset + i * 8, width: 8, kind: 'bat' })
  if (img.chunkRatio < 200000) {
    const sb = img.chunkRatio
    fields.push({ offset: batOffset + sb * 8, width: 8, kind: 'bat' })
  }
  const hot: Array<[number, number]> = [
    [0, 16], [HEADER_OFFSETS[0] as number, 96], [HEADER_OFFSETS[1] as number, 96],
    [REGION_TABLE_OFFSETS[0] as number, 128], [REGION_TABLE_OFFSETS[1] as number, 128],
    [m, 32 + 7 * 32], [m + 64 * KiB, 512], [batOffset, 8 * batFields]
  ]
  const fix = (r: OverlayReader): void => {
    for (const [at, len] of [[HEADER_OFFSETS[0], 4 * KiB], [HEADER_OFFSETS[1], 4 * KiB], [REGION_TABLE_OFFSETS[0], 64 * KiB], [REGION_TABLE_OFFSETS[1], 64 * KiB]] as Array<[number, number]>) {
      // Only structures a patch touched need a new CRC (saves most of the CRC work).
      if (at + len > r.size || !r.patches.some(p => p.offset < at + len && p.offset + p.bytes.length > at)) continue
      const v = r.view(at, len)
      r.patches.push({ offset: at + 4, bytes: encode(BigInt(crc32c(v, 0, [4, 8])), 4, true) })
    }
  }
  return { name, bytes, littleEndian: true, fields, hot, fix }
}

/** The base images: three VHD (fixed, dynamic, differencing) and four VHDX. */
export function formatBases (): { vhd: FormatBase[], vhdx: FormatBase[] } {
  return {
    vhd: [
      vhdBase('vhd-fixed', buildVhd({ type: 'fixed', virtualSize: 8 * KiB })),
      vhdBase('vhd-dynamic', buildVhd({ type: 'dynamic', virtualSize: 64 * KiB, blockSize: 4096, allocated: [0, 5, 15] })),
      vhdBase('vhd-differencing', buildVhd({
        type: 'differencing',
        virtualSize: 32 * KiB,
        blockSize: 4096,
        allocated: [2, 3],
        locators: [{ code: 'W2ku', path: 'C:\\base.vhd' }, { code: 'W2ru', path: 'base.vhd' }, { code: 'MacX', path: 'file:///base.vhd' }]
      }))
    ],
    vhdx: [
      vhdxBase('vhdx-dynamic', buildVhdx({ virtualSize: 4 * MiB, blocks: { 0: 6, 1: 2, 3: 6 } })),
      vhdxBase('vhdx-fixed', buildVhdx({ virtualSize: 2 * MiB + 4096, leaveBlocksAllocated: true, logLength: 0, blocks: { 0: 6, 1: 6, 2: 6 } })),
      vhdxBase('vhdx-differencing', buildVhdx({
        virtualSize: 3 * MiB,
        parent: { parent_linkage: '{83ed4a69-0d68-4ae9-8a4c-0e2f5e5f3b1c}', relative_path: 'base.vhdx' },
        blocks: { 0: 7, 2: 6 },
        sectorBitmaps: [0]
      })),
      vhdxBase('vhdx-4k-chunks', buildVhdx({ virtualSize: 17 * 256 * MiB, blockSize: 256 * MiB, logicalSectorSize: 4096, blocks: { 3: 2, 16: 3, 20: 5 } }))
    ]
  }
}
