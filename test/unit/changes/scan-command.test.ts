import assert from 'node:assert/strict'
import { join } from 'node:path'
import { writeFile } from 'node:fs/promises'
import { scanFile } from '../../../storage/changes/scan-command.ts'
import { aheadClock, blockContent, tempDir, writeAt, KiB, MiB } from './helpers.ts'
import type { TempDir } from './helpers.ts'

describe('changes/scan-command', function () {
  this.timeout(20_000)
  let dir: TempDir
  beforeEach(async () => { dir = await tempDir() })
  afterEach(async () => { await dir.cleanup() })

  it('prints exactly the documented scan fields; first scan = every non-zero block, then deltas', async () => {
    const file = join(dir.path, 'web01.raw')
    const data = Buffer.alloc(8 * MiB)
    blockContent(MiB, 0).copy(data, 0)
    blockContent(MiB, 1).copy(data, 5 * MiB)
    await writeFile(file, data)
    const state = join(dir.path, 'state', 'nested')
    const clock = aheadClock()
    const first = await scanFile(file, state, { blockSizeBytes: MiB, clock, pool: null })
    assert.deepEqual(Object.keys(first), ['file', 'blockSize', 'scannedBytes', 'changedBlocks', 'changedBytes', 'consistent', 'seconds'])
    assert.deepEqual({ ...first, seconds: 0 }, {
      file, blockSize: MiB, scannedBytes: 8 * MiB, changedBlocks: 2, changedBytes: 2 * MiB, consistent: true, seconds: 0
    })
    assert.equal(typeof first.seconds, 'number')
    const unchanged = await scanFile(file, state, { blockSizeBytes: MiB, clock, pool: null })
    assert.equal(unchanged.scannedBytes, 0)
    assert.equal(unchanged.changedBlocks, 0)
    await writeAt(file, 3 * MiB + 5, Buffer.from([1]))
    await writeAt(file, 5 * MiB, Buffer.alloc(MiB)) // back to zeros: a change too
    const second = await scanFile(file, state, { blockSizeBytes: MiB, clock, pool: null })
    assert.equal(second.changedBlocks, 2)
    assert.equal(second.changedBytes, 2 * MiB)
    assert.equal(second.scannedBytes, 8 * MiB)
  })

  it('defaults to 64 KiB blocks and can borrow a worker pool', async () => {
    const file = join(dir.path, 'a.raw')
    await writeFile(file, Buffer.concat([blockContent(64 * KiB, 1), Buffer.alloc(64 * KiB), Buffer.from('tail')]))
    const r = await scanFile(file, join(dir.path, 's'), { clock: aheadClock(), pool: 'auto', autoPoolBytes: 1 })
    assert.equal(r.blockSize, 64 * KiB)
    assert.equal(r.changedBlocks, 2)
    assert.equal(r.changedBytes, 64 * KiB + 4)
  })

  it('fails with typed errors for a missing file and an unusable state directory', async () => {
    await assert.rejects(scanFile(join(dir.path, 'nope'), join(dir.path, 's')), { code: 'ERR_CHANGES_NOT_A_FILE' })
    const file = join(dir.path, 'f')
    await writeFile(file, 'x')
    await assert.rejects(scanFile(dir.path, join(dir.path, 's')), { code: 'ERR_CHANGES_NOT_A_FILE' })
    await assert.rejects(scanFile(file, join(file, 'under-a-file')), { name: 'ScanStateError', code: 'ERR_SCAN_STATE_UNAVAILABLE' })
    await assert.rejects(scanFile(file, join(dir.path, 's2'), { blockSizeBytes: 1000 }), { code: 'ERR_CHANGES_BLOCK_SIZE' })
  })
})
