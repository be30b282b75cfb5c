import assert from 'node:assert/strict'
import { BufferReader } from '../../../storage/formats/reader.ts'
import { parseVhdx } from '../../../storage/formats/vhdx.ts'
import { msGuidBytes } from '../../../storage/formats/bytes.ts'
import { GUIDS, HEADER_OFFSETS, REGION_TABLE_OFFSETS, buildVhdx, fixVhdxChecksums, xorByte } from './images.ts'
import type { VhdxImage, VhdxOptions } from './images.ts'

const MiB = 1024 * 1024
const parse = async (bytes: Uint8Array): Promise<Awaited<ReturnType<typeof parseVhdx>>> => await parseVhdx(new BufferReader(bytes))
const rejectsWith = async (bytes: Uint8Array, name: string, code: string): Promise<void> => {
  await assert.rejects(parse(bytes), (err: Error & { code?: string }) => {
    assert.equal(err.name, name, err.message)
    assert.equal(err.code, code)
    return true
  })
}
const dv = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength)

/** 4 MiB dynamic disk, 1 MiB blocks: block 0 present, 1 zero, 3 present. */
function dynamic (extra: Partial<VhdxOptions> = {}): VhdxImage {
  return buildVhdx({ virtualSize: 4 * MiB, blocks: { 0: 6, 1: 2, 3: 6 }, ...extra })
}
/** Byte offset of metadata table entry `i`. */
const mdEntry = (img: VhdxImage, i: number): number => img.metadataOffset + 32 + i * 32
/** Metadata entries in builder order. */
const MD = { fileParameters: 0, virtualDiskSize: 1, page83: 2, logicalSectorSize: 3, physicalSectorSize: 4, parentLocator: 5 }
/** BAT entry `i` (low dword: state | offsetMB << 20). */
const setBat = (img: VhdxImage, i: number, offsetMb: number, state: number): void => {
  dv(img.bytes).setUint32(img.batOffset + i * 8, offsetMb * 2 ** 20 + state, true)
}

