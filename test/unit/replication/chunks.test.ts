import assert from 'node:assert/strict'
import { takeRanges } from '../../../daemon/replication/sender.ts'

const BS = 64 * 1024

describe('replication change-set chunks', () => {
  it('takes the first budget bytes of the ranges, cut at a block boundary', () => {
    const ranges = [{ offset: 0, length: 4 * BS }, { offset: 10 * BS, length: 8 * BS }, { offset: 30 * BS, length: BS }]
    assert.deepEqual(takeRanges(ranges, 6 * BS, BS), { ranges: [{ offset: 0, length: 4 * BS }, { offset: 10 * BS, length: 2 * BS }], bytes: 6 * BS })
    // a budget inside a block rounds up to the block's end
    assert.deepEqual(takeRanges(ranges, 4 * BS + 1, BS).ranges, [{ offset: 0, length: 4 * BS }, { offset: 10 * BS, length: BS }])
    // everything fits
    assert.equal(takeRanges(ranges, 1e9, BS).bytes, 13 * BS)
  })

  it('always takes at least one block', () => {
    assert.deepEqual(takeRanges([{ offset: BS, length: 3 * BS }], 1, BS), { ranges: [{ offset: BS, length: BS }], bytes: BS })
  })
})
