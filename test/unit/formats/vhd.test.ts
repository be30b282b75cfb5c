import assert from 'node:assert/strict'
import { BufferReader } from '../../../storage/formats/reader.ts'
import { parseVhd } from '../../../storage/formats/vhd.ts'
import { detectFormat } from '../../../storage/formats/open.ts'
import { buildVhd, fixVhdChecksums, xorByte } from './images.ts'
import type { VhdImage } from './images.ts'

const parse = async (bytes: Uint8Array): Promise<Awaited<ReturnType<typeof parseVhd>>> => await parseVhd(new BufferReader(bytes))
const rejectsWith = async (bytes: Uint8Array, name: string, code: string): Promise<void> => {
  await assert.rejects(parse(bytes), (err: Error & { code?: string }) => {
    assert.equal(err.name, name)
    assert.equal(err.code, code)
    return true
  })
}
const dv = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength)

function dynamic (extra: Partial<Parameters<typeof buildVhd>[0]> = {}): VhdImage {
  return buildVhd({ type: 'dynamic', virtualSize: 64 * 1024, blockSize: 4096, allocated: [0, 3, 15], ...extra })
}
function differencing (): VhdImage {
  return buildVhd({
    type: 'differencing',
    virtualSize: 32 * 1024,
    blockSize: 4096,
    allocated: [1],
    parentName: 'base.vhd',
    locators: [{ code: 'W2ru', path: '.\\base.vhd' }, { code: 'W2ku', path: 'C:\\vms\\base.vhd' }, { code: 'MacX', path: 'file:///vms/base.vhd' }]
  })
}

