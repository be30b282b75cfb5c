/**
 * Probe round trips in the detector's member view, and the late ack: an ack that arrives after
 * its probe failed is reported (event + count) with its round trip, so a log or status can tell a
 * slow peer from a lost message.
 */
import assert from 'node:assert/strict'
import { SeededRandom } from '../../../common/random.ts'
import { Detector } from '../../../daemon/membership/detector.ts'
import { PROFILES } from '../../../config/profiles.ts'
import type { Output } from '../../../daemon/membership/detector.ts'
import type { Ping } from '../../../protocol/membership/messages.ts'
import { ProbeRtt } from '../../../daemon/membership/probe-rtt.ts'

const T = PROFILES.wan.detector

function pings (out: Output, to: string): Ping[] {
  return out.send.filter(s => s.to === to && s.msg.type === 'ping').map(s => s.msg as Ping)
}

describe('membership: probe round trips and late acks', function () {
  it('records the round trip of each direct ack; an ack after the probe failed is late, counted and reported', function () {
    // two members: no intermediaries, so a probe fails at the end of its interval
    const det = new Detector({ self: 'a', peers: ['a', 'b'], timings: T, random: new SeededRandom(3), now: 0 })
    const first = only(pings(det.tick(0), 'b'))
    det.step(120, 'b', { type: 'ack', seq: first.seq, incarnation: 1, piggyback: [] })
    let view = det.members().find(m => m.id === 'b')
    assert.equal(view?.state, 'alive')
    assert.deepEqual(view?.probeRtt, { samples: 1, lastMs: 120, p50Ms: 120, p99Ms: 120, maxMs: 120, lateAcks: 0 })

    // the next round's probe goes unanswered past its interval: suspect
    let t = 120
    let probe: Ping | undefined
    for (; t < 10_000 && probe === undefined; t += 10) probe = pings(det.tick(t), 'b')[0]
    assert.ok(probe !== undefined, 'no second probe')
    const sentAt = t - 10
    let suspected = false
    for (; t < sentAt + T.probeIntervalMs + 100 && !suspected; t += 10) {
      suspected = det.tick(t).events.some(e => e.type === 'member' && e.state === 'suspect')
    }
    assert.ok(suspected, 'the unanswered probe did not suspect b')
    const late = det.step(sentAt + 2600, 'b', { type: 'ack', seq: probe.seq, incarnation: 1, piggyback: [] })
    assert.deepEqual(late.events.filter(e => e.type === 'late-ack'), [{ type: 'late-ack', id: 'b', rttMs: 2600 }])
    view = det.members().find(m => m.id === 'b')
    assert.equal(view?.probeRtt?.lateAcks, 1)
    assert.equal(view?.probeRtt?.lastLateMs, 2600)
    assert.equal(view?.probeRtt?.samples, 1, 'a late ack is not an in-time sample')
  })

  it('percentiles over the kept window; max since start', function () {
    const r = new ProbeRtt()
    assert.equal(r.view(), undefined)
    for (let i = 1; i <= 100; i++) r.onAck(i)
    const v = r.view()
    assert.equal(v?.p50Ms, 51)
    assert.equal(v?.p99Ms, 100)
    assert.equal(v?.maxMs, 100)
    assert.equal(v?.lastMs, 100)
  })
})

function only<T> (xs: T[]): T {
  assert.equal(xs.length, 1, `expected exactly one, got ${xs.length}`)
  return xs[0] as T
}

describe('membership: a probe begun while the member was dead', function () {
  it('does not suspect the member that came alive before the probe ran out; the next probe tests it', function () {
    // b probes a while a is still down (the ping goes nowhere); a starts 1.5 s later and pings b
    const det = new Detector({ self: 'b', peers: ['a', 'b'], timings: T, random: new SeededRandom(3), now: 0 })
    assert.equal(pings(det.tick(0), 'a').length, 1)
    const up = det.step(1500, 'a', { type: 'ping', seq: 1, incarnation: 1, piggyback: [] })
    assert.ok(up.events.some(e => e.type === 'member' && e.id === 'a' && e.state === 'alive'))
    let next: Ping | undefined
    for (let t = 1600; t <= T.probeIntervalMs + 100; t += 100) {
      const out = det.tick(t)
      assert.deepEqual(out.events.filter(e => e.type === 'member'), [], `at ${t}`)
      next ??= pings(out, 'a')[0]
    }
    assert.equal(det.members().find(m => m.id === 'a')?.state, 'alive')
    // the next probe of a, begun while a is alive, does accuse it when unanswered
    let t = T.probeIntervalMs + 100
    for (; next === undefined && t < 3 * T.probeIntervalMs; t += 100) next = pings(det.tick(t), 'a')[0]
    assert.ok(next !== undefined, 'a was not probed again')
    let suspected = false
    for (const end = t + T.probeIntervalMs + 200; t < end && !suspected; t += 100) suspected = det.tick(t).events.some(e => e.type === 'member' && e.state === 'suspect')
    assert.ok(suspected, 'an unanswered probe of a live member must suspect it')
  })
})
