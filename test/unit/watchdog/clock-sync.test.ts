import assert from 'node:assert/strict'
import { ClockSync } from '../../../daemon/watchdog/clock-sync.ts'
import { SeededRandom } from '../../../common/random.ts'

describe('watchdog/clock-sync', () => {
  it('the translated deadline is never later than the true one, and at most one round trip early', () => {
    const rnd = new SeededRandom(7)
    for (let trial = 0; trial < 200; trial++) {
      const trueOffset = (rnd.next() - 0.5) * 1e9
      const s = new ClockSync()
      let minRtt = Infinity
      let t = rnd.next() * 1e6
      for (let i = 0; i < 1 + rnd.int(5); i++) {
        const up = rnd.next() * 50; const down = rnd.next() * 50
        const t0 = t; const w = t0 + up + trueOffset; const t1 = t0 + up + down
        minRtt = Math.min(minRtt, up + down)
        assert.equal(s.add(t0, w, t1), true)
        t = t1 + rnd.next() * 1000
      }
      const deadline = t + 3500
      const wdDeadline = s.toWatchdog(deadline)
      const trueWd = deadline + trueOffset
      assert.ok(wdDeadline <= trueWd + 1e-6, `late by ${wdDeadline - trueWd}`)
      assert.ok(trueWd - wdDeadline <= minRtt + 1e-6, `early by ${trueWd - wdDeadline} > rtt ${minRtt}`)
      assert.ok(s.uncertainty <= minRtt + 1e-6)
      assert.ok(Math.abs(s.toLocal(s.toWatchdog(deadline)) - deadline) < 1e-6)
    }
  })

  it('samples that contradict each other (clocks not sharing a rate) reset to the newest', () => {
    const s = new ClockSync()
    assert.equal(s.synced, false)
    assert.equal(s.add(0, 1000, 2), true)
    assert.equal(s.offset, 998)
    assert.equal(s.add(10, 5000, 11), false)
    assert.equal(s.offset, 4989)
    assert.equal(s.add(5, Number.NaN, 6), false)
    assert.equal(s.add(6, 1, 5), false, 't1 before t0')
  })
})