describe('VHD parser', () => {
  describe('valid images', () => {
    it('reads a fixed VHD', async () => {
      const img = buildVhd({ type: 'fixed', virtualSize: 8192 })
      const d = await parse(img.bytes)
      assert.equal(d.format, 'vhd')
      assert.equal(d.subformat, 'fixed')
      assert.equal(d.virtualSize, 8192)
      assert.equal(d.fileSize, 8192 + 512)
      assert.equal(d.blockSize, 0)
      assert.equal(d.allocatedBlocks, 0)
      assert.equal(d.parent, null)
      assert.equal(d.logPending, false)
      assert.deepEqual(d.scanRanges, [{ offset: 0, length: 8704 }])
      assert.equal(d.vhd?.footerSource, 'end')
      assert.equal(d.vhd?.creatorApp, 'win ')
      assert.deepEqual(d.warnings, [])
    })

    it('reads a dynamic VHD and counts allocated blocks', async () => {
      const img = dynamic()
      const d = await parse(img.bytes)
      assert.equal(d.subformat, 'dynamic')
      assert.equal(d.virtualSize, 65536)
      assert.equal(d.blockSize, 4096)
      assert.equal(d.totalBlocks, 16)
      assert.equal(d.allocatedBlocks, 3)
      assert.equal(d.vhd?.batOffset, 1536)
      assert.equal(d.vhd?.maxTableEntries, 16)
      assert.equal(d.scanBytes, img.bytes.length)
      assert.deepEqual(d.warnings, [])
    })

    it('reads a differencing VHD with its parent locators', async () => {
      const d = await parse(differencing().bytes)
      assert.equal(d.subformat, 'differencing')
      assert.equal(d.parent, 'C:\\vms\\base.vhd')
      assert.deepEqual(d.parentLocators, [
        { kind: 'W2ru', path: '.\\base.vhd' },
        { kind: 'W2ku', path: 'C:\\vms\\base.vhd' },
        { kind: 'MacX', path: 'file:///vms/base.vhd' }
      ])
      assert.equal(d.vhd?.parentUniqueId, 'a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf')
      assert.equal(d.allocatedBlocks, 1)
    })

    it('falls back to the parent name when there are no locators', async () => {
      const d = await parse(buildVhd({ type: 'differencing', virtualSize: 4096, parentName: 'p.vhd' }).bytes)
      assert.equal(d.parent, 'p.vhd')
    })

    it('uses the footer copy at offset 0 when the end footer is damaged', async () => {
      const img = dynamic()
      xorByte(img.bytes, img.footerOffset + 100, 0xff)
      const d = await parse(img.bytes)
      assert.equal(d.vhd?.footerSource, 'copy')
      assert.equal(d.allocatedBlocks, 3)
      assert.equal(d.warnings.length, 1)
    })

    it('warns when the footer copy differs from the footer', async () => {
      const img = dynamic()
      img.bytes[84] = 1 // saved state in the copy only
      fixVhdChecksums(img.bytes)
      const d = await parse(img.bytes)
      assert.equal(d.vhd?.footerSource, 'end')
      assert.equal(d.warnings.length, 1)
    })

    it('ignores allocated entries past the virtual size in the count but still bounds-checks them', async () => {
      const img = buildVhd({ type: 'dynamic', virtualSize: 8192, blockSize: 4096, maxTableEntries: 4, allocated: [0, 3] })
      const d = await parse(img.bytes)
      assert.equal(d.allocatedBlocks, 1)
      dv(img.bytes).setUint32(img.batOffset + 12, 0x7fffffff)
      await rejectsWith(img.bytes, 'VhdOffsetOutOfRangeError', 'ERR_VHD_OFFSET_OUT_OF_RANGE')
    })
  })

  describe('damaged images', () => {
    it('rejects a file shorter than a footer', async () => {
      await rejectsWith(new Uint8Array(100), 'VhdTruncatedError', 'ERR_VHD_TRUNCATED')
    })

    it('rejects a missing cookie (and detection calls it unknown)', async () => {
      const img = buildVhd({ type: 'fixed', virtualSize: 4096 })
      img.bytes[img.footerOffset] = 0x43
      await rejectsWith(img.bytes, 'VhdBadCookieError', 'ERR_VHD_BAD_COOKIE')
      await assert.rejects(detectFormat(new BufferReader(img.bytes)), { name: 'UnknownFormatError', code: 'ERR_FORMAT_UNKNOWN' })
    })

    it('rejects a bad footer checksum', async () => {
      const img = buildVhd({ type: 'fixed', virtualSize: 4096 })
      xorByte(img.bytes, img.footerOffset + 40, 1)
      await rejectsWith(img.bytes, 'VhdBadChecksumError', 'ERR_VHD_BAD_CHECKSUM')
    })

    it('rejects when both footers of a dynamic disk are damaged', async () => {
      const img = dynamic()
      xorByte(img.bytes, img.footerOffset + 100, 0xff)
      xorByte(img.bytes, 100, 0xff)
      await rejectsWith(img.bytes, 'VhdBadChecksumError', 'ERR_VHD_BAD_CHECKSUM')
    })

    it('does not fall back to a copy describing a fixed disk', async () => {
      const img = dynamic()
      dv(img.bytes).setUint32(60, 2)
      fixVhdChecksums(img.bytes)
      xorByte(img.bytes, img.footerOffset + 100, 0xff)
      await rejectsWith(img.bytes, 'VhdBadChecksumError', 'ERR_VHD_BAD_CHECKSUM')
    })

    it('rejects an unsupported disk type', async () => {
      const img = buildVhd({ type: 'fixed', virtualSize: 4096 })
      dv(img.bytes).setUint32(img.footerOffset + 60, 5)
      fixVhdChecksums(img.bytes)
      await rejectsWith(img.bytes, 'VhdUnsupportedDiskTypeError', 'ERR_VHD_UNSUPPORTED_DISK_TYPE')
    })

    it('rejects an unsupported footer version', async () => {
      const img = buildVhd({ type: 'fixed', virtualSize: 4096 })
      dv(img.bytes).setUint32(img.footerOffset + 12, 0x00020000)
      fixVhdChecksums(img.bytes)
      await rejectsWith(img.bytes, 'VhdUnsupportedVersionError', 'ERR_VHD_UNSUPPORTED_VERSION')
    })

    it('rejects a current size beyond 2^53', async () => {
      const img = buildVhd({ type: 'fixed', virtualSize: 4096 })
      dv(img.bytes).setBigUint64(img.footerOffset + 48, 1n << 60n)
      fixVhdChecksums(img.bytes)
      await rejectsWith(img.bytes, 'VhdSizeOutOfRangeError', 'ERR_VHD_SIZE_OUT_OF_RANGE')
    })

    it('rejects a fixed disk whose data is truncated', async () => {
      const img = buildVhd({ type: 'fixed', virtualSize: 8192 })
      const cut = new Uint8Array(4096 + 512)
      cut.set(img.bytes.subarray(img.footerOffset), 4096)
      await rejectsWith(cut, 'VhdTruncatedError', 'ERR_VHD_TRUNCATED')
    })

    it('rejects a dynamic header offset past the end', async () => {
      const img = dynamic()
      dv(img.bytes).setBigUint64(img.footerOffset + 16, BigInt(img.bytes.length))
      fixVhdChecksums(img.bytes)
      await rejectsWith(img.bytes, 'VhdOffsetOutOfRangeError', 'ERR_VHD_OFFSET_OUT_OF_RANGE')
      dv(img.bytes).setBigUint64(img.footerOffset + 16, 0xffffffffffffff00n)
      fixVhdChecksums(img.bytes)
      await rejectsWith(img.bytes, 'VhdOffsetOutOfRangeError', 'ERR_VHD_OFFSET_OUT_OF_RANGE')
    })

    it('rejects a bad dynamic header cookie', async () => {
      const img = dynamic()
      img.bytes[img.headerOffset] = 0
      await rejectsWith(img.bytes, 'VhdBadDynamicHeaderCookieError', 'ERR_VHD_BAD_DYNAMIC_HEADER_COOKIE')
    })

    it('rejects a bad dynamic header checksum', async () => {
      const img = dynamic()
      xorByte(img.bytes, img.headerOffset + 700, 4)
      await rejectsWith(img.bytes, 'VhdBadChecksumError', 'ERR_VHD_BAD_CHECKSUM')
    })

    it('rejects a block size that is not a power of two', async () => {
      const img = dynamic()
      dv(img.bytes).setUint32(img.headerOffset + 32, 3 * 4096)
      fixVhdChecksums(img.bytes)
      await rejectsWith(img.bytes, 'VhdBadBlockSizeError', 'ERR_VHD_BAD_BLOCK_SIZE')
      dv(img.bytes).setUint32(img.headerOffset + 32, 256)
      fixVhdChecksums(img.bytes)
      await rejectsWith(img.bytes, 'VhdBadBlockSizeError', 'ERR_VHD_BAD_BLOCK_SIZE')
    })

    it('rejects a BAT that does not cover the disk', async () => {
      const img = dynamic()
      dv(img.bytes).setUint32(img.headerOffset + 28, 15)
      fixVhdChecksums(img.bytes)
      await rejectsWith(img.bytes, 'VhdBatTooSmallError', 'ERR_VHD_BAT_TOO_SMALL')
    })

    it('rejects a BAT that runs past the end without allocating it', async () => {
      const img = dynamic()
      dv(img.bytes).setUint32(img.headerOffset + 28, 0xffffffff)
      fixVhdChecksums(img.bytes)
      await rejectsWith(img.bytes, 'VhdOffsetOutOfRangeError', 'ERR_VHD_OFFSET_OUT_OF_RANGE')
      const img2 = dynamic()
      dv(img2.bytes).setBigUint64(img2.headerOffset + 16, BigInt(img2.footerOffset - 16))
      fixVhdChecksums(img2.bytes)
      await rejectsWith(img2.bytes, 'VhdOffsetOutOfRangeError', 'ERR_VHD_OFFSET_OUT_OF_RANGE')
    })

    it('rejects a BAT entry pointing past the data area', async () => {
      const img = dynamic()
      dv(img.bytes).setUint32(img.batOffset + 4, Math.floor(img.footerOffset / 512))
      await rejectsWith(img.bytes, 'VhdOffsetOutOfRangeError', 'ERR_VHD_OFFSET_OUT_OF_RANGE')
      const img2 = dynamic()
      dv(img2.bytes).setUint32(img2.batOffset + 4, 0)
      await rejectsWith(img2.bytes, 'VhdOffsetOutOfRangeError', 'ERR_VHD_OFFSET_OUT_OF_RANGE')
    })

    it('rejects a dynamic disk cut short (blocks past the end)', async () => {
      const img = dynamic()
      const cut = img.bytes.slice(0, img.bytes.length - 4096)
      await rejectsWith(cut, 'VhdOffsetOutOfRangeError', 'ERR_VHD_OFFSET_OUT_OF_RANGE')
    })

    it('rejects malformed parent locators', async () => {
      const long = differencing()
      dv(long.bytes).setUint32(long.headerOffset + 576 + 8, 1 << 20)
      fixVhdChecksums(long.bytes)
      await rejectsWith(long.bytes, 'VhdBadParentLocatorError', 'ERR_VHD_BAD_PARENT_LOCATOR')

      const far = differencing()
      dv(far.bytes).setBigUint64(far.headerOffset + 576 + 16, BigInt(far.footerOffset))
      fixVhdChecksums(far.bytes)
      await rejectsWith(far.bytes, 'VhdOffsetOutOfRangeError', 'ERR_VHD_OFFSET_OUT_OF_RANGE')

      const odd = differencing()
      dv(odd.bytes).setUint32(odd.headerOffset + 576 + 8, 3)
      fixVhdChecksums(odd.bytes)
      await rejectsWith(odd.bytes, 'VhdBadParentLocatorError', 'ERR_VHD_BAD_PARENT_LOCATOR')

      const surrogate = differencing()
      const at = surrogate.locatorOffsets[1] as number
      surrogate.bytes[at] = 0x00; surrogate.bytes[at + 1] = 0xd8 // lone high surrogate
      surrogate.bytes[at + 2] = 0x41; surrogate.bytes[at + 3] = 0x00
      await rejectsWith(surrogate.bytes, 'VhdBadParentLocatorError', 'ERR_VHD_BAD_PARENT_LOCATOR')
    })
  })
})
