/**
 * The detector fed by hand, one message at a time, on virtual time. Cluster behaviour (many
 * detectors on the simulated network) is in detector-cluster.test.ts.
 */
import assert from 'node:assert/strict'
import { SeededRandom } from '../../../common/random.ts'
import { Detector } from '../../../daemon/membership/detector.ts'
import { PROFILES } from '../../../config/profiles.ts'
import type { DetectorTimings, Output } from '../../../daemon/membership/detector.ts'
import { Suspicion, suspicionTimeout } from '../../../daemon/membership/suspicion.ts'
import { GossipQueue } from '../../../daemon/membership/gossip.ts'
import { expectedConfirmations, retransmitLimit } from '../../../daemon/membership/timings.ts'
import type { Ack, Nack, Ping, PingReq, SwimMessage } from '../../../protocol/membership/messages.ts'

const PEERS = ['b', 'c', 'd', 'e']

/**
 * The LAN profile with round 500/200 ms probes, so the expected instants below read as
 * arithmetic; the state machine's rules do not depend on the values. The shipped values
 * themselves run in the simulations (detector-cluster.test.ts, test/sim/membership).
 */
const ROUND_TIMINGS: DetectorTimings = { ...PROFILES.lan.detector, probeIntervalMs: 500, probeTimeoutMs: 200 }

function make (timings: DetectorTimings = ROUND_TIMINGS, incarnation?: number): Detector {
  return new Detector({ self: 'a', peers: ['a', ...PEERS], timings, random: new SeededRandom(11), now: 0, ...(incarnation !== undefined ? { incarnation } : {}) })
}

function sent<T extends SwimMessage['type']> (out: Output, type: T, to?: string): Array<{ to: string, msg: Extract<SwimMessage, { type: T }> }> {
  return out.send.filter((s): s is { to: string, msg: Extract<SwimMessage, { type: T }> } => s.msg.type === type && (to === undefined || s.to === to))
}

function only<T> (xs: T[]): T {
  assert.equal(xs.length, 1, `expected exactly one, got ${xs.length}`)
  return xs[0] as T
}

/** A detector at t=1 that has heard from every peer (all alive at incarnation 1). */
function running (timings?: DetectorTimings): { det: Detector, t: number } {
  const det = make(timings)
  const start = det.tick(0)
  for (const { to, msg } of sent(start, 'ping')) det.step(1, to, { type: 'ack', seq: msg.seq, incarnation: 1, piggyback: [] })
  return { det, t: 1 }
}

/**
 * Plays the healthy peers in `healthy` (all at incarnation 1): they ack pings, relay ping-reqs
 * for each other and nack ping-reqs for anyone else. Responses are fed back at the same instant.
 */
function respond (det: Detector, now: number, out: Output, healthy: Set<string>): void {
  let queue = out.send
  for (let round = 0; round < 10 && queue.length > 0; round++) {
    const next: Output['send'] = []
    for (const { to, msg } of queue) {
      if (!healthy.has(to)) continue
      let reply: Output | undefined
      if (msg.type === 'ping') reply = det.step(now, to, { type: 'ack', seq: msg.seq, incarnation: 1, piggyback: [] })
      else if (msg.type === 'pingReq') {
        reply = healthy.has(msg.target)
          ? det.step(now, to, { type: 'ack', seq: msg.seq, incarnation: 1, piggyback: [] })
          : det.step(now, to, { type: 'nack', seq: msg.seq, incarnation: 1, piggyback: [] })
      }
      if (reply !== undefined) next.push(...reply.send)
    }
    queue = next
  }
}

/** Ticks at every deadline up to `until`, collecting all output; `healthy` peers answer. */
function runTo (det: Detector, from: number, until: number, onOut?: (t: number, out: Output) => void, healthy: string[] = []): Output {
  const all: Output = { send: [], events: [] }
  const ok = new Set(healthy)
  let t = from
  for (let i = 0; i < 10_000; i++) {
    const next = Math.max(t, det.nextDeadline())
    if (next > until) break
    t = next
    const out = det.tick(t)
    onOut?.(t, out)
    respond(det, t, out, ok)
    all.send.push(...out.send)
    all.events.push(...out.events)
  }
  return all
}

