import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  dataRanges, dataRangesForFile, formatInspectText, inspect, openDisk
} from '../../../storage/formats/index.ts'
import { BufferReader } from '../../../storage/formats/reader.ts'
import { parseDisk } from '../../../storage/formats/open.ts'
import { buildVhd, buildVhdx } from './images.ts'

const MiB = 1024 * 1024

describe('openDisk / dataRangesForFile / inspect', () => {
  let dir = ''
  const file = async (name: string, bytes: Uint8Array): Promise<string> => {
    const p = join(dir, name)
    await writeFile(p, bytes)
    return p
  }

  before(async () => { dir = await mkdtemp(join(tmpdir(), 'vmesh-formats-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('detects and opens a VHD and a VHDX from files', async () => {
    const vhd = await openDisk(await file('d.vhd', buildVhd({ type: 'dynamic', virtualSize: 16384, allocated: [1] }).bytes))
    assert.equal(vhd.format, 'vhd')
    assert.equal(vhd.file, join(dir, 'd.vhd'))
    assert.equal(vhd.allocatedBlocks, 1)
    const vhdx = await openDisk(await file('d.vhdx', buildVhdx({ virtualSize: 2 * MiB, blocks: { 1: 6 } }).bytes))
    assert.equal(vhdx.format, 'vhdx')
    assert.equal(vhdx.allocatedBlocks, 1)
  })

  it('rejects unknown, damaged and missing files with typed errors carrying the path', async () => {
    const text = await file('notes.txt', new TextEncoder().encode('hello, not a disk\n'.repeat(100)))
    await assert.rejects(openDisk(text), (err: Error & { code?: string, file?: string }) => {
      assert.equal(err.name, 'UnknownFormatError')
      assert.equal(err.code, 'ERR_FORMAT_UNKNOWN')
      assert.equal(err.file, text)
      return true
    })
    const img = buildVhdx({ virtualSize: MiB })
    img.bytes[64 * 1024] = 0
    img.bytes[128 * 1024] = 0
    const bad = await file('bad.vhdx', img.bytes)
    await assert.rejects(openDisk(bad), { name: 'VhdxNoValidHeaderError', code: 'ERR_VHDX_NO_VALID_HEADER', file: bad })
    await assert.rejects(openDisk(join(dir, 'missing.vhdx')), { name: 'DiskIoError', code: 'ERR_FORMAT_IO' })
    await assert.rejects(openDisk(dir), { name: 'DiskIoError', code: 'ERR_FORMAT_IO' })
  })

  it('aborts with AbortedError', async () => {
    const p = await file('a.vhdx', buildVhdx({ virtualSize: MiB }).bytes)
    const ac = new AbortController()
    ac.abort()
    await assert.rejects(openDisk(p, { signal: ac.signal }), { name: 'AbortedError', code: 'ERR_ABORTED' })
    await assert.rejects(dataRangesForFile(p, { signal: ac.signal }), { name: 'AbortedError', code: 'ERR_ABORTED' })
  })

  it('gives scan ranges: the parsed ones for an image, the whole file for raw or damaged files', async () => {
    const img = buildVhdx({ virtualSize: 4 * MiB, blocks: { 0: 2, 2: 6 } })
    const bytes = new Uint8Array(img.bytes.length + 3 * MiB) // slack at the end is never read
    bytes.set(img.bytes)
    const good = await dataRangesForFile(await file('g.vhdx', bytes))
    assert.equal(good.format, 'vhdx')
    assert.equal(good.error, null)
    assert.deepEqual(good.ranges, [{ offset: 0, length: img.bytes.length }])
    assert.deepEqual(good.ranges, dataRanges(good.info as NonNullable<typeof good.info>))

    const raw = await dataRangesForFile(await file('raw.img', new Uint8Array(5000)))
    assert.equal(raw.format, 'raw')
    assert.equal(raw.error?.code, 'ERR_FORMAT_UNKNOWN')
    assert.deepEqual(raw.ranges, [{ offset: 0, length: 5000 }])

    const empty = await dataRangesForFile(await file('empty.img', new Uint8Array(0)))
    assert.deepEqual(empty.ranges, [])
    assert.equal(empty.fileSize, 0)

    const broken = buildVhd({ type: 'dynamic', virtualSize: 8192 })
    broken.bytes[broken.headerOffset] = 0
    const dmg = await dataRangesForFile(await file('dmg.vhd', broken.bytes))
    assert.equal(dmg.format, 'raw')
    assert.equal(dmg.error?.name, 'VhdBadDynamicHeaderCookieError')
    assert.deepEqual(dmg.ranges, [{ offset: 0, length: broken.bytes.length }])

    await assert.rejects(dataRangesForFile(join(dir, 'nope')), { name: 'DiskIoError' })
  })

  it('dataRanges returns a copy the caller may change', async () => {
    const info = await openDisk(await file('c.vhdx', buildVhdx({ virtualSize: MiB }).bytes))
    const r = dataRanges(info)
    ;(r[0] as { length: number }).length = 1
    assert.notEqual(info.scanRanges[0]?.length, 1)
  })

  it('inspect returns the documented JSON shape and a readable text form', async () => {
    const p = await file('i.vhdx', buildVhdx({ virtualSize: 4 * MiB, blocks: { 0: 6, 1: 6, 2: 2 } }).bytes)
    const r = await inspect(p)
    const json = JSON.parse(JSON.stringify(r)) as Record<string, unknown>
    const required: Record<string, string> = {
      file: 'string', format: 'string', subformat: 'string', virtualSize: 'number', fileSize: 'number',
      blockSize: 'number', allocatedBlocks: 'number', logPending: 'boolean'
    }
    for (const [k, t] of Object.entries(required)) assert.equal(typeof json[k], t, k)
    assert.ok('parent' in json && json.parent === null)
    assert.equal(json.file, p)
    assert.equal(json.format, 'vhdx')
    assert.equal(json.subformat, 'dynamic')
    assert.equal(json.virtualSize, 4 * MiB)
    assert.equal(json.blockSize, MiB)
    assert.equal(json.allocatedBlocks, 2)
    assert.equal('scanRanges' in json, false)
    assert.equal(json.scanRangeCount, 1)

    const text = formatInspectText(r)
    assert.match(text, /vhdx \(dynamic\)/)
    assert.match(text, /2 of 4 allocated/)
    assert.match(text, /4 MiB \(4194304 bytes\)/)

    const vhdText = formatInspectText(await inspect(await file('f.vhd', buildVhd({ type: 'fixed', virtualSize: 4096 }).bytes)))
    assert.match(vhdText, /vhd \(fixed\)/)
  })

  it('resolves files carrying both signatures without ever skipping guest data', async () => {
    // A fixed VHD whose guest disk holds a raw VHDX image at LBA 0.
    const inner = buildVhdx({ virtualSize: 4 * MiB, blocks: { 0: 2 } }).bytes
    const outer = buildVhd({ type: 'fixed', virtualSize: inner.length + 4 * MiB })
    outer.bytes.set(inner, 0)
    const asVhd = await parseDisk(new BufferReader(outer.bytes))
    assert.equal(asVhd.format, 'vhd')
    assert.equal(asVhd.subformat, 'fixed')
    assert.equal(asVhd.scanBytes, outer.bytes.length)

    // A VHDX whose last bytes happen to look like a VHD footer (guest data in its last block).
    const vhdx = buildVhdx({ virtualSize: 4 * MiB, blocks: { 3: 6 } })
    const tail = buildVhd({ type: 'dynamic', virtualSize: 4096 })
    vhdx.bytes.set(tail.bytes.subarray(tail.footerOffset), vhdx.bytes.length - 512)
    const bytes = new Uint8Array(vhdx.bytes.length + 8 * MiB) // unreferenced slack would normally be skipped…
    bytes.set(vhdx.bytes)
    bytes.set(tail.bytes.subarray(tail.footerOffset), bytes.length - 512) // …but the tail looks like a VHD
    const asVhdx = await parseDisk(new BufferReader(bytes))
    assert.equal(asVhdx.format, 'vhdx')
    assert.deepEqual(asVhdx.scanRanges, [{ offset: 0, length: bytes.length }])
    assert.equal(asVhdx.warnings.length, 1)
  })
})
