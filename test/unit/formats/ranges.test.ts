import assert from 'node:assert/strict'
import { NumberList, mergeRanges, rangesFromStarts, totalLength } from '../../../storage/formats/ranges.ts'
import { findOverlap } from '../../../storage/formats/vhdx-bat.ts'

describe('byte ranges', () => {
  it('merges overlapping and touching ranges, clips, drops empties', () => {
    assert.deepEqual(mergeRanges([
      { offset: 50, length: 10 }, { offset: 0, length: 10 }, { offset: 10, length: 5 },
      { offset: 55, length: 100 }, { offset: 30, length: 0 }, { offset: -5, length: 3 }
    ], 120), [{ offset: 0, length: 15 }, { offset: 50, length: 70 }])
    assert.deepEqual(mergeRanges([]), [])
  })

  it('builds merged ranges from unsorted block starts', () => {
    const starts = Float64Array.from([30, 10, 0, 50, 20])
    assert.deepEqual(rangesFromStarts(starts, 10, 55), [{ offset: 0, length: 40 }, { offset: 50, length: 5 }])
    assert.equal(totalLength(rangesFromStarts(starts, 10, 55)), 45)
    assert.deepEqual(Array.from(starts), [30, 10, 0, 50, 20]) // input untouched
  })

  it('grows a NumberList past its initial capacity', () => {
    const l = new NumberList(2)
    for (let i = 0; i < 100; i++) l.push(i * 3)
    assert.equal(l.length, 100)
    assert.equal(l.values()[99], 297)
    assert.equal(l.values().length, 100)
  })

  it('finds overlaps among sorted disjoint extents', () => {
    const ext = [{ name: 'a', offset: 0, length: 10 }, { name: 'b', offset: 20, length: 10 }, { name: 'c', offset: 40, length: 5 }]
    assert.equal(findOverlap(ext, 10, 10), null)
    assert.equal(findOverlap(ext, 9, 1)?.name, 'a')
    assert.equal(findOverlap(ext, 15, 6)?.name, 'b')
    assert.equal(findOverlap(ext, 29, 100)?.name, 'c')
    assert.equal(findOverlap(ext, 30, 10), null)
    assert.equal(findOverlap(ext, 45, 10), null)
    assert.equal(findOverlap([], 0, 10), null)
  })
})
