import assert from 'node:assert/strict'
import { alignRanges, clipRanges, mergeFileRanges, mergeRanges, rangesFromStarts, totalLength } from '../../../common/ranges.ts'
import { isValidBlockSize, validateBlockSize } from '../../../common/block-size.ts'

describe('common/ranges: the one range module', () => {
  it('merges sorted, touching and overlapping ranges into one canonical form, input untouched', () => {
    const input = [{ offset: 10, length: 5 }, { offset: 0, length: 10 }, { offset: 30, length: 0 }, { offset: 40, length: 2 }, { offset: 12, length: 10 }]
    const copy = structuredClone(input)
    assert.deepEqual(mergeRanges(input), [{ offset: 0, length: 22 }, { offset: 40, length: 2 }])
    assert.deepEqual(input, copy)
    assert.throws(() => mergeRanges([{ offset: 1.5, length: 1 }]), { name: 'InvalidRangeError', code: 'ERR_CHANGES_BAD_RANGE' })
  })

  it('merges per file without joining ranges of different files', () => {
    assert.deepEqual(mergeFileRanges([
      { fileId: 1, offset: 0, length: 4 }, { fileId: 0, offset: 4, length: 4 }, { fileId: 0, offset: 0, length: 4 }, { fileId: 1, offset: 8, length: 0 }
    ]), [{ fileId: 0, offset: 0, length: 8 }, { fileId: 1, offset: 0, length: 4 }])
  })

  it('clips to a size keeping order (what a sender reads of a file that shrank)', () => {
    assert.deepEqual(clipRanges([{ offset: 90, length: 20 }, { offset: 0, length: 10 }, { offset: 100, length: 5 }], 100),
      [{ offset: 90, length: 10 }, { offset: 0, length: 10 }])
  })

  it('aligns to blocks, builds from starts, totals', () => {
    assert.deepEqual(alignRanges([{ offset: 5, length: 1 }, { offset: 4100, length: 1 }], 4096, 6000), [{ offset: 0, length: 6000 }])
    assert.deepEqual(rangesFromStarts(Float64Array.from([20, 0, 10]), 10, 25), [{ offset: 0, length: 25 }])
    assert.equal(totalLength([{ offset: 0, length: 3 }, { offset: 9, length: 4 }]), 7)
  })

  it('one block-size rule: powers of two from 4 KiB to 4 MiB', () => {
    for (const ok of [4096, 65536, 4 * 1024 * 1024]) assert.equal(isValidBlockSize(ok), true)
    for (const bad of [2048, 8 * 1024 * 1024, 65537, 3 * 4096, Number.NaN]) assert.equal(isValidBlockSize(bad), false)
    assert.throws(() => validateBlockSize(1000), { name: 'InvalidBlockSizeError', code: 'ERR_CHANGES_BLOCK_SIZE' })
  })
})
