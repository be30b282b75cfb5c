import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { SeededRandom, shuffle } from '../../../common/random.ts'

describe('ManualClock', () => {
  it('fires timers in deadline order and only when advanced', () => {
    const clock = new ManualClock(0)
    const fired: Array<[string, number]> = []
    clock.setTimeout(() => fired.push(['b', clock.now()]), 20)
    clock.setTimeout(() => fired.push(['a', clock.now()]), 10)
    const c = clock.setTimeout(() => fired.push(['c', clock.now()]), 15)
    clock.clearTimeout(c)
    clock.advance(9)
    assert.deepEqual(fired, [])
    clock.advance(11)
    assert.deepEqual(fired, [['a', 10], ['b', 20]])
    assert.equal(clock.now(), 20)
  })

  it('sleep resolves on advanceAsync and rejects on abort', async () => {
    const clock = new ManualClock(0)
    let done = false
    const p = clock.sleep(100).then(() => { done = true })
    await clock.advanceAsync(99)
    assert.equal(done, false)
    await clock.advanceAsync(1)
    await p
    assert.equal(done, true)
    const ac = new AbortController()
    const q = clock.sleep(50, ac.signal)
    ac.abort(new Error('stop'))
    await assert.rejects(q, /stop/)
  })
})

describe('SeededRandom', () => {
  it('replays the same sequence for the same seed and differs across seeds', () => {
    const a = new SeededRandom(42); const b = new SeededRandom(42); const c = new SeededRandom(43)
    const sa = Array.from({ length: 8 }, () => a.next())
    assert.deepEqual(sa, Array.from({ length: 8 }, () => b.next()))
    assert.notDeepEqual(sa, Array.from({ length: 8 }, () => c.next()))
    for (const x of sa) assert.ok(x >= 0 && x < 1)
    assert.deepEqual(shuffle([1, 2, 3, 4, 5], new SeededRandom(1)).sort(), [1, 2, 3, 4, 5])
  })
})
