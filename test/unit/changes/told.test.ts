import assert from 'node:assert/strict'
import { join } from 'node:path'
import { writeFile } from 'node:fs/promises'
import { ToldRangesSource } from '../../../storage/changes/told.ts'
import { nodeScanIO } from '../../../storage/changes/file-io.ts'
import type { ChangeSource } from '../../../storage/changes/source.ts'
import { tempDir, writeAt, KiB } from './helpers.ts'
import { buildVhdx } from '../formats/images.ts'

const MiB = 1024 * KiB
import type { TempDir } from './helpers.ts'

const BS = 64 * KiB

describe('changes/told (a source told ranges between reference points)', () => {
  let dir: TempDir
  let file: string

  beforeEach(async () => {
    dir = await tempDir()
    file = join(dir.path, 'disk.raw')
    await writeFile(file, Buffer.alloc(10 * BS))
  })
  afterEach(async () => { await dir.cleanup() })

  it('answers in full until a chain of reference points has begun, then only what it is told', async () => {
    const src = new ToldRangesSource({}, { blockSizeBytes: BS })
    const a = await src.changes(file, null)
    assert.equal(a.full, true)
    assert.equal(src.lastFullReason(file), 'no-token')
    const b = await src.changes(file, a.token)
    assert.equal(b.full, true, 'nobody tells: a full answer every time, never a silent "nothing changed"')
    assert.equal(src.lastFullReason(file), 'no-chain')
    src.tell(file, { since: null, until: 'rct-1', ranges: [], space: 'file' })
    const c = await src.changes(file, b.token)
    assert.equal(c.full, true)
    assert.equal(src.lastFullReason(file), 'chain-broken')
    src.tell(file, { since: 'rct-1', until: 'rct-2', ranges: [{ offset: BS + 3, length: 10 }], space: 'file', consistent: true })
    src.tell(file, { since: 'rct-2', until: 'rct-3', ranges: [{ offset: 9 * BS, length: BS }], space: 'file', consistent: true })
    const d = await src.changes(file, c.token)
    assert.equal(d.full, false)
    assert.equal(d.consistent, true)
    assert.equal(d.scannedBytes, 0, 'file-space tells need no reading')
    assert.deepEqual(d.ranges, [{ offset: BS, length: BS }, { offset: 9 * BS, length: BS }])
    assert.equal(src.referencePoint(file), 'rct-3')
    assert.equal(src.lastFullReason(file), null)
  })

  it('a gap between reference points (lost RCT id, restarted bitmap) gets a full answer from the fallback', async () => {
    let fallbackCalls = 0
    const fallback: ChangeSource = {
      changes: async () => {
        fallbackCalls++
        return { ranges: [{ offset: 0, length: BS }], token: 'hs1:x:1:65536', consistent: true, full: true, fileSize: 10 * BS, blockSize: BS, scannedBytes: 10 * BS }
      }
    }
    const src = new ToldRangesSource({ fallback }, { blockSizeBytes: BS })
    src.tell(file, { since: null, until: 'p1', ranges: [], space: 'file' })
    const a = await src.changes(file, null)
    src.tell(file, { since: 'p1', until: 'p2', ranges: [{ offset: 0, length: 1 }], space: 'file' })
    const b = await src.changes(file, a.token)
    assert.equal(b.full, false)
    assert.equal(b.consistent, false, 'not told consistent')
    src.tell(file, { since: 'p-other', until: 'p3', ranges: [{ offset: 0, length: 1 }], space: 'file' })
    const c = await src.changes(file, b.token)
    assert.equal(c.full, true)
    assert.match(c.token, /^told1:/, 'the token is ours, not the fallback\'s')
    assert.equal(fallbackCalls, 2)
  })

  it('a consumer that lost the newest token can ask again with the previous one; older is full', async () => {
    const src = new ToldRangesSource({}, { blockSizeBytes: BS })
    src.tell(file, { since: null, until: 'p0', ranges: [], space: 'file' })
    const t0 = (await src.changes(file, null)).token
    src.tell(file, { since: 'p0', until: 'p1', ranges: [{ offset: 0, length: BS }], space: 'file' })
    const t1 = (await src.changes(file, t0)).token
    src.tell(file, { since: 'p1', until: 'p2', ranges: [{ offset: 2 * BS, length: BS }], space: 'file' })
    const retry = await src.changes(file, t0)
    assert.deepEqual(retry.ranges, [{ offset: 0, length: BS }, { offset: 2 * BS, length: BS }])
    assert.equal(retry.full, false)
    assert.equal(retry.token, t1, 'the retry lands on the same position')
    await src.changes(file, retry.token)
    const stale = await src.changes(file, t0) // two rounds back: beyond what is kept
    assert.equal(stale.full, true)
    assert.equal(src.lastFullReason(file), 'unknown-token')
  })

  it('a tell that arrives while an answer is being prepared is kept for the next answer', async () => {
    let src: ToldRangesSource | undefined
    let hooked = false
    const io = {
      stat: async (p: string) => {
        if (!hooked && src !== undefined) { hooked = true; src.tell(file, { since: 'p1', until: 'p2', ranges: [{ offset: 5 * BS, length: 1 }], space: 'file' }) }
        return await nodeScanIO.stat(p)
      },
      open: nodeScanIO.open
    }
    src = new ToldRangesSource({ io }, { blockSizeBytes: BS })
    hooked = true
    src.tell(file, { since: null, until: 'p0', ranges: [], space: 'file' })
    const a = await src.changes(file, null)
    src.tell(file, { since: 'p0', until: 'p1', ranges: [{ offset: 0, length: 1 }], space: 'file' })
    hooked = false
    const b = await src.changes(file, a.token)
    assert.deepEqual(b.ranges, [{ offset: 0, length: BS }])
    const c = await src.changes(file, b.token)
    assert.deepEqual(c.ranges, [{ offset: 5 * BS, length: BS }], 'the tell made during the previous answer')
  })

  it('virtual ranges of a raw file map one to one; growth is conveyed by fileSize', async () => {
    const src = new ToldRangesSource({}, { blockSizeBytes: BS })
    src.tell(file, { since: null, until: 'p0', ranges: [], space: 'virtual' })
    const a = await src.changes(file, null)
    await writeAt(file, 12 * BS, Buffer.alloc(100, 7))
    src.tell(file, { since: 'p0', until: 'p1', ranges: [{ offset: 12 * BS, length: 100 }, { offset: 3 * BS, length: 1 }], space: 'virtual' })
    const b = await src.changes(file, a.token)
    assert.equal(b.full, false)
    assert.equal(b.fileSize, 12 * BS + 100)
    assert.deepEqual(b.ranges, [{ offset: 3 * BS, length: BS }, { offset: 12 * BS, length: 100 }])
  })

  it('virtual ranges into an image it cannot map (damaged VHD) get a full answer', async () => {
    let waits = 0
    const src = new ToldRangesSource({ clock: { sleep: async () => { waits++ } } }, { blockSizeBytes: BS })
    src.tell(file, { since: null, until: 'p0', ranges: [], space: 'virtual' })
    const a = await src.changes(file, null)
    // a VHD footer cookie at the end with a wrong checksum: detected as VHD, fails to parse
    const footer = Buffer.alloc(512)
    footer.write('conectix', 0, 'ascii')
    await writeAt(file, 10 * BS - 512, footer)
    src.tell(file, { since: 'p0', until: 'p1', ranges: [{ offset: 0, length: 1 }], space: 'virtual' })
    const b = await src.changes(file, a.token)
    assert.equal(b.full, true)
    assert.equal(src.lastFullReason(file), 'unmappable')
    assert.equal(waits, 5, 'read again after each of the waits for a metadata update to finish')
    assert.match(src.unmappableDetail(file) ?? '', /checksum/i)
  })

  describe('a VHDX caught in the middle of a metadata update (QEMU sets the log GUID for each BAT update)', () => {
    const vhdx = (logPending: boolean): Uint8Array => buildVhdx({ virtualSize: 8 * MiB, blockSize: MiB, blocks: { 0: 6 }, logPending }).bytes

    it('is read again once the update is over: the answer stays incremental, not a read of the whole disk', async () => {
      await writeFile(file, vhdx(false))
      let waits = 0
      const src = new ToldRangesSource({ clock: { sleep: async () => { if (++waits === 2) await writeFile(file, vhdx(false)) } } }, { blockSizeBytes: BS })
      src.tell(file, { since: null, until: 'p0', ranges: [], space: 'virtual' })
      const a = await src.changes(file, null)
      assert.equal(a.full, true)
      await writeFile(file, vhdx(true))
      src.tell(file, { since: 'p0', until: 'p1', ranges: [{ offset: 4 * KiB, length: 512 }], space: 'virtual' })
      const b = await src.changes(file, a.token)
      assert.equal(waits, 2)
      assert.equal(b.full, false, `not full (${String(src.lastFullReason(file))})`)
      assert.ok(b.ranges.length > 0)
    })

    it('the first full answer waits too: its baseline is taken, so the next answer is incremental', async () => {
      await writeFile(file, vhdx(true))
      let waits = 0
      const src = new ToldRangesSource({ clock: { sleep: async () => { if (++waits === 1) await writeFile(file, vhdx(false)) } } }, { blockSizeBytes: BS })
      src.tell(file, { since: null, until: 'p0', ranges: [], space: 'virtual' })
      const a = await src.changes(file, null)
      assert.equal(a.full, true)
      assert.equal(waits, 1)
      src.tell(file, { since: 'p0', until: 'p1', ranges: [{ offset: 4 * KiB, length: 512 }], space: 'virtual' })
      const b = await src.changes(file, a.token)
      assert.equal(b.full, false, `not full (${String(src.lastFullReason(file))})`)
    })

    it('a log that stays pending: a full answer, and the reason says so', async () => {
      await writeFile(file, vhdx(false))
      let waits = 0
      const src = new ToldRangesSource({ clock: { sleep: async () => { waits++ } } }, { blockSizeBytes: BS })
      src.tell(file, { since: null, until: 'p0', ranges: [], space: 'virtual' })
      const a = await src.changes(file, null)
      await writeFile(file, vhdx(true))
      src.tell(file, { since: 'p0', until: 'p1', ranges: [{ offset: 4 * KiB, length: 512 }], space: 'virtual' })
      const b = await src.changes(file, a.token)
      assert.equal(b.full, true)
      assert.equal(src.lastFullReason(file), 'unmappable')
      assert.match(src.unmappableDetail(file) ?? '', /log is pending/)
      assert.ok(waits >= 5)
    })
  })
})
