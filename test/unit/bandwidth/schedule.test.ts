import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { activeWindow, limitAt, nextBoundary } from '../../../daemon/bandwidth/schedule.ts'
import type { BandwidthConfig } from '../../../daemon/bandwidth/schedule.ts'
import { BandwidthService } from '../../../daemon/bandwidth/service.ts'
import type { LimitChange } from '../../../daemon/bandwidth/service.ts'
import { CountingClock, sentBetween, startSender, within } from './helpers.ts'

const MON_FRI = [1, 2, 3, 4, 5]
const MBIT = 1e6 / 8
// local wall-clock instants, so the tests hold in any time zone
const local = (y: number, mo: number, d: number, h = 0, mi = 0, s = 0, ms = 0): number => new Date(y, mo - 1, d, h, mi, s, ms).getTime()
// Monday 2024-01-08 .. Sunday 2024-01-14 (no DST change anywhere that week)

const office: BandwidthConfig = {
  limitBytesPerSec: 100 * MBIT,
  schedule: [{ days: MON_FRI, fromMinute: 8 * 60, toMinute: 18 * 60, limitBytesPerSec: 10 * MBIT }]
}

describe('bandwidth schedule', () => {
  it('a window applies from its first minute up to, not including, its last', () => {
    assert.equal(activeWindow(office.schedule, local(2024, 1, 8, 7, 59, 59, 999)), undefined)
    assert.equal(activeWindow(office.schedule, local(2024, 1, 8, 8, 0)), 0)
    assert.equal(activeWindow(office.schedule, local(2024, 1, 8, 17, 59, 59, 999)), 0)
    assert.equal(activeWindow(office.schedule, local(2024, 1, 8, 18, 0)), undefined)
    assert.equal(activeWindow(office.schedule, local(2024, 1, 13, 12, 0)), undefined) // Saturday
    assert.equal(limitAt(office, local(2024, 1, 12, 9, 0)), 10 * MBIT) // Friday
    assert.equal(limitAt(office, local(2024, 1, 14, 9, 0)), 100 * MBIT) // Sunday
  })

  it('the first matching window wins', () => {
    const cfg: BandwidthConfig = {
      limitBytesPerSec: 1000,
      schedule: [
        { days: [1], fromMinute: 600, toMinute: 660, limitBytesPerSec: 1 },
        { days: MON_FRI, fromMinute: 0, toMinute: 1440, limitBytesPerSec: 2 }
      ]
    }
    assert.equal(limitAt(cfg, local(2024, 1, 8, 10, 30)), 1)
    assert.equal(limitAt(cfg, local(2024, 1, 8, 11, 0)), 2)
    assert.equal(limitAt(cfg, local(2024, 1, 9, 10, 30)), 2)
    assert.equal(limitAt(cfg, local(2024, 1, 13, 10, 30)), 1000)
  })

  it('finds the next boundary, across days, weekends and a window ending at 24:00', () => {
    assert.equal(nextBoundary(office.schedule, local(2024, 1, 8, 7, 0)), local(2024, 1, 8, 8, 0))
    assert.equal(nextBoundary(office.schedule, local(2024, 1, 8, 8, 0)), local(2024, 1, 8, 18, 0))
    assert.equal(nextBoundary(office.schedule, local(2024, 1, 8, 18, 0)), local(2024, 1, 9, 8, 0))
    assert.equal(nextBoundary(office.schedule, local(2024, 1, 12, 18, 30)), local(2024, 1, 15, 8, 0)) // Fri evening → Mon
    const late = [{ days: [0], fromMinute: 22 * 60, toMinute: 1440, limitBytesPerSec: 5 }]
    assert.equal(nextBoundary(late, local(2024, 1, 14, 23, 0)), local(2024, 1, 15, 0, 0))
    assert.equal(nextBoundary(late, local(2024, 1, 15, 0, 0)), local(2024, 1, 21, 22, 0))
    assert.equal(nextBoundary([], local(2024, 1, 8)), undefined)
  })

  it('boundaries stay on local wall times across a DST change', function () {
    const saved = process.env.TZ
    process.env.TZ = 'Europe/Berlin'
    try {
      const sat18 = local(2024, 3, 30, 18, 0)
      const sun08 = local(2024, 3, 31, 8, 0)
      if (sun08 - sat18 !== 13 * 3600_000) this.skip() // runtime cannot switch time zones
      const daily = [{ days: [0, 1, 2, 3, 4, 5, 6], fromMinute: 8 * 60, toMinute: 18 * 60, limitBytesPerSec: 1 }]
      assert.equal(nextBoundary(daily, sat18), sun08)
      assert.equal(activeWindow(daily, sun08 - 1), undefined)
      assert.equal(activeWindow(daily, sun08), 0)
      assert.equal(nextBoundary(daily, sun08), local(2024, 3, 31, 18, 0))
    } finally {
      if (saved === undefined) delete process.env.TZ
      else process.env.TZ = saved
    }
  })

  it('BandwidthService applies mon-fri 08:00–18:00 at 08:00:00 and lifts it at 18:00:00', async () => {
    const clock = new CountingClock(0, local(2024, 1, 8, 7, 59, 30))
    const svc = new BandwidthService({ clock }, { bandwidth: office, peers: [] })
    const changes: Array<LimitChange & { wall: number }> = []
    svc.onLimitChange(c => changes.push({ ...c, wall: clock.wallNow() }))
    await svc.start()
    assert.equal(svc.currentLimit(), 100 * MBIT)
    clock.advance(29_999)
    assert.equal(svc.currentLimit(), 100 * MBIT)
    clock.advance(1)
    assert.equal(clock.wallNow(), local(2024, 1, 8, 8, 0))
    assert.equal(svc.currentLimit(), 10 * MBIT)
    assert.equal(svc.currentWindow(), 0)
    const armedBefore = clock.armed
    clock.advance(10 * 3600_000 - 1)
    assert.equal(svc.currentLimit(), 10 * MBIT)
    clock.advance(1)
    assert.equal(clock.wallNow(), local(2024, 1, 8, 18, 0))
    assert.equal(svc.currentLimit(), 100 * MBIT)
    // one timer per boundary or per maxRecheckMs (60 s) at most: no fast polling
    assert.ok(clock.armed - armedBefore <= 10 * 60 + 2, `${clock.armed - armedBefore} timers in 10 h`)
    assert.deepEqual(changes.map(c => [c.wall, c.limitBytesPerSec, c.window]), [
      [local(2024, 1, 8, 8, 0), 10 * MBIT, 0],
      [local(2024, 1, 8, 18, 0), 100 * MBIT, undefined]
    ])
    // the weekend passes with no window; Monday 08:00 applies again
    clock.advance(local(2024, 1, 15, 8, 0) - clock.wallNow())
    assert.equal(svc.currentLimit(), 10 * MBIT)
    await svc.stop()
    await svc.stop()
    assert.equal(clock.pendingTimers, 0)
  })

  it('the boundary is applied within a second with the default recheck, starting mid-window', async () => {
    const clock = new ManualClock(0, local(2024, 1, 10, 12, 34, 56, 789))
    const svc = new BandwidthService({ clock }, { bandwidth: office, peers: [] })
    assert.equal(svc.currentLimit(), 10 * MBIT) // evaluated at construction too
    await svc.start()
    await svc.start()
    clock.advance(local(2024, 1, 10, 18, 0, 0, 500) - clock.wallNow())
    assert.equal(svc.currentLimit(), 100 * MBIT)
    await svc.stop()
  })

  it('reload changes rates mid-transfer without dropping a waiting take', async () => {
    const clock = new ManualClock(0, local(2024, 1, 13, 12, 0)) // Saturday: base limit
    const bw = (limit: number): BandwidthConfig => ({ limitBytesPerSec: limit, schedule: [] })
    const svc = new BandwidthService({ clock }, { bandwidth: bw(1_000_000), peers: [{ name: 'b', limitBytesPerSec: 500_000 }] })
    await svc.start()
    const a = startSender(clock, svc.limiterFor('a'), 32 * 1024)
    const b = startSender(clock, svc.limiterFor('b'), 32 * 1024)
    await clock.advanceAsync(5000)
    // node 1 MB/s → 3 MB/s; b's own cap 500 kB/s → 2 MB/s
    svc.reload({ bandwidth: bw(3_000_000), peers: [{ name: 'b', limitBytesPerSec: 2_000_000 }] })
    assert.equal(svc.currentLimit(), 3_000_000)
    assert.equal(svc.peerLimit('b'), 2_000_000)
    await clock.advanceAsync(6000)
    await a.stop(); await b.stop()
    within(sentBetween(a, 1000, 5000) + sentBetween(b, 1000, 5000), 4_000_000, 0.03, 'node bytes before reload')
    within(sentBetween(a, 6000, 11_000) + sentBetween(b, 6000, 11_000), 15_000_000, 0.03, 'node bytes after reload')
    within(sentBetween(b, 6000, 11_000), 7_500_000, 0.05, 'b after reload (fair half of 3 MB/s, under its 2 MB/s cap)')
    // a peer dropped from the config keeps working under the node limit only
    svc.reload({ bandwidth: bw(3_000_000), peers: [] })
    assert.equal(svc.peerLimit('b'), Infinity)
    await svc.stop()
  })

  it('reload swaps in a schedule, and refuses bad rates with a typed error', async () => {
    const clock = new ManualClock(0, local(2024, 1, 9, 9, 0)) // Tuesday 09:00
    const svc = new BandwidthService({ clock }, { bandwidth: { limitBytesPerSec: Infinity, schedule: [] }, peers: [] })
    await svc.start()
    assert.equal(svc.currentLimit(), Infinity)
    svc.reload({ bandwidth: office, peers: [] })
    assert.equal(svc.currentLimit(), 10 * MBIT)
    clock.advance(local(2024, 1, 9, 18, 0) - clock.wallNow())
    assert.equal(svc.currentLimit(), 100 * MBIT)
    assert.throws(() => { svc.reload({ bandwidth: { limitBytesPerSec: -5, schedule: [] }, peers: [] }) }, { code: 'ERR_BANDWIDTH_INVALID_RATE' })
    assert.equal(svc.currentLimit(), 100 * MBIT)
    await svc.stop()
  })
})
