/** Detector.setPeers: the allowlist changes under a running detector (vmesh reload). */
import assert from 'node:assert/strict'
import { SeededRandom } from '../../../common/random.ts'
import { Detector, type Output } from '../../../daemon/membership/detector.ts'
import { PROFILES } from '../../../config/profiles.ts'

function ackAll (det: Detector, now: number, out: Output, healthy: Set<string>): void {
  for (const { to, msg } of out.send) {
    if (healthy.has(to) && msg.type === 'ping') det.step(now, to, { type: 'ack', seq: msg.seq, incarnation: 1, piggyback: [] })
  }
}

describe('Detector.setPeers', () => {
  it('keeps surviving members, probes a new one at once, forgets a removed one', () => {
    const det = new Detector({ self: 'a', peers: ['b', 'c'], timings: PROFILES.lan.detector, random: new SeededRandom(3), now: 0 })
    ackAll(det, 1, det.tick(0), new Set(['b', 'c']))
    assert.deepEqual(det.members().map(m => [m.id, m.state]).sort(), [['b', 'alive'], ['c', 'alive']])
    const out = det.setPeers(10, ['b', 'd'])
    assert.ok(out.send.some(s => s.to === 'd' && s.msg.type === 'ping'), 'new peer probed at once')
    assert.deepEqual(det.members().map(m => [m.id, m.state]).sort(), [['b', 'alive'], ['d', 'dead']])
    ackAll(det, 11, out, new Set(['d']))
    assert.equal(det.members().find(m => m.id === 'd')?.state, 'alive')
    // messages from the removed peer are ignored, and running on for a while never resurrects it
    det.step(12, 'c', { type: 'ping', seq: 1, incarnation: 1, piggyback: [] })
    let t = 12
    for (let i = 0; i < 200; i++) {
      t = Math.max(t + 1, det.nextDeadline())
      ackAll(det, t, det.tick(t), new Set(['b', 'd']))
    }
    assert.deepEqual(det.members().map(m => m.id).sort(), ['b', 'd'])
    assert.ok(det.members().every(m => m.state === 'alive'))
  })
})
