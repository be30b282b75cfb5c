import assert from 'node:assert/strict'
import { BlockRuns, alignRanges, mergeRanges, totalBytes, validateBlockSize } from '../../../storage/changes/range.ts'
import { SeededRandom } from '../../../common/random.ts'

describe('changes/range', () => {
  it('accepts powers of two from 4 KiB to 4 MiB and rejects the rest with a typed error', () => {
    for (const ok of [4096, 65536, 1 << 20, 4 << 20]) assert.equal(validateBlockSize(ok), ok)
    for (const bad of [0, 2048, 4095, 65535, 100_000, 8 << 20, -65536, 1.5, Number.NaN]) {
      assert.throws(() => validateBlockSize(bad), (e: Error & { code?: string }) => e.name === 'InvalidBlockSizeError' && e.code === 'ERR_CHANGES_BLOCK_SIZE')
    }
  })

  it('merges overlapping and adjacent ranges and drops empty ones', () => {
    assert.deepEqual(mergeRanges([{ offset: 10, length: 5 }, { offset: 0, length: 10 }, { offset: 30, length: 0 }, { offset: 12, length: 10 }]),
      [{ offset: 0, length: 22 }])
    assert.deepEqual(mergeRanges([{ offset: 0, length: 1 }, { offset: 2, length: 1 }]), [{ offset: 0, length: 1 }, { offset: 2, length: 1 }])
    assert.throws(() => mergeRanges([{ offset: -1, length: 3 }]), { code: 'ERR_CHANGES_BAD_RANGE' })
  })

  it('aligns ranges to whole blocks clipped to the file size', () => {
    assert.deepEqual(alignRanges([{ offset: 100, length: 10 }, { offset: 4096 * 3 - 1, length: 2 }], 4096, 4096 * 3 + 500),
      [{ offset: 0, length: 4096 }, { offset: 8192, length: 4096 + 500 }])
  })

  it('BlockRuns stays within its run budget by coarsening and never loses a block', () => {
    const rng = new SeededRandom(7)
    const runs = new BlockRuns(64)
    const marked: number[] = []
    let b = 0
    for (let i = 0; i < 5000; i++) { b += 1 + rng.int(20); marked.push(b); runs.add(b) }
    assert.ok(runs.runCount <= 64, `runs ${runs.runCount}`)
    assert.ok(runs.grain > 1)
    const ranges = runs.toRanges(1, Number.MAX_SAFE_INTEGER)
    for (const m of marked) assert.ok(ranges.some(r => m >= r.offset && m < r.offset + r.length), `block ${m} lost`)
    assert.ok(totalBytes(ranges) >= marked.length)
  })

  it('BlockRuns.union merges two ordered sets', () => {
    const a = new BlockRuns(); a.add(0, 2); a.add(10, 12)
    const b = new BlockRuns(); b.add(1, 4); b.add(20)
    a.union(b)
    assert.deepEqual(a.runs(), [[0, 4], [10, 12], [20, 21]])
    assert.equal(a.blocks(), 7)
    assert.throws(() => { a.add(5) }, { code: 'ERR_CHANGES_BAD_RANGE' })
  })
})
