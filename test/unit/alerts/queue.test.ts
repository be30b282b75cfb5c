import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { SeededRandom } from '../../../common/random.ts'
import { silentLogger } from '../../../daemon/log.ts'
import { SinkQueue } from '../../../daemon/alerts/queue.ts'
import { SinkRejectedError, SinkUnavailableError } from '../../../daemon/alerts/errors.ts'
import type { AlertSink } from '../../../daemon/alerts/sink.ts'
import type { AlertNotice } from '../../../daemon/alerts/types.ts'

const notice = (i: number): AlertNotice => ({ type: 'alert', incident: `a/k${i}/0`, key: `k${i}`, kind: 'host-dead', severity: 'critical', summary: `n${i}`, node: 'a', openedAtMs: 0, atMs: 0 })

/** A sink that is down until `up` is set, recording what it accepted and when it was tried. */
class FlakySink implements AlertSink {
  readonly name = 'flaky'
  readonly type = 'test'
  up = false
  reject = new Set<string>()
  accepted: string[] = []
  attempts: number[] = []
  constructor (private readonly clock: ManualClock) {}
  async send (n: AlertNotice): Promise<void> {
    this.attempts.push(this.clock.now())
    if (this.reject.has(n.key)) throw new SinkRejectedError(this.name, '400')
    if (!this.up) throw new SinkUnavailableError(this.name, 'ECONNREFUSED')
    this.accepted.push(n.key)
  }
}

describe('daemon/alerts/queue: a sink that is down never blocks, and gets its alerts when it returns', () => {
  it('push returns at once while the sink is down; backoff grows exponentially with jitter up to retryMaxMs; delivery in order once up', async () => {
    const clock = new ManualClock(0)
    const sink = new FlakySink(clock)
    const q = new SinkQueue({ clock, random: new SeededRandom(7), log: silentLogger(), sink }, { queueMax: 10, retryMinMs: 1000, retryMaxMs: 16_000 })
    q.start()
    for (let i = 0; i < 3; i++) q.push(notice(i)) // synchronous: nothing awaited
    await clock.advanceAsync(120_000)
    const gaps = sink.attempts.slice(1).map((t, i) => t - (sink.attempts[i] as number))
    assert.ok(gaps.length >= 8)
    for (const [i, g] of gaps.entries()) {
      const base = Math.min(16_000, 1000 * 2 ** i)
      assert.ok(g >= base / 2 && g <= base, `gap ${i} = ${g} not within [${base / 2}, ${base}]`)
    }
    assert.ok(new Set(gaps.slice(5)).size > 1, 'jitter: capped gaps differ')
    assert.deepEqual(sink.accepted, [])
    sink.up = true
    await clock.advanceAsync(16_000)
    assert.deepEqual(sink.accepted, ['k0', 'k1', 'k2'])
    assert.deepEqual({ ...q.stats(), lastError: undefined, lastDeliveredAtMs: undefined }, { sink: 'flaky', type: 'test', queued: 0, delivered: 3, dropped: 0, rejected: 0, failedAttempts: gaps.length + 1, lastError: undefined, lastDeliveredAtMs: undefined })
    await q.stop()
  })

  it('a full queue drops the oldest, counts it, and keeps the newest', async () => {
    const clock = new ManualClock(0)
    const sink = new FlakySink(clock)
    const q = new SinkQueue({ clock, random: new SeededRandom(1), log: silentLogger(), sink }, { queueMax: 5, retryMinMs: 1000, retryMaxMs: 1000 })
    q.start()
    for (let i = 0; i < 12; i++) q.push(notice(i))
    assert.equal(q.stats().queued, 5)
    assert.equal(q.stats().dropped, 7)
    sink.up = true
    await clock.advanceAsync(2000)
    assert.deepEqual(sink.accepted, ['k7', 'k8', 'k9', 'k10', 'k11'])
    await q.stop()
  })

  it('a notice the sink rejects for good is dropped, and the next one goes', async () => {
    const clock = new ManualClock(0)
    const sink = new FlakySink(clock)
    sink.up = true
    sink.reject.add('k0')
    const q = new SinkQueue({ clock, random: new SeededRandom(1), log: silentLogger(), sink }, {})
    q.start()
    q.push(notice(0)); q.push(notice(1))
    await clock.advanceAsync(10)
    assert.deepEqual(sink.accepted, ['k1'])
    assert.equal(q.stats().rejected, 1)
    await q.stop()
  })

  it('stop aborts a retry wait and keeps what is queued', async () => {
    const clock = new ManualClock(0)
    const sink = new FlakySink(clock)
    const q = new SinkQueue({ clock, random: new SeededRandom(1), log: silentLogger(), sink }, { retryMinMs: 60_000 })
    q.start()
    q.push(notice(0))
    await clock.advanceAsync(10)
    await q.stop()
    assert.deepEqual(q.pending().map(n => n.key), ['k0'])
    assert.equal(clock.pendingTimers, 0)
  })

  it('stop does not wait for a send that ignores the abort (an SMTP exchange)', async () => {
    const clock = new ManualClock(0)
    const hung: AlertSink = { name: 'hung', type: 'test', send: async () => await new Promise<void>(() => {}) }
    const q = new SinkQueue({ clock, random: new SeededRandom(1), log: silentLogger(), sink: hung }, {})
    q.start()
    q.push(notice(0))
    await clock.advanceAsync(10)
    const stopped = await Promise.race([q.stop().then(() => 'stopped'), new Promise(resolve => setTimeout(() => { resolve('hung') }, 1000))])
    assert.equal(stopped, 'stopped')
    assert.deepEqual(q.pending().map(n => n.key), ['k0'])
  })
})
