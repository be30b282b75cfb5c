import assert from 'node:assert/strict'
import { join } from 'node:path'
import { writeFile } from 'node:fs/promises'
import { ReportedRangesSource } from '../../../storage/changes/reported.ts'
import { nodeScanIO } from '../../../storage/changes/file-io.ts'
import type { ChangeSet, ChangeSource } from '../../../storage/changes/source.ts'
import { tempDir, KiB } from './helpers.ts'
import type { TempDir } from './helpers.ts'

const BS = 64 * KiB

describe('changes/reported (a source that is told ranges)', () => {
  let dir: TempDir
  let file: string

  beforeEach(async () => {
    dir = await tempDir()
    file = join(dir.path, 'disk.vhdx')
    await writeFile(file, Buffer.alloc(10 * BS + 5))
  })
  afterEach(async () => { await dir.cleanup() })

  it('without a token answers in full (whole file when there is no fallback)', async () => {
    const src = new ReportedRangesSource({}, { blockSizeBytes: BS })
    src.report(file, [{ offset: 3, length: 1 }])
    const set = await src.changes(file, null)
    assert.equal(set.full, true)
    assert.equal(set.consistent, false)
    assert.deepEqual(set.ranges, [{ offset: 0, length: 10 * BS + 5 }])
  })

  it('returns reported ranges aligned to blocks, then only newer reports', async () => {
    const src = new ReportedRangesSource({}, { blockSizeBytes: BS })
    const t0 = (await src.changes(file, null)).token
    src.report(file, [{ offset: BS + 10, length: 20 }, { offset: 5 * BS - 1, length: 2 }], { consistent: true })
    src.report(file, [{ offset: 10 * BS, length: 5 }], { consistent: true })
    const a = await src.changes(file, t0)
    assert.equal(a.full, false)
    assert.equal(a.consistent, true)
    assert.equal(a.scannedBytes, 0)
    assert.deepEqual(a.ranges, [{ offset: BS, length: BS }, { offset: 4 * BS, length: 2 * BS }, { offset: 10 * BS, length: 5 }])
    const b = await src.changes(file, a.token)
    assert.deepEqual(b.ranges, [])
    src.report(file, [{ offset: 0, length: 1 }]) // not consistent
    const c = await src.changes(file, b.token)
    assert.deepEqual(c.ranges, [{ offset: 0, length: BS }])
    assert.equal(c.consistent, false)
  })

  it('a caller that lost the newest token can ask again with the previous one', async () => {
    const src = new ReportedRangesSource({}, { blockSizeBytes: BS })
    const t0 = (await src.changes(file, null)).token
    src.report(file, [{ offset: 0, length: BS }])
    const t1 = (await src.changes(file, t0)).token
    src.report(file, [{ offset: 2 * BS, length: BS }])
    const retry = await src.changes(file, t0)
    assert.deepEqual(retry.ranges, [{ offset: 0, length: BS }, { offset: 2 * BS, length: BS }])
    assert.equal(retry.full, false)
    void t1
    // Two rounds back is beyond what is kept: a full answer.
    src.report(file, [{ offset: 3 * BS, length: 1 }])
    await src.changes(file, retry.token)
    const stale = await src.changes(file, t0)
    assert.equal(stale.full, true)
  })

  it('delegates a full answer to its fallback source and keeps its own token', async () => {
    const calls: Array<string | null> = []
    const fallback: ChangeSource = {
      changes: async (_f, since): Promise<ChangeSet> => {
        calls.push(since)
        return { ranges: [{ offset: BS, length: BS }], token: 'hs1:x:1:65536', consistent: true, full: true, fileSize: 10 * BS + 5, blockSize: BS, scannedBytes: 99 }
      }
    }
    const src = new ReportedRangesSource({ fallback }, { blockSizeBytes: BS })
    const set = await src.changes(file, 'not-mine')
    assert.deepEqual(calls, [null])
    assert.equal(set.full, true)
    assert.equal(set.scannedBytes, 99)
    assert.match(set.token, /^rr1:/)
    src.report(file, [{ offset: 0, length: 1 }])
    assert.deepEqual((await src.changes(file, set.token)).ranges, [{ offset: 0, length: BS }])
  })

  it('a report made while an answer is being prepared is kept for the next answer', async () => {
    let src: ReportedRangesSource | undefined
    let armed = false
    const io = {
      stat: async (p: string) => {
        if (armed && src !== undefined) { armed = false; src.report(file, [{ offset: 5 * BS, length: 1 }]) }
        return await nodeScanIO.stat(p)
      },
      open: nodeScanIO.open
    }
    src = new ReportedRangesSource({ io }, { blockSizeBytes: BS })
    const t0 = (await src.changes(file, null)).token
    src.report(file, [{ offset: 0, length: 1 }])
    armed = true
    const a = await src.changes(file, t0)
    assert.deepEqual(a.ranges, [{ offset: 0, length: BS }])
    const b = await src.changes(file, a.token)
    assert.deepEqual(b.ranges, [{ offset: 5 * BS, length: BS }])
  })
})
