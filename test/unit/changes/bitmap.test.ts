import assert from 'node:assert/strict'
import { SEGMENT_BYTES, andNotInto, isEmpty, orInto, popcount, runsOf, setBits, testBit } from '../../../storage/dirty/bitmap.ts'
import { SeededRandom } from '../../../common/random.ts'

describe('dirty/bitmap', () => {
  it('setBits/runsOf/popcount agree with a naive model', () => {
    const rng = new SeededRandom(3)
    for (let round = 0; round < 30; round++) {
      const seg = new Uint8Array(SEGMENT_BYTES)
      const model = new Uint8Array(SEGMENT_BYTES * 8)
      for (let k = 0; k < 20; k++) {
        const a = rng.int(model.length)
        const b = Math.min(model.length, a + rng.int(rng.next() < 0.2 ? 5000 : 40))
        setBits(seg, a, b)
        model.fill(1, a, b)
      }
      let count = 0
      for (let i = 0; i < model.length; i++) { assert.equal(testBit(seg, i), model[i] === 1, `bit ${i}`); count += model[i] as number }
      assert.equal(popcount(seg), count)
      let fromRuns = 0
      let prevEnd = -1
      for (const [s, e] of runsOf(seg)) {
        assert.ok(s > prevEnd, 'runs are separated')
        for (let i = s; i < e; i++) assert.equal(model[i], 1)
        if (s > 0) assert.equal(model[s - 1], 0)
        if (e < model.length) assert.equal(model[e], 0)
        fromRuns += e - s
        prevEnd = e
      }
      assert.equal(fromRuns, count)
    }
  })

  it('orInto / andNotInto / isEmpty', () => {
    const a = new Uint8Array(SEGMENT_BYTES)
    const b = new Uint8Array(SEGMENT_BYTES)
    setBits(a, 0, 100)
    setBits(b, 50, 200)
    orInto(a, b)
    assert.equal(popcount(a), 200)
    andNotInto(a, b)
    assert.equal(popcount(a), 50)
    andNotInto(a, a)
    assert.ok(isEmpty(a))
    assert.deepEqual([...runsOf(new Uint8Array(SEGMENT_BYTES).fill(0xff))], [[0, SEGMENT_BYTES * 8]])
  })
})