describe('Detector (single machine)', () => {
  it('starts with every peer dead and unseen, and pings everyone at once', () => {
    const det = make()
    assert.deepEqual(det.self(), { id: 'a', incarnation: 1, awareness: 0 })
    assert.deepEqual(det.members().map(m => [m.id, m.state, m.incarnation, m.everSeen]), PEERS.map(p => [p, 'dead', 0, false]))
    assert.equal(det.nextDeadline(), 0)
    const out = det.tick(0)
    const pings = sent(out, 'ping')
    assert.deepEqual(pings.map(p => p.to).sort(), PEERS)
    for (const p of pings) {
      assert.deepEqual(p.msg.target, { state: 'dead', incarnation: 0 })
      assert.equal(p.msg.incarnation, 1)
    }
    assert.ok(Number.isFinite(det.nextDeadline()) && det.nextDeadline() > 0)
    assert.deepEqual(det.tick(1).send, [], 'ticking early does nothing')
  })

  it('makes a peer alive on first direct contact and answers its ping', () => {
    const det = make()
    det.tick(0)
    const out = det.step(5, 'b', { type: 'ping', seq: 99, incarnation: 1, target: { state: 'dead', incarnation: 0 }, piggyback: [] })
    assert.deepEqual(out.events.filter(e => e.type === 'member'), [{ type: 'member', id: 'b', state: 'alive', incarnation: 1, previous: 'dead' }])
    const ack = only(sent(out, 'ack', 'b')).msg
    assert.equal(ack.seq, 99)
    assert.equal(ack.incarnation, 1)
    assert.equal(ack.target, undefined, 'no claim when we agree with the pinger')
    const b = det.members().find(m => m.id === 'b')
    assert.deepEqual(b, { id: 'b', state: 'alive', incarnation: 1, sinceMs: 5, everSeen: true })
    // a claim of dead about ourselves at a lower incarnation is old news
    assert.deepEqual(det.step(6, 'b', { type: 'ping', seq: 1, incarnation: 1, target: { state: 'dead', incarnation: 0 }, piggyback: [] }).events, [])
  })

  it('ignores messages from outside the configured set and gossip about strangers', () => {
    const det = make()
    det.tick(0)
    assert.deepEqual(det.step(1, 'mallory', { type: 'ping', seq: 1, incarnation: 9, piggyback: [] }), { send: [], events: [] })
    const out = det.step(2, 'b', { type: 'gossip', seq: 0, incarnation: 1, piggyback: [{ kind: 'dead', id: 'mallory', incarnation: 3 }] })
    assert.equal(out.events.filter(e => e.type === 'member' && e.id === 'mallory').length, 0)
    assert.ok(det.members().every(m => m.id !== 'mallory'))
  })

  it('tells a pinger what it believes when the pinger is behind (restarted member)', () => {
    const { det, t } = running()
    det.step(t, 'c', { type: 'gossip', seq: 0, incarnation: 1, piggyback: [{ kind: 'dead', id: 'b', incarnation: 5, from: 'c' }] })
    assert.equal(det.members().find(m => m.id === 'b')?.state, 'dead')
    const ack = only(sent(det.step(t + 1, 'b', { type: 'ping', seq: 3, incarnation: 1, piggyback: [] }), 'ack', 'b')).msg
    assert.deepEqual(ack.target, { state: 'dead', incarnation: 5 })
    // the restarted member refutes above it; its next message makes it alive again
    const out = det.step(t + 2, 'b', { type: 'ping', seq: 4, incarnation: 6, piggyback: [] })
    assert.deepEqual(out.events.find(e => e.type === 'member'), { type: 'member', id: 'b', state: 'alive', incarnation: 6, previous: 'dead' })
  })

  it('refutes a suspicion about itself with a higher incarnation and pushes it', () => {
    const { det, t } = running()
    const out = det.step(t, 'b', { type: 'ping', seq: 5, incarnation: 1, target: { state: 'suspect', incarnation: 1 }, piggyback: [] })
    assert.deepEqual(out.events.filter(e => e.type !== 'awareness'), [{ type: 'refuted', incarnation: 2 }])
    assert.deepEqual(out.events.filter(e => e.type === 'awareness'), [{ type: 'awareness', score: 1 }], 'being suspected counts against our own health')
    assert.equal(only(sent(out, 'ack', 'b')).msg.incarnation, 2)
    assert.equal(det.self().incarnation, 2)
    const pushed = sent(out, 'gossip')
    assert.equal(pushed.length, 3)
    assert.ok(pushed.every(p => p.msg.piggyback.some(u => u.kind === 'alive' && u.id === 'a' && u.incarnation === 2)))
    // the same claim again changes nothing; a dead claim at our new incarnation bumps again
    assert.deepEqual(det.step(t + 1, 'c', { type: 'gossip', seq: 0, incarnation: 1, piggyback: [{ kind: 'suspect', id: 'a', incarnation: 1 }] }).events, [])
    det.step(t + 2, 'c', { type: 'gossip', seq: 0, incarnation: 1, piggyback: [{ kind: 'dead', id: 'a', incarnation: 2 }] })
    assert.equal(det.self().incarnation, 3)
    // an alive claim above us means we restarted and forgot: jump above it, without a health penalty
    const before = det.self().awareness
    det.step(t + 3, 'd', { type: 'ack', seq: 12345, incarnation: 1, target: { state: 'alive', incarnation: 10 }, piggyback: [] })
    assert.deepEqual([det.self().incarnation, det.self().awareness], [11, before])
  })

  it('starts a suspicion heard in gossip, checks it at once with a ping carrying it (buddy system)', () => {
    const { det, t } = running()
    const out = det.step(t, 'b', { type: 'gossip', seq: 0, incarnation: 1, piggyback: [{ kind: 'suspect', id: 'c', incarnation: 1, from: 'b' }] })
    assert.deepEqual(out.events.find(e => e.type === 'member'), { type: 'member', id: 'c', state: 'suspect', incarnation: 1, previous: 'alive' })
    const ping = only(sent(out, 'ping', 'c')).msg
    assert.deepEqual(ping.target, { state: 'suspect', incarnation: 1 })
    // c refutes in its ack: alive again at 2, suspicion gone
    const back = det.step(t + 1, 'c', { type: 'ack', seq: ping.seq, incarnation: 2, piggyback: [] })
    assert.deepEqual(back.events.find(e => e.type === 'member'), { type: 'member', id: 'c', state: 'alive', incarnation: 2, previous: 'suspect' })
    assert.ok(det.nextDeadline() < t + 1 + ROUND_TIMINGS.suspicionMinMs, 'no suspicion timer left')
    assert.ok(sent(back, 'gossip').length > 0, 'a cleared suspicion is pushed')
  })

  it('declares death when the Lifeguard suspicion timer runs out, faster with confirmations', () => {
    // K = min(3, n - 2) = 3 in a 5-member cluster: 3000 ms with none, 2000 with one, 1000 with three
    assert.equal(expectedConfirmations(ROUND_TIMINGS, 5), 3)
    assert.equal(expectedConfirmations(ROUND_TIMINGS, 3), 1)
    assert.equal(suspicionTimeout(0, 3, 1000, 3000), 3000)
    assert.equal(suspicionTimeout(1, 3, 1000, 3000), 2000)
    assert.equal(suspicionTimeout(2, 3, 1000, 3000), 1415)
    assert.equal(suspicionTimeout(3, 3, 1000, 3000), 1000)
    assert.equal(suspicionTimeout(0, 0, 1000, 3000), 1000, 'nobody to confirm: minimum from the start')
    const s = new Suspicion('b', 3, 1000, 3000, 100)
    assert.equal(s.expiresAt, 3100)
    assert.equal(s.confirm('b'), false, 'the originator is not a confirmation')
    assert.equal(s.confirm('c'), true)
    assert.equal(s.confirm('c'), false, 'one confirmation per member')
    assert.equal(s.expiresAt, 2100)

    const { det, t } = running()
    const heard = det.step(t, 'b', { type: 'gossip', seq: 0, incarnation: 1, piggyback: [{ kind: 'suspect', id: 'c', incarnation: 1, from: 'b' }] })
    const ourPing = only(sent(heard, 'ping', 'c')).msg
    det.step(t + 10, 'd', { type: 'gossip', seq: 0, incarnation: 1, piggyback: [{ kind: 'suspect', id: 'c', incarnation: 1, from: 'd' }] })
    // our own check fails too (helpers nack: c is unreachable, we are fine) -> third voice
    let deadAt = -1
    runTo(det, t, t + 5000, (now, out) => {
      for (const e of out.events) if (e.type === 'member' && e.id === 'c' && e.state === 'dead') deadAt = now
      for (const g of sent(out, 'gossip')) {
        if (deadAt === now) assert.ok(g.msg.piggyback.some(u => u.kind === 'dead' && u.id === 'c' && u.from === 'a'))
      }
    }, ['b', 'd', 'e'])
    // confirmations: d and ourselves (the failed check at t + 500) -> 1415 ms after t
    assert.equal(deadAt, t + 1415)
    assert.equal(det.self().awareness, 0, 'nacks arrived: the failure was not ours')
    assert.equal(det.members().find(m => m.id === 'c')?.state, 'dead')
    assert.ok(det.members().filter(m => m.id !== 'c').every(m => m.state === 'alive'))
  })

  it('probes indirectly after the timeout, relies on nacks for local health, suspects at the interval', () => {
    const { det } = running()
    let probe: Ping | undefined
    let target = ''
    const reqs: Array<{ to: string, msg: PingReq }> = []
    const pings: Array<{ at: number, seq: number, to: string }> = []
    const asks: Array<{ at: number, seq: number }> = []
    runTo(det, 1, 1999, (now, out) => {
      for (const p of sent(out, 'ping')) {
        if (now >= 500 && probe === undefined) { probe = p.msg; target = p.to }
        pings.push({ at: now, seq: p.msg.seq, to: p.to })
      }
      for (const r of sent(out, 'pingReq')) asks.push({ at: now, seq: r.msg.seq })
      if (probe !== undefined) reqs.push(...sent(out, 'pingReq').filter(r => r.msg.seq === probe?.seq))
      if (now === 1000) {
        const sus = det.members().find(m => m.id === target)
        assert.equal(sus?.state, 'suspect')
        assert.equal(sus?.sinceMs, 1000)
        assert.equal(det.self().awareness, 1, 'three helpers, no nack from any: we are the likely problem')
      }
    })
    assert.ok(probe !== undefined, 'a regular probe started at 500')
    assert.equal(reqs.length, 3)
    assert.ok(reqs.every(r => r.to !== target && r.to !== 'a' && r.msg.target === target && r.msg.timeoutMs === 300))
    // the probe started right after the failure waits 2 timeouts and runs for 2 intervals
    const next = pings.find(p => p.at === 1000)
    assert.ok(next !== undefined)
    assert.equal(asks.find(a => a.seq === next.seq)?.at, 1000 + 2 * 200)
    assert.deepEqual(pings.filter(p => p.at > 1000 && p.to !== target), [])
    // the suspect itself is rechecked every (unstretched) interval, carrying the suspicion
    assert.deepEqual(pings.filter(p => p.at > 1000 && p.to === target).map(p => p.at), [1500])
    assert.equal(det.nextDeadline(), 1000 + 2 * 500)
  })

  it('a failed probe with at least one nack does not count against our health', () => {
    const { det } = running()
    let probe: Ping | undefined
    runTo(det, 1, 1100, (now, out) => {
      for (const p of sent(out, 'ping')) if (now >= 500 && probe === undefined) probe = p.msg
      const reqs = sent(out, 'pingReq').filter(r => r.msg.seq === probe?.seq)
      // one intermediary answers "target unreachable"; the other two are silent (cut off)
      const first = reqs[0]
      if (first !== undefined) det.step(now + 1, first.to, { type: 'nack', seq: first.msg.seq, incarnation: 1, piggyback: [] })
    })
    assert.equal(det.members().filter(m => m.state === 'suspect').length, 1)
    assert.equal(det.self().awareness, 0)
  })

  it('relays a ping-req: pings the target, forwards its ack, or nacks at 80 % of the window', () => {
    const { det, t } = running()
    const out = det.step(t, 'b', { type: 'pingReq', seq: 77, incarnation: 1, target: 'c', claim: { state: 'suspect', incarnation: 1 }, timeoutMs: 300, piggyback: [] })
    const ping = only(sent(out, 'ping', 'c')).msg
    assert.deepEqual(ping.target, { state: 'suspect', incarnation: 1 }, 'the requester\'s newer claim is forwarded')
    const fwd = det.step(t + 5, 'c', { type: 'ack', seq: ping.seq, incarnation: 2, piggyback: [] })
    const relayed = only(sent(fwd, 'ack', 'b')).msg
    assert.deepEqual([relayed.seq, relayed.incarnation], [77, 2])
    assert.deepEqual(det.step(t + 6, 'c', { type: 'ack', seq: ping.seq, incarnation: 2, piggyback: [] }).send.filter(s => s.to === 'b' && s.msg.type === 'ack'), [], 'relayed once')

    const out2 = det.step(t + 10, 'b', { type: 'pingReq', seq: 78, incarnation: 1, target: 'd', timeoutMs: 300, piggyback: [] })
    assert.equal(only(sent(out2, 'ping', 'd')).msg.target?.state, 'alive')
    assert.deepEqual(sent(det.tick(t + 10 + 239), 'nack'), [])
    const nack: Nack = only(sent(det.tick(t + 10 + 240), 'nack', 'b')).msg
    assert.equal(nack.seq, 78)
    // nonsense requests are ignored
    assert.deepEqual(sent(det.step(t + 20, 'b', { type: 'pingReq', seq: 79, incarnation: 1, target: 'b', timeoutMs: 300, piggyback: [] }), 'ping'), [])
    assert.deepEqual(sent(det.step(t + 21, 'b', { type: 'pingReq', seq: 80, incarnation: 1, target: 'zed', timeoutMs: 300, piggyback: [] }), 'ping'), [])
  })

  it('transportLost probes the peer at once but does not by itself suspect it', () => {
    const { det, t } = running()
    const out = det.transportLost(t + 3, 'c')
    const ping = only(sent(out, 'ping', 'c')).msg
    assert.deepEqual(out.events, [])
    assert.equal(det.members().find(m => m.id === 'c')?.state, 'alive')
    assert.deepEqual(sent(det.transportLost(t + 4, 'c'), 'ping'), [], 'one probe in flight per member')
    const ack: Ack = { type: 'ack', seq: ping.seq, incarnation: 1, piggyback: [] }
    assert.deepEqual(det.step(t + 5, 'c', ack).events, [])
    assert.equal(det.members().find(m => m.id === 'c')?.state, 'alive')
    // if that probe fails, the failure (not the hint) makes it suspect
    const out2 = det.transportLost(t + 10, 'd')
    const seq = only(sent(out2, 'ping', 'd')).msg.seq
    let suspectedAt = -1
    runTo(det, t + 10, t + 600, (now, o) => {
      for (const r of sent(o, 'pingReq')) if (r.msg.seq === seq) det.step(now, r.to, { type: 'nack', seq, incarnation: 1, piggyback: [] })
      for (const e of o.events) if (e.type === 'member' && e.id === 'd' && e.state === 'suspect') suspectedAt = now
    })
    assert.equal(suspectedAt, t + 10 + 500)
  })

  it('observeLag raises awareness and stretches the probe schedule', () => {
    const { det, t } = running()
    const before = det.nextDeadline()
    assert.equal(before, 500)
    assert.deepEqual(det.observeLag(t, 30).events, [], 'small lag is noise')
    const out = det.observeLag(450, 400)
    assert.deepEqual(out.events, [{ type: 'awareness', score: 2 }])
    assert.equal(det.self().awareness, 2)
    const pings: number[] = []
    runTo(det, 450, 5000, (now, o) => { if (sent(o, 'ping').length > 0) pings.push(now) }, PEERS)
    assert.equal(pings[0], before)
    assert.equal(pings[1], before + 3 * 500, 'interval × (awareness + 1)')
    assert.equal(det.observeLag(6000, 1e9).events.length > 0, true)
    assert.equal(det.self().awareness <= ROUND_TIMINGS.awarenessMax - 1, true, 'capped')
  })

  it('does not blame peers for time it spent frozen: timers move by the gap', () => {
    const { det } = running()
    const out = runTo(det, 1, 500)
    const probe = sent(out, 'ping').at(-1)
    assert.equal(det.members().filter(m => m.state === 'alive').length, 4)
    assert.ok(probe !== undefined)
    // frozen from 500 to 5500: the driver's tick comes 5 s late, then the buffered ack
    const resumed = det.tick(5500)
    assert.deepEqual(resumed.events.filter(e => e.type === 'member'), [])
    assert.ok(det.self().awareness > 0, 'the freeze counts as local lag')
    const acked = det.step(5500, probe.to, { type: 'ack', seq: probe.msg.seq, incarnation: 1, piggyback: [] })
    assert.deepEqual(acked.events.filter(e => e.type === 'member'), [])
    assert.ok(det.members().every(m => m.state === 'alive'))
  })

  it('a restarted peer with a lower incarnation is alive again after one probe of it', () => {
    const { det: a, t } = running()
    // everyone agreed b died at incarnation 5
    a.step(t, 'c', { type: 'gossip', seq: 0, incarnation: 1, piggyback: [{ kind: 'dead', id: 'b', incarnation: 5, from: 'c' }] })
    const b = new Detector({ self: 'b', peers: ['a', ...PEERS], timings: ROUND_TIMINGS, random: new SeededRandom(3), now: 1_000_000 })
    b.tick(1_000_000)
    let aliveAt = -1
    let bSeq = -1
    runTo(a, t, t + 4 * 500 + 1, (now, out) => {
      for (const p of sent(out, 'ping', 'b')) {
        if (aliveAt >= 0) continue
        assert.deepEqual(p.msg.target, { state: 'dead', incarnation: 5 })
        const reply = b.step(1_000_000 + now, 'a', p.msg)
        const ack = only(sent(reply, 'ack', 'a')).msg
        assert.equal(ack.incarnation, 6)
        bSeq = ack.seq
        const back = a.step(now, 'b', ack)
        if (back.events.some(e => e.type === 'member' && e.id === 'b' && e.state === 'alive')) aliveAt = now
      }
    }, ['c', 'd', 'e'])
    assert.ok(bSeq >= 0, 'b was probed within one round')
    assert.ok(aliveAt > 0 && aliveAt <= t + 4 * 500, `alive again at ${aliveAt}`)
    const { probeRtt: _rtt, ...view } = a.members().find(m => m.id === 'b') ?? {}
    assert.deepEqual(view, { id: 'b', state: 'alive', incarnation: 6, sinceMs: aliveAt, everSeen: true })
  })

  it('gossip queue: newest per member, least-transmitted first, limited retransmits', () => {
    assert.equal(retransmitLimit(ROUND_TIMINGS, 5), 4)
    assert.equal(retransmitLimit(ROUND_TIMINGS, 50), 8)
    const q = new GossipQueue(2)
    q.enqueue({ kind: 'alive', id: 'x', incarnation: 1 })
    q.enqueue({ kind: 'alive', id: 'y', incarnation: 1 })
    q.enqueue({ kind: 'dead', id: 'x', incarnation: 1 })
    assert.equal(q.size, 2)
    assert.deepEqual(q.take(1), [{ kind: 'dead', id: 'x', incarnation: 1 }])
    assert.deepEqual(q.take(1), [{ kind: 'alive', id: 'y', incarnation: 1 }], 'the untransmitted one goes first')
    assert.deepEqual(q.take(5).map(u => u.id), ['x', 'y'], 'equal transmits: newest first')
    assert.equal(q.size, 0, 'each sent twice, then dropped')
  })

  it('never asks to be woken at an infinite or past time, even with no peers', () => {
    const lone = new Detector({ self: 'a', peers: ['a'], timings: ROUND_TIMINGS, random: new SeededRandom(1), now: 50 })
    lone.tick(50)
    assert.ok(Number.isFinite(lone.nextDeadline()) && lone.nextDeadline() > 50)
  })
})