describe('VHDX parser', () => {
  describe('valid images', () => {
    it('reads a dynamic VHDX: sizes, block states, scan ranges', async () => {
      const img = dynamic()
      const d = await parse(img.bytes)
      assert.equal(d.format, 'vhdx')
      assert.equal(d.subformat, 'dynamic')
      assert.equal(d.virtualSize, 4 * MiB)
      assert.equal(d.fileSize, img.bytes.length)
      assert.equal(d.blockSize, MiB)
      assert.equal(d.totalBlocks, 4)
      assert.equal(d.allocatedBlocks, 2)
      assert.equal(d.parent, null)
      assert.equal(d.logPending, false)
      assert.equal(d.logicalSectorSize, 512)
      assert.equal(d.physicalSectorSize, 4096)
      assert.deepEqual(d.vhdx?.blockStates, { notPresent: 1, undefined: 0, zero: 1, unmapped: 0, fullyPresent: 2, partiallyPresent: 0 })
      assert.equal(d.vhdx?.currentHeader, 2)
      assert.equal(d.vhdx?.headerSequence, '2')
      assert.equal(d.vhdx?.regionTable, 1)
      assert.equal(d.vhdx?.chunkRatio, 4096)
      assert.equal(d.vhdx?.creator, 'vmesh test builder')
      // header section, log, metadata, BAT, then the two blocks: all contiguous in this layout
      assert.deepEqual(d.scanRanges, [{ offset: 0, length: img.bytes.length }])
      assert.deepEqual(d.warnings, [])
    })

    it('leaves unreferenced space and zero-state blocks out of the scan ranges', async () => {
      const img = dynamic()
      // Move block 3 one MiB further out, leaving a hole where it was.
      const bytes = new Uint8Array(img.bytes.length + MiB)
      bytes.set(img.bytes)
      const old = img.blockOffsets.get(3) as number
      setBat({ ...img, bytes }, 3, old / MiB + 1, 6)
      // Zero-state block 1 keeps reserved space in the hole: its bytes are never read either.
      setBat({ ...img, bytes }, 1, old / MiB, 2)
      const d = await parse(bytes)
      assert.deepEqual(d.scanRanges, [{ offset: 0, length: old }, { offset: old + MiB, length: MiB }])
      assert.equal(d.scanBytes, bytes.length - MiB)
    })

    it('reports a fixed VHDX', async () => {
      const d = await parse(buildVhdx({ virtualSize: 2 * MiB, leaveBlocksAllocated: true, blocks: { 0: 6, 1: 6 } }).bytes)
      assert.equal(d.subformat, 'fixed')
      assert.equal(d.allocatedBlocks, 2)
    })

    it('reads a differencing VHDX: parent locator, partial blocks, sector bitmaps', async () => {
      const img = buildVhdx({
        virtualSize: 3 * MiB,
        parent: {
          parent_linkage: '{83ed4a69-0d68-4ae9-8a4c-0e2f5e5f3b1c}',
          relative_path: '..\\base.vhdx',
          absolute_win32_path: '\\\\?\\C:\\vms\\base.vhdx'
        },
        blocks: { 0: 7, 2: 6 },
        sectorBitmaps: [0]
      })
      const d = await parse(img.bytes)
      assert.equal(d.subformat, 'differencing')
      assert.equal(d.parent, '\\\\?\\C:\\vms\\base.vhdx')
      assert.equal(d.vhdx?.parentLinkage, '{83ed4a69-0d68-4ae9-8a4c-0e2f5e5f3b1c}')
      assert.equal(d.parentLocators.length, 3)
      assert.equal(d.allocatedBlocks, 2)
      assert.equal(d.vhdx?.blockStates.partiallyPresent, 1)
      assert.equal(d.vhdx?.sectorBitmapBlocks, 1)
      assert.equal(d.vhdx?.batEntries, 4097)
    })

    it('maps block indices across chunk boundaries (sector bitmap entries interleaved)', async () => {
      // 256 MiB blocks, 512-byte sectors: chunk ratio 16, so block 16 is BAT entry 17.
      const img = buildVhdx({ virtualSize: 17 * 256 * MiB, blockSize: 256 * MiB, blocks: { 16: 3, 15: 2 } })
      const d = await parse(img.bytes)
      assert.equal(d.vhdx?.chunkRatio, 16)
      assert.equal(d.vhdx?.batEntries, 18)
      assert.equal(d.vhdx?.blockStates.unmapped, 1)
      assert.equal(d.vhdx?.blockStates.zero, 1)
      // The same state in the sector bitmap slot (entry 16) is invalid.
      setBat(img, 16, 0, 3)
      await rejectsWith(img.bytes, 'VhdxBadBatEntryError', 'ERR_VHDX_BAD_BAT_ENTRY')
    })

    it('uses 4096-byte logical sectors in the chunk ratio', async () => {
      const d = await parse(buildVhdx({ virtualSize: 8 * MiB, logicalSectorSize: 4096 }).bytes)
      assert.equal(d.vhdx?.chunkRatio, 32768)
      assert.equal(d.logicalSectorSize, 4096)
    })

    it('accepts the legacy UNMAPPED value 5 and a last block cut short at the virtual end', async () => {
      const img = buildVhdx({ virtualSize: 2 * MiB + 4096, blocks: { 0: 5, 2: 6 } })
      const cut = img.bytes.slice(0, (img.blockOffsets.get(2) as number) + 4096)
      const d = await parse(cut)
      assert.equal(d.vhdx?.blockStates.unmapped, 1)
      assert.equal(d.allocatedBlocks, 1)
    })

    it('reports a pending log and then scans the whole file', async () => {
      const d = await parse(dynamic({ logPending: true }).bytes)
      assert.equal(d.logPending, true)
      assert.deepEqual(d.scanRanges, [{ offset: 0, length: d.fileSize }])
      const gap = await parse(buildVhdx({ virtualSize: 4 * MiB, logPending: true, blocks: {} }).bytes)
      assert.equal(gap.scanBytes, gap.fileSize)
    })

    it('picks the valid header with the higher sequence number', async () => {
      assert.equal((await parse(dynamic({ sequences: [9n, 3n] }).bytes)).vhdx?.currentHeader, 1)
      assert.equal((await parse(dynamic({ sequences: [3n, 9n] }).bytes)).vhdx?.currentHeader, 2)
    })

    it('uses the other header when one is invalid', async () => {
      const img = dynamic({ sequences: [9n, 3n] })
      xorByte(img.bytes, (HEADER_OFFSETS[0] as number) + 200, 1)
      const d = await parse(img.bytes)
      assert.equal(d.vhdx?.currentHeader, 2)
      assert.equal(d.vhdx?.validHeaders, 1)
      assert.equal(d.warnings.length, 1)
    })

    it('accepts two identical headers with the same sequence number', async () => {
      const img = dynamic({ sequences: [4n, 4n] })
      assert.equal((await parse(img.bytes)).vhdx?.currentHeader, 1)
    })

    it('uses region table 2 when table 1 fails its CRC', async () => {
      const img = dynamic()
      xorByte(img.bytes, (REGION_TABLE_OFFSETS[0] as number) + 1000, 0x80)
      const d = await parse(img.bytes)
      assert.equal(d.vhdx?.regionTable, 2)
      assert.equal(d.warnings.length, 1)
      assert.equal(d.allocatedBlocks, 2)
    })
  })

  describe('damaged images', () => {
    it('rejects a file smaller than the header section', async () => {
      await rejectsWith(dynamic().bytes.slice(0, MiB - 1), 'VhdxTruncatedError', 'ERR_VHDX_TRUNCATED')
    })

    it('rejects a bad file identifier', async () => {
      const img = dynamic()
      img.bytes[3] = 0
      await rejectsWith(img.bytes, 'VhdxBadSignatureError', 'ERR_VHDX_BAD_SIGNATURE')
    })

    it('rejects when both headers are invalid', async () => {
      const img = dynamic()
      xorByte(img.bytes, (HEADER_OFFSETS[0] as number) + 8, 1)
      img.bytes[HEADER_OFFSETS[1] as number] = 0
      await rejectsWith(img.bytes, 'VhdxNoValidHeaderError', 'ERR_VHDX_NO_VALID_HEADER')
    })

    it('rejects two different valid headers with the same sequence number', async () => {
      const img = dynamic({ sequences: [4n, 4n] })
      xorByte(img.bytes, (HEADER_OFFSETS[1] as number) + 16, 1) // FileWriteGuid
      fixVhdxChecksums(img.bytes)
      await rejectsWith(img.bytes, 'VhdxHeaderSequenceConflictError', 'ERR_VHDX_HEADER_SEQUENCE_CONFLICT')
    })

    it('rejects an unsupported header version or log version', async () => {
      for (const [field, value] of [[66, 2], [64, 1]] as const) {
        const img = dynamic()
        for (const at of HEADER_OFFSETS) dv(img.bytes).setUint16(at + field, value, true)
        fixVhdxChecksums(img.bytes)
        await rejectsWith(img.bytes, 'VhdxUnsupportedVersionError', 'ERR_VHDX_UNSUPPORTED_VERSION')
      }
    })

    it('rejects a misaligned or out-of-range log', async () => {
      const setLog = (offset: bigint, length: number): Uint8Array => {
        const img = dynamic()
        for (const at of HEADER_OFFSETS) {
          dv(img.bytes).setBigUint64(at + 72, offset, true)
          dv(img.bytes).setUint32(at + 68, length, true)
        }
        fixVhdxChecksums(img.bytes)
        return img.bytes
      }
      await rejectsWith(setLog(BigInt(MiB + 4096), MiB), 'VhdxBadAlignmentError', 'ERR_VHDX_BAD_ALIGNMENT')
      await rejectsWith(setLog(BigInt(MiB), 4096), 'VhdxBadAlignmentError', 'ERR_VHDX_BAD_ALIGNMENT')
      await rejectsWith(setLog(BigInt(64 * MiB), MiB), 'VhdxOffsetOutOfRangeError', 'ERR_VHDX_OFFSET_OUT_OF_RANGE')
      await rejectsWith(setLog(0n, MiB), 'VhdxOffsetOutOfRangeError', 'ERR_VHDX_OFFSET_OUT_OF_RANGE')
      await rejectsWith(setLog(1n << 62n, MiB), 'VhdxOffsetOutOfRangeError', 'ERR_VHDX_OFFSET_OUT_OF_RANGE')
      // Log overlapping the metadata region
      await rejectsWith(setLog(BigInt(MiB), 2 * MiB), 'VhdxRegionOverlapError', 'ERR_VHDX_REGION_OVERLAP')
    })

    it('rejects when both region tables fail their CRC', async () => {
      const img = dynamic()
      for (const at of REGION_TABLE_OFFSETS) xorByte(img.bytes, at + 1000, 0x80)
      await rejectsWith(img.bytes, 'VhdxBadChecksumError', 'ERR_VHDX_BAD_CHECKSUM')
    })

    it('rejects region tables with a bad signature or too many entries', async () => {
      const sig = dynamic()
      for (const at of REGION_TABLE_OFFSETS) sig.bytes[at] = 0x52
      await rejectsWith(sig.bytes, 'VhdxBadSignatureError', 'ERR_VHDX_BAD_SIGNATURE')
      const many = dynamic()
      for (const at of REGION_TABLE_OFFSETS) dv(many.bytes).setUint32(at + 8, 2048, true)
      fixVhdxChecksums(many.bytes)
      await rejectsWith(many.bytes, 'VhdxTooManyEntriesError', 'ERR_VHDX_TOO_MANY_ENTRIES')
    })

    /** Edits region entry `i` (0 = BAT, 1 = metadata) in both tables and fixes the CRCs. */
    const editRegion = (img: VhdxImage, i: number, edit: (v: DataView, e: number) => void): Uint8Array => {
      for (const at of REGION_TABLE_OFFSETS) edit(dv(img.bytes), at + 16 + i * 32)
      fixVhdxChecksums(img.bytes)
      return img.bytes
    }

    it('rejects misaligned, out-of-range and overlapping regions', async () => {
      await rejectsWith(editRegion(dynamic(), 0, (v, e) => v.setBigUint64(e + 16, BigInt(3 * MiB + 512), true)), 'VhdxBadAlignmentError', 'ERR_VHDX_BAD_ALIGNMENT')
      await rejectsWith(editRegion(dynamic(), 1, (v, e) => v.setUint32(e + 24, MiB + 1, true)), 'VhdxBadAlignmentError', 'ERR_VHDX_BAD_ALIGNMENT')
      await rejectsWith(editRegion(dynamic(), 0, (v, e) => v.setBigUint64(e + 16, BigInt(512 * MiB), true)), 'VhdxOffsetOutOfRangeError', 'ERR_VHDX_OFFSET_OUT_OF_RANGE')
      await rejectsWith(editRegion(dynamic(), 0, (v, e) => v.setBigUint64(e + 16, 0n, true)), 'VhdxOffsetOutOfRangeError', 'ERR_VHDX_OFFSET_OUT_OF_RANGE')
      await rejectsWith(editRegion(dynamic(), 0, (v, e) => v.setBigUint64(e + 16, 0xfff0_0000_0000_0000n, true)), 'VhdxOffsetOutOfRangeError', 'ERR_VHDX_OFFSET_OUT_OF_RANGE')
      const img = dynamic()
      await rejectsWith(editRegion(img, 0, (v, e) => v.setBigUint64(e + 16, BigInt(img.metadataOffset), true)), 'VhdxRegionOverlapError', 'ERR_VHDX_REGION_OVERLAP')
    })

    it('rejects a missing or duplicated BAT / metadata region', async () => {
      await rejectsWith(editRegion(dynamic(), 0, (v, e) => { v.setUint8(e, 0); v.setUint32(e + 28, 0, true) }), 'VhdxMissingRegionError', 'ERR_VHDX_MISSING_REGION')
      await rejectsWith(editRegion(dynamic(), 1, (v, e) => { new Uint8Array(v.buffer).set(msGuidBytes(GUIDS.bat), e) }), 'VhdxDuplicateRegionError', 'ERR_VHDX_DUPLICATE_REGION')
      const oneEntry = editRegion(dynamic(), 0, () => {})
      for (const at of REGION_TABLE_OFFSETS) dv(oneEntry).setUint32(at + 8, 1, true)
      fixVhdxChecksums(oneEntry)
      await rejectsWith(oneEntry, 'VhdxMissingRegionError', 'ERR_VHDX_MISSING_REGION')
    })

    it('rejects an unknown region marked required, accepts an optional one', async () => {
      const addThird = (required: number): Uint8Array => {
        const img = dynamic()
        return editRegion(img, 2, (v, e) => {
          new Uint8Array(v.buffer).set(msGuidBytes('11111111-2222-3333-4444-555555555555'), e)
          v.setUint32(e - 2 * 32 - 8, 3, true) // entry count lives at table + 8 = entry0 - 8
          v.setBigUint64(e + 16, BigInt(img.bytes.length - MiB), true)
          v.setUint32(e + 24, 0, true)
          v.setUint32(e + 28, required, true)
        })
      }
      await rejectsWith(addThird(1), 'VhdxUnknownRequiredRegionError', 'ERR_VHDX_UNKNOWN_REQUIRED_REGION')
      assert.equal((await parse(addThird(0))).allocatedBlocks, 2)
    })

    it('rejects a bad metadata table', async () => {
      const sig = dynamic()
      sig.bytes[sig.metadataOffset] = 0
      await rejectsWith(sig.bytes, 'VhdxBadSignatureError', 'ERR_VHDX_BAD_SIGNATURE')
      const many = dynamic()
      dv(many.bytes).setUint16(many.metadataOffset + 10, 2048, true)
      await rejectsWith(many.bytes, 'VhdxTooManyEntriesError', 'ERR_VHDX_TOO_MANY_ENTRIES')
      const missing = dynamic()
      dv(missing.bytes).setUint16(missing.metadataOffset + 10, 4, true) // drops physical sector size
      await rejectsWith(missing.bytes, 'VhdxMissingMetadataError', 'ERR_VHDX_MISSING_METADATA')
    })

    it('rejects metadata items that are malformed or out of range', async () => {
      const wrongLength = dynamic()
      dv(wrongLength.bytes).setUint32(mdEntry(wrongLength, MD.virtualDiskSize) + 20, 4, true)
      await rejectsWith(wrongLength.bytes, 'VhdxBadMetadataError', 'ERR_VHDX_BAD_METADATA')
      const dup = dynamic()
      dup.bytes.copyWithin(mdEntry(dup, MD.page83), mdEntry(dup, MD.virtualDiskSize), mdEntry(dup, MD.virtualDiskSize) + 16)
      await rejectsWith(dup.bytes, 'VhdxBadMetadataError', 'ERR_VHDX_BAD_METADATA')
      const far = dynamic()
      dv(far.bytes).setUint32(mdEntry(far, MD.page83) + 16, MiB - 8, true)
      await rejectsWith(far.bytes, 'VhdxOffsetOutOfRangeError', 'ERR_VHDX_OFFSET_OUT_OF_RANGE')
      const inTable = dynamic()
      dv(inTable.bytes).setUint32(mdEntry(inTable, MD.page83) + 16, 1024, true)
      await rejectsWith(inTable.bytes, 'VhdxOffsetOutOfRangeError', 'ERR_VHDX_OFFSET_OUT_OF_RANGE')
      const unknown = dynamic()
      xorByte(unknown.bytes, mdEntry(unknown, MD.page83), 0xff)
      await rejectsWith(unknown.bytes, 'VhdxUnknownRequiredMetadataError', 'ERR_VHDX_UNKNOWN_REQUIRED_METADATA')
    })

    it('rejects bad block sizes, sector sizes and virtual sizes', async () => {
      const item = (img: VhdxImage, name: string): number => img.metadataOffset + (img.items[name] as number)
      for (const bs of [3 * MiB, 512 * 1024, 512 * MiB, 0]) {
        const img = dynamic()
        dv(img.bytes).setUint32(item(img, 'fileParameters'), bs, true)
        await rejectsWith(img.bytes, 'VhdxBadBlockSizeError', 'ERR_VHDX_BAD_BLOCK_SIZE')
      }
      for (const name of ['logicalSectorSize', 'physicalSectorSize']) {
        const img = dynamic()
        dv(img.bytes).setUint32(item(img, name), 1024, true)
        await rejectsWith(img.bytes, 'VhdxBadSectorSizeError', 'ERR_VHDX_BAD_SECTOR_SIZE')
      }
      for (const vs of [65n * 1024n ** 4n, 4n * 1024n * 1024n + 100n, 0xffffffffffffffffn]) {
        const img = dynamic()
        dv(img.bytes).setBigUint64(item(img, 'virtualDiskSize'), vs, true)
        await rejectsWith(img.bytes, 'VhdxBadVirtualSizeError', 'ERR_VHDX_BAD_VIRTUAL_SIZE')
      }
    })

    it('rejects a BAT region too small for the virtual size', async () => {
      const img = dynamic()
      // 1 MiB of BAT holds 131072 entries: 200000 one-MiB blocks need more.
      dv(img.bytes).setBigUint64(img.metadataOffset + (img.items.virtualDiskSize as number), 200000n * BigInt(MiB), true)
      await rejectsWith(img.bytes, 'VhdxBatTooSmallError', 'ERR_VHDX_BAT_TOO_SMALL')
    })

    it('rejects BAT entries out of range, overlapping, or in reserved/invalid states', async () => {
      const past = dynamic()
      setBat(past, 0, past.bytes.length / MiB, 6)
      await rejectsWith(past.bytes, 'VhdxOffsetOutOfRangeError', 'ERR_VHDX_OFFSET_OUT_OF_RANGE')
      const huge = dynamic()
      dv(huge.bytes).setUint32(huge.batOffset + 4, 0xffffffff, true)
      await rejectsWith(huge.bytes, 'VhdxOffsetOutOfRangeError', 'ERR_VHDX_OFFSET_OUT_OF_RANGE')
      const inHeader = dynamic()
      setBat(inHeader, 0, 0, 6)
      await rejectsWith(inHeader.bytes, 'VhdxOffsetOutOfRangeError', 'ERR_VHDX_OFFSET_OUT_OF_RANGE')
      const overlap = dynamic()
      setBat(overlap, 0, overlap.metadataOffset / MiB, 6)
      await rejectsWith(overlap.bytes, 'VhdxRegionOverlapError', 'ERR_VHDX_REGION_OVERLAP')
      const reserved = dynamic()
      setBat(reserved, 1, 0, 4)
      await rejectsWith(reserved.bytes, 'VhdxBadBatEntryError', 'ERR_VHDX_BAD_BAT_ENTRY')
      const partial = dynamic()
      setBat(partial, 0, (partial.blockOffsets.get(0) as number) / MiB, 7)
      await rejectsWith(partial.bytes, 'VhdxBadBatEntryError', 'ERR_VHDX_BAD_BAT_ENTRY')
      // A sector bitmap entry (slot 4096, after a full chunk) present in a non-differencing disk
      const full = buildVhdx({ virtualSize: 4097 * MiB })
      setBat(full, 4096, 0, 6)
      await rejectsWith(full.bytes, 'VhdxBadBatEntryError', 'ERR_VHDX_BAD_BAT_ENTRY')
    })

    it('rejects a differencing disk with a bad parent locator', async () => {
      const base = { virtualSize: MiB, blocks: {} }
      const img = buildVhdx({ ...base, parent: { relative_path: 'x.vhdx' } })
      await rejectsWith(img.bytes, 'VhdxBadParentLocatorError', 'ERR_VHDX_BAD_PARENT_LOCATOR')
      const type = buildVhdx({ ...base, parent: { parent_linkage: '{x}' } })
      xorByte(type.bytes, type.metadataOffset + (type.items.parentLocator as number), 1)
      await rejectsWith(type.bytes, 'VhdxBadParentLocatorError', 'ERR_VHDX_BAD_PARENT_LOCATOR')
      const off = buildVhdx({ ...base, parent: { parent_linkage: '{x}' } })
      dv(off.bytes).setUint32(off.metadataOffset + (off.items.parentLocator as number) + 20, 5000, true)
      await rejectsWith(off.bytes, 'VhdxBadParentLocatorError', 'ERR_VHDX_BAD_PARENT_LOCATOR')
      const count = buildVhdx({ ...base, parent: { parent_linkage: '{x}' } })
      dv(count.bytes).setUint16(count.metadataOffset + (count.items.parentLocator as number) + 18, 60000, true)
      await rejectsWith(count.bytes, 'VhdxBadParentLocatorError', 'ERR_VHDX_BAD_PARENT_LOCATOR')
      const missing = buildVhdx({ ...base, parent: { parent_linkage: '{x}' } })
      dv(missing.bytes).setUint16(missing.metadataOffset + 10, 5, true)
      await rejectsWith(missing.bytes, 'VhdxMissingMetadataError', 'ERR_VHDX_MISSING_METADATA')
    })

    it('rejects a file truncated through its blocks', async () => {
      const img = dynamic()
      await rejectsWith(img.bytes.slice(0, img.bytes.length - 4096), 'VhdxOffsetOutOfRangeError', 'ERR_VHDX_OFFSET_OUT_OF_RANGE')
      // cut inside the BAT region: the region itself is now out of range
      await rejectsWith(img.bytes.slice(0, img.batOffset + 4096), 'VhdxOffsetOutOfRangeError', 'ERR_VHDX_OFFSET_OUT_OF_RANGE')
    })
  })
})
