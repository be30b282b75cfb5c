import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { BandwidthService } from '../../../daemon/bandwidth/service.ts'
import { throttle } from '../../../daemon/bandwidth/throttle.ts'
import { CountingClock, sentBetween, startSender, within } from './helpers.ts'

const MB = 1_000_000

function service (clock: ManualClock, node: number, peers: Array<{ name: string, limitBytesPerSec?: number }>): BandwidthService {
  return new BandwidthService({ clock }, { bandwidth: { limitBytesPerSec: node, schedule: [] }, peers })
}

describe('BandwidthLimiter (node + peer buckets)', () => {
  it('a send takes from both: the peer limit and the node limit each hold', async () => {
    const clock = new ManualClock(0)
    const svc = service(clock, 1 * MB, [{ name: 'slow', limitBytesPerSec: 0.2 * MB }, { name: 'fast' }])
    const slow = startSender(clock, svc.limiterFor('slow'), 32 * 1024)
    const fast = startSender(clock, svc.limiterFor('fast'), 32 * 1024)
    await clock.advanceAsync(12_000)
    await slow.stop(); await fast.stop()
    // the slow peer gets its own cap; the fast one gets the rest of the node rate, not half of it
    within(sentBetween(slow, 2000, 12_000), 2 * MB, 0.03, 'slow peer bytes over 10 s')
    within(sentBetween(fast, 2000, 12_000), 8 * MB, 0.03, 'fast peer bytes over 10 s')
    within(sentBetween(slow, 2000, 12_000) + sentBetween(fast, 2000, 12_000), 10 * MB, 0.02, 'node bytes over 10 s')
    assert.equal(svc.limiterFor('slow').sentBytes, slow.sent)
  })

  it('peers share the node rate evenly by bytes, whatever their concurrency and take size', async () => {
    const clock = new ManualClock(0)
    const svc = service(clock, 2 * MB, [{ name: 'a' }, { name: 'b' }, { name: 'c' }])
    // a: eight parallel streams of 256 KiB takes; b: one stream of 16 KiB takes; c: one of 64 KiB
    const a = Array.from({ length: 8 }, () => startSender(clock, svc.limiterFor('a'), 256 * 1024))
    const b = startSender(clock, svc.limiterFor('b'), 16 * 1024)
    const c = startSender(clock, svc.limiterFor('c'), 64 * 1024)
    await clock.advanceAsync(12_000)
    for (const s of [...a, b, c]) await s.stop()
    const aBytes = a.reduce((n, s) => n + sentBetween(s, 2000, 12_000), 0)
    const share = 20 * MB / 3
    within(aBytes, share, 0.05, 'peer a')
    within(sentBetween(b, 2000, 12_000), share, 0.05, 'peer b')
    within(sentBetween(c, 2000, 12_000), share, 0.05, 'peer c')
  })

  it('a peer stalled on its own limit does not hold back the others', async () => {
    const clock = new ManualClock(0)
    const svc = service(clock, 1 * MB, [{ name: 'tiny', limitBytesPerSec: 1000 }, { name: 'other' }])
    // tiny spends its 64 KiB burst, then each of its takes waits ~32 s in its own bucket
    const tiny = startSender(clock, svc.limiterFor('tiny'), 32 * 1024)
    const other = startSender(clock, svc.limiterFor('other'), 32 * 1024)
    await clock.advanceAsync(5000)
    await tiny.stop(); await other.stop()
    assert.equal(tiny.sent, 64 * 1024)
    within(sentBetween(other, 1000, 5000), 4 * MB, 0.03, 'other peer bytes')
  })

  it('an abort while waiting on the node bucket gives the peer its tokens back', async () => {
    const clock = new ManualClock(0)
    const peers = [{ name: 'p', limitBytesPerSec: 1000 }]
    const svc = new BandwidthService({ clock }, { bandwidth: { limitBytesPerSec: 1000, schedule: [] }, peers, minBurstBytes: 1000 })
    const limiter = svc.limiterFor('p')
    // another peer drains the node bucket, so p passes its own bucket and then queues at the node
    await svc.limiterFor('q').take(5000)
    const ac = new AbortController()
    const p = limiter.take(1000, { signal: ac.signal })
    await clock.advanceAsync(1)
    ac.abort()
    await assert.rejects(p, { name: 'AbortedError' })
    assert.equal(limiter.sentBytes, 0)
    // with the node unlimited, p's next take is immediate only if its own tokens came back
    svc.reload({ bandwidth: { limitBytesPerSec: Infinity, schedule: [] }, peers })
    let done = false
    const next = limiter.take(1000).then(() => { done = true })
    await new Promise(resolve => setImmediate(resolve))
    assert.equal(done, true)
    await next
  })

  it('a VM limit caps that VM across all its targets; reload can add one', async () => {
    const clock = new ManualClock(0)
    const bandwidth = { limitBytesPerSec: 1 * MB, schedule: [] }
    const peers = [{ name: 'a' }, { name: 'b' }]
    const svc = new BandwidthService({ clock }, { bandwidth, peers, vms: [{ name: 'db', limitBytesPerSec: 0.3 * MB }] })
    const dbA = startSender(clock, svc.limiterFor('a', 'db'), 32 * 1024)
    const dbB = startSender(clock, svc.limiterFor('b', 'db'), 32 * 1024)
    const webA = startSender(clock, svc.limiterFor('a', 'web'), 32 * 1024)
    assert.equal(svc.limiterFor('a', 'db'), svc.limiterFor('a', 'db'))
    assert.equal(svc.limiterFor('a', 'db').rate, 0.3 * MB)
    await clock.advanceAsync(12_000)
    within(sentBetween(dbA, 2000, 12_000) + sentBetween(dbB, 2000, 12_000), 3 * MB, 0.03, 'db over 10 s')
    within(sentBetween(webA, 2000, 12_000), 7 * MB, 0.03, 'web over 10 s')
    svc.reload({ bandwidth, peers, vms: [{ name: 'db', limitBytesPerSec: 0.3 * MB }, { name: 'web', limitBytesPerSec: 0.1 * MB }] })
    assert.equal(svc.vmLimit('web'), 0.1 * MB)
    await clock.advanceAsync(10_000)
    for (const s of [dbA, dbB, webA]) await s.stop()
    within(sentBetween(webA, 14_000, 22_000), 0.8 * MB, 0.05, 'web after its limit was added')
  })

  it('unlimited node and peer: no timers, no waiting', async () => {
    const clock = new CountingClock(0)
    const svc = service(clock, Infinity, [{ name: 'p' }])
    const l = svc.limiterFor('p')
    for (let i = 0; i < 10_000; i++) await l.take(1 << 20)
    assert.equal(clock.armed, 0)
    assert.equal(l.sentBytes, 10_000 * (1 << 20))
    assert.equal(l.rate, Infinity)
  })

  it('throttle() paces a large buffer in chunks', async () => {
    const clock = new ManualClock(0)
    const svc = service(clock, 256 * 1024, [])
    const big = new Uint8Array(1024 * 1024)
    const out: Array<{ at: number, n: number }> = []
    const run = (async () => {
      for await (const piece of throttle([big], svc.limiterFor('p'), { chunkBytes: 32 * 1024 })) out.push({ at: clock.now(), n: piece.byteLength })
    })()
    await clock.advanceAsync(10_000)
    await run
    assert.equal(out.reduce((n, p) => n + p.n, 0), big.byteLength)
    assert.ok(out.every(p => p.n <= 32 * 1024))
    // the first 64 KiB (the burst) leave at once, the rest at 256 KiB/s
    within(out.at(-1)?.at ?? 0, (1024 - 64) / 256 * 1000, 0.01, 'last chunk time')
  })
})
