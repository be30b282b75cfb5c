import assert from 'node:assert/strict'
import type { Level } from 'level'
import { DirtyMaps } from '../../../storage/dirty/dirty-maps.ts'
import { SEGMENT_BITS } from '../../../storage/dirty/bitmap.ts'
import { binarySublevel, openBinaryLevel } from '../../../storage/manifest/db.ts'
import type { Range } from '../../../storage/changes/range.ts'
import { tempDb, tempDir, KiB } from './helpers.ts'
import type { TempDir } from './helpers.ts'
import { join } from 'node:path'

const BS = 64 * KiB
const SIZE = 1000 * BS + 123 // last block short
const F = '/vms/web01.vhdx'

const blk = (first: number, count = 1): Range => ({ offset: first * BS, length: count * BS })

async function pending (d: DirtyMaps, target: string, file = F): Promise<Range[]> {
  const out: Range[] = []
  for await (const r of d.pending(target, file)) out.push(r)
  return out
}

describe('dirty/dirty-maps', function () {
  this.timeout(20_000)
  let dir: TempDir
  let db: Level<Uint8Array, Uint8Array>
  let d: DirtyMaps

  beforeEach(async () => {
    dir = await tempDir()
    db = await tempDb(dir.path)
    d = new DirtyMaps({ db: binarySublevel(db, 'dirty') }, { blockSizeBytes: BS })
    await d.open()
  })
  afterEach(async () => { await d.close(); await db.close(); await dir.cleanup() })

  it('marks changes for every registered target, merged across calls', async () => {
    await d.addTarget('hv-b')
    await d.addTarget('hv-c')
    await d.markChanged(F, [blk(5), blk(6), blk(100, 3)], SIZE)
    await d.markChanged(F, [blk(7)], SIZE)
    for (const t of ['hv-b', 'hv-c']) {
      assert.deepEqual(await pending(d, t), [blk(5, 3), blk(100, 3)])
      assert.equal(await d.dirtyBytes(t), 6 * BS)
    }
  })

  it('a new target gets everything; an absent one only what changed meanwhile', async () => {
    await d.addTarget('hv-b')
    await d.markChanged(F, [blk(1)], SIZE)
    await d.inFlight('hv-b', 1, F, [blk(1)])
    await d.acknowledge('hv-b', 1)
    assert.deepEqual(await pending(d, 'hv-b'), [])
    // hv-b goes away for a day; a few blocks change.
    await d.markChanged(F, [blk(10), blk(999)], SIZE)
    await d.addTarget('hv-new')
    assert.deepEqual(await pending(d, 'hv-b'), [blk(10), { offset: 999 * BS, length: BS }])
    assert.deepEqual(await pending(d, 'hv-new'), [{ offset: 0, length: SIZE }])
    assert.equal(await d.dirtyBytes('hv-new'), SIZE, 'the short last block counts short')
    assert.equal(await d.dirtyBytes('hv-b'), BS + BS)
  })

  it('a seeded new target gets only the seeded ranges (e.g. non-zero blocks)', async () => {
    await d.markChanged(F, [], SIZE) // file known, no targets yet
    await d.addTarget('hv-b', () => [blk(3, 2), blk(500)])
    assert.deepEqual(await pending(d, 'hv-b'), [blk(3, 2), blk(500)])
    await d.addTarget('hv-b') // re-adding is a no-op
    assert.deepEqual(await pending(d, 'hv-b'), [blk(3, 2), blk(500)])
  })

  it('acknowledge clears sent blocks, but a block re-dirtied while in flight stays dirty', async () => {
    await d.addTarget('hv-b')
    await d.markChanged(F, [blk(1, 4)], SIZE)
    await d.inFlight('hv-b', 7, F, [blk(1, 4)])
    assert.deepEqual(await pending(d, 'hv-b'), [], 'in flight is not pending')
    assert.equal(await d.inFlightBytes('hv-b'), 4 * BS)
    await d.markChanged(F, [blk(2)], SIZE) // written again after it was read for sending
    await d.acknowledge('hv-b', 7)
    assert.deepEqual(await pending(d, 'hv-b'), [blk(2)])
    assert.equal(await d.inFlightBytes('hv-b'), 0)
    assert.equal(await d.dirtyBytes('hv-b'), BS)
  })

  it('acknowledge is cumulative and leaves later generations in flight', async () => {
    await d.addTarget('t')
    await d.markChanged(F, [blk(0, 30)], SIZE)
    await d.inFlight('t', 1, F, [blk(0, 10)])
    await d.inFlight('t', 2, F, [blk(10, 10)])
    await d.inFlight('t', 3, F, [blk(20, 10)])
    await d.acknowledge('t', 2)
    assert.equal(await d.inFlightBytes('t'), 10 * BS)
    await d.requeue('t')
    assert.deepEqual(await pending(d, 't'), [blk(20, 10)])
  })

  it('requeue puts in-flight blocks back (stream lost)', async () => {
    await d.addTarget('t')
    await d.markChanged(F, [blk(3), blk(SEGMENT_BITS - 1, 2)], 2 * SEGMENT_BITS * BS)
    await d.inFlight('t', 4, F, [blk(3), blk(SEGMENT_BITS - 1, 2)])
    await d.requeue('t')
    assert.deepEqual(await pending(d, 't'), [blk(3), blk(SEGMENT_BITS - 1, 2)], 'runs spanning segments merge')
    assert.equal(await d.inFlightBytes('t'), 0)
  })

  it('persists across reopen; in-flight blocks come back as dirty', async () => {
    await d.addTarget('hv-b')
    await d.addTarget('hv-c')
    await d.markChanged(F, [blk(1), blk(2)], SIZE)
    await d.markChanged('/other', [{ offset: 0, length: 10 }], 10)
    await d.inFlight('hv-b', 1, F, [blk(1)])
    await d.close()
    await db.close()
    db = await openBinaryLevel(join(dir.path, 'db'))
    d = new DirtyMaps({ db: binarySublevel(db, 'dirty') }, { blockSizeBytes: BS })
    await d.open()
    assert.deepEqual(d.targets().sort(), ['hv-b', 'hv-c'])
    assert.deepEqual(d.files().sort((a, b) => a.file.localeCompare(b.file)), [{ file: '/other', fileSize: 10 }, { file: F, fileSize: SIZE }])
    assert.deepEqual(await pending(d, 'hv-b'), [blk(1, 2)])
    assert.deepEqual(await pending(d, 'hv-c'), [blk(1, 2)])
    assert.deepEqual(await pending(d, 'hv-c', '/other'), [{ offset: 0, length: 10 }])
    assert.equal(await d.dirtyBytes('hv-c'), 2 * BS + 10)
  })

  it('a block-size change on reopen marks everything dirty for everyone', async () => {
    await d.addTarget('t')
    await d.markChanged(F, [blk(1)], SIZE)
    await d.close()
    d = new DirtyMaps({ db: binarySublevel(db, 'dirty') }, { blockSizeBytes: 4 * KiB })
    await d.open()
    assert.deepEqual(await pending(d, 't'), [{ offset: 0, length: SIZE }])
  })

  it('shrinking a file clips pending ranges and byte counts', async () => {
    await d.addTarget('t')
    await d.markChanged(F, [blk(0, 1000)], SIZE)
    await d.markChanged(F, [], 10 * BS + 1)
    assert.deepEqual(await pending(d, 't'), [{ offset: 0, length: 10 * BS + 1 }])
    assert.equal(await d.dirtyBytes('t'), 10 * BS + 1)
  })

  it('removeTarget and removeFile forget their bitmaps', async () => {
    await d.addTarget('a')
    await d.addTarget('b')
    await d.markChanged(F, [blk(1)], SIZE)
    await d.markChanged('/g', [blk(1)], SIZE)
    await d.inFlight('a', 1, '/g', [blk(1)])
    await d.removeFile('/g')
    assert.equal(await d.inFlightBytes('a'), 0)
    assert.deepEqual(d.files().map(f => f.file), [F])
    await d.removeTarget('b')
    assert.deepEqual(d.targets(), ['a'])
    await assert.rejects(async () => await pending(d, 'b'), { name: 'UnknownTargetError', code: 'ERR_DIRTY_UNKNOWN_TARGET' })
  })

  it('rejects bad generations and unknown files with typed errors', async () => {
    await d.addTarget('t')
    await assert.rejects(d.inFlight('t', -1, F, []), { code: 'ERR_DIRTY_BAD_GENERATION' })
    await assert.rejects(d.acknowledge('t', 2 ** 32), { code: 'ERR_DIRTY_BAD_GENERATION' })
    await assert.rejects(d.inFlight('t', 1, '/nope', [blk(0)]), { code: 'ERR_DIRTY_UNKNOWN_FILE' })
    await assert.rejects(d.markAll('/nope'), { code: 'ERR_DIRTY_UNKNOWN_FILE' })
  })

  it('a large mark (1 TiB at 64 KiB blocks) touches 512 segments and reads back as one range', async () => {
    const TiB = 1024 ** 4
    await d.addTarget('t')
    await d.markChanged('/big', [{ offset: 0, length: TiB }], TiB)
    assert.deepEqual(await pending(d, 't', '/big'), [{ offset: 0, length: TiB }])
    assert.equal(await d.dirtyBytes('t', '/big'), TiB)
    await d.inFlight('t', 1, '/big', [{ offset: BS, length: TiB - 2 * BS }])
    assert.deepEqual(await pending(d, 't', '/big'), [blk(0), { offset: TiB - BS, length: BS }])
  })
})
