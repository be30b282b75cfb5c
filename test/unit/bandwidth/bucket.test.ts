import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { TokenBucket } from '../../../daemon/bandwidth/bucket.ts'
import { CountingClock, startSender, within } from './helpers.ts'

describe('TokenBucket', () => {
  it('completes N bytes at rate R in (N - burst) / R, within 1 %', async () => {
    for (const chunk of [16 * 1024, 64 * 1024, 1024 * 1024]) {
      const clock = new ManualClock(0)
      const rate = 1_000_000
      const bucket = new TokenBucket({ clock }, { rateBytesPerSec: rate })
      assert.equal(bucket.burst, 100_000)
      const total = 160 * 64 * 1024 // ≈ 10.5 MB
      let doneAt = -1
      const run = (async () => {
        for (let sent = 0; sent < total; sent += chunk) await bucket.take(chunk)
        doneAt = clock.now()
      })()
      await clock.advanceAsync(15_000)
      await run
      // the last take is granted when its tokens exist; everything before it was paid for
      const expected = (total - chunk - bucket.burst + Math.min(chunk, bucket.burst)) / rate * 1000
      within(doneAt, expected, 0.01, `finish time with ${chunk}-byte takes`)
    }
  })

  it('holds the rate over any window once the burst is spent', async () => {
    const clock = new ManualClock(0)
    const bucket = new TokenBucket({ clock }, { rateBytesPerSec: 250_000 })
    const s = startSender(clock, bucket, 32 * 1024)
    await clock.advanceAsync(20_000)
    await s.stop()
    let inWindow = 0
    for (const g of s.grants) if (g.at >= 5_000 && g.at < 15_000) inWindow += g.bytes
    within(inWindow, 2_500_000, 0.02, 'bytes in [5 s, 15 s)')
    within(s.sent, 250_000 * 20 + bucket.burst, 0.02, 'bytes in 20 s')
  })

  it('is a zero-overhead pass-through when unlimited', async () => {
    const clock = new CountingClock(0)
    const bucket = new TokenBucket({ clock }, { rateBytesPerSec: Infinity })
    const first = bucket.take(1)
    for (let i = 0; i < 100_000; i++) assert.equal(bucket.take(1 << 20), first)
    await first
    assert.equal(clock.armed, 0)
    assert.equal(bucket.waiting, 0)
    assert.equal(bucket.takenBytes, 1 + 100_000 * (1 << 20))
  })

  it('setRate applies to takes already waiting', async () => {
    const clock = new ManualClock(0)
    const bucket = new TokenBucket({ clock }, { rateBytesPerSec: 100, burstBytes: 1000 })
    await bucket.take(1000) // spends the initial burst
    let at = -1
    const p = bucket.take(1000).then(() => { at = clock.now() })
    await clock.advanceAsync(1000) // 100 tokens earned at the old rate
    assert.equal(at, -1)
    bucket.setRate(900) // 900 more at 900 B/s: one more second, not nine
    await clock.advanceAsync(1500)
    await p
    within(at, 2000, 0.001, 'grant time after setRate')
  })

  it('setRate(Infinity) releases every waiter and a finite rate starts again from a full burst', async () => {
    const clock = new ManualClock(0)
    const bucket = new TokenBucket({ clock }, { rateBytesPerSec: 1000, burstBytes: 1000 })
    await bucket.take(1000)
    const waits = [bucket.take(500), bucket.take(500, { flow: 'x' }), bucket.take(5000)]
    assert.equal(bucket.waiting, 3)
    bucket.setRate(Infinity)
    await Promise.all(waits)
    assert.equal(bucket.waiting, 0)
    bucket.setRate(1000)
    await bucket.take(1000) // full burst
    let done = false
    const p = bucket.take(1000).then(() => { done = true })
    await clock.advanceAsync(999)
    assert.equal(done, false)
    await clock.advanceAsync(1)
    await p
  })

  it('an aborted take rejects with AbortedError and costs nothing', async () => {
    const clock = new ManualClock(0)
    const bucket = new TokenBucket({ clock }, { rateBytesPerSec: 1000, burstBytes: 1000 })
    await bucket.take(1000)
    const ac = new AbortController()
    const aborted = bucket.take(1000, { signal: ac.signal })
    let at = -1
    const next = bucket.take(1000).then(() => { at = clock.now() })
    await clock.advanceAsync(300)
    ac.abort(new Error('stop'))
    await assert.rejects(aborted, (err: Error & { code?: string }) => err.name === 'AbortedError' && err.code === 'ERR_ABORTED')
    await clock.advanceAsync(2000)
    await next
    assert.equal(at, 1000) // as if the aborted take had never queued
    const pre = new AbortController()
    pre.abort()
    await assert.rejects(bucket.take(1, { signal: pre.signal }), { name: 'AbortedError' })
    assert.equal(bucket.waiting, 0)
  })

  it('refuses bad rates and amounts with typed errors', async () => {
    const clock = new ManualClock(0)
    for (const rate of [0, -1, Number.NaN]) {
      assert.throws(() => new TokenBucket({ clock }, { rateBytesPerSec: rate }), { name: 'BandwidthInvalidRateError', code: 'ERR_BANDWIDTH_INVALID_RATE' })
    }
    const bucket = new TokenBucket({ clock }, { rateBytesPerSec: 10 })
    assert.throws(() => { bucket.setRate(0) }, { code: 'ERR_BANDWIDTH_INVALID_RATE' })
    for (const n of [-1, Number.NaN, Infinity]) {
      await assert.rejects(bucket.take(n), { name: 'BandwidthInvalidAmountError', code: 'ERR_BANDWIDTH_INVALID_AMOUNT' })
    }
    await bucket.take(0)
  })

  it('serves flows fairly by bytes: a late flow is not queued behind a backlog', async () => {
    const clock = new ManualClock(0)
    const bucket = new TokenBucket({ clock }, { rateBytesPerSec: 10_000, burstBytes: 1000 })
    await bucket.take(1000)
    const order: string[] = []
    const all: Array<Promise<void>> = []
    for (let i = 0; i < 20; i++) all.push(bucket.take(1000, { flow: 'a' }).then(() => { order.push('a') }))
    await clock.advanceAsync(250) // two of a's takes go
    for (let i = 0; i < 5; i++) all.push(bucket.take(1000, { flow: 'b' }).then(() => { order.push('b') }))
    await clock.advanceAsync(5000)
    await Promise.all(all)
    assert.equal(order.length, 25)
    // b's five takes alternate with a's instead of waiting for a's remaining eighteen
    const lastB = order.lastIndexOf('b')
    assert.ok(lastB <= 13, `b finished at position ${lastB}: ${order.join('')}`)
    // within one flow, FIFO
    let prev = -1
    const stamps: number[] = []
    const fifo = new TokenBucket({ clock }, { rateBytesPerSec: 1000, burstBytes: 100 })
    const ps = [300, 100, 200].map((n, i) => fifo.take(n).then(() => { stamps.push(i) }))
    await clock.advanceAsync(2000)
    await Promise.all(ps)
    for (const s of stamps) { assert.ok(s > prev); prev = s }
  })

  it('a refund returns tokens, capped at the burst', async () => {
    const clock = new ManualClock(0)
    const bucket = new TokenBucket({ clock }, { rateBytesPerSec: 1000, burstBytes: 1000 })
    await bucket.take(1000)
    bucket.refund(400)
    assert.equal(bucket.available(), 400)
    bucket.refund(10_000)
    assert.equal(bucket.available(), 1000)
  })
})
