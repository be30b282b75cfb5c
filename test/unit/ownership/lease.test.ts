import assert from 'node:assert/strict'
import { SeededRandom } from '../../../common/random.ts'
import { conservativeWait, fenceDeadline, ownerLeaseEnd, validateTiming, voterPromiseEnd } from '../../../daemon/ownership/lease.ts'
import { PROFILES } from '../../../config/profiles.ts'
import type { OwnershipTiming } from '../../../daemon/ownership/types.ts'
import { compareGeneration, rankCandidates } from '../../../daemon/ownership/rank.ts'

describe('ownership lease arithmetic', () => {
  const t = { ...PROFILES.lan.ownership, driftRatio: 0.05 }

  it('counts the owner lease from the send time, shortened by drift', () => {
    assert.equal(ownerLeaseEnd(10_000, t), 10_000 + 5000 * 0.95)
  })

  it('counts the voter promise from the ack time, lengthened by drift', () => {
    assert.equal(voterPromiseEnd(10_000, t), 10_000 + 5000 * 1.05)
  })

  it('puts the watchdog deadline strictly inside the owner lease', () => {
    for (const timing of [PROFILES.lan.ownership, PROFILES.wan.ownership, t]) {
      assert.ok(fenceDeadline(0, timing) < ownerLeaseEnd(0, timing))
      assert.ok(ownerLeaseEnd(0, timing) < voterPromiseEnd(0, timing))
    }
  })

  it('the owner stops believing before any acking voter stops promising, in real time', () => {
    // Clocks run at rates within 1 ± d; delays and offsets are arbitrary.
    const rng = new SeededRandom(7)
    for (let i = 0; i < 20_000; i++) {
      const d = t.driftRatio
      const ownerRate = 1 - d + rng.next() * 2 * d
      const voterRate = 1 - d + rng.next() * 2 * d
      const sendReal = rng.next() * 1e6
      const ackReal = sendReal + rng.next() * 10_000 // any delay, including a paused voter
      const ownerLocalSend = rng.next() * 1e7
      const ownerEndReal = sendReal + (ownerLeaseEnd(ownerLocalSend, t) - ownerLocalSend) / ownerRate
      const fenceReal = sendReal + (fenceDeadline(ownerLocalSend, t) - ownerLocalSend) / ownerRate
      const voterLocalAck = rng.next() * 1e7
      const promiseEndReal = ackReal + (voterPromiseEnd(voterLocalAck, t) - voterLocalAck) / voterRate
      assert.ok(fenceReal < ownerEndReal)
      assert.ok(ownerEndReal <= promiseEndReal + 1e-6, `iteration ${i}`)
    }
  })

  it('turns a remote wait into a local one that is never shorter in real time', () => {
    const d = 0.05
    const remote = 1000
    // worst case: the remote clock runs slow (real = remote / (1 - d)), ours fast (local = real × (1 + d))
    assert.ok(conservativeWait(remote, d) >= remote / (1 - d) * (1 + d) - 1e-9)
  })

  it('refuses unsafe timings with ERR_OWNERSHIP_TIMING', () => {
    const bad: Array<Partial<OwnershipTiming>> = [
      { fenceMs: 5000 },
      { fenceMs: 4950, driftRatio: 0.02 },
      { renewMs: 3500 },
      { driftRatio: 0.5 },
      { driftRatio: -0.1 },
      { leaseMs: 0 },
      { electionStaggerMs: -1 },
      { renewMs: Number.NaN },
      { operatorTimeoutMs: 6000 }, // shorter than the voters' promise: an operator failover could never win
      { plannedGraceMs: 900 } // the planned target would not get one election round
    ]
    for (const b of bad) {
      assert.throws(() => validateTiming({ ...PROFILES.lan.ownership, ...b }), (err: Error & { code?: string }) => {
        assert.equal(err.name, 'OwnershipTimingError')
        assert.equal(err.code, 'ERR_OWNERSHIP_TIMING')
        return true
      }, JSON.stringify(b))
    }
    validateTiming(PROFILES.lan.ownership)
    validateTiming(PROFILES.wan.ownership)
  })
})

describe('ownership candidate ranking', () => {
  const spec = { name: 'vm', home: 'a', replicateTo: ['c', 'b', 'd'] }

  it('orders by generation epoch, then generation, then replicateTo order, then id', () => {
    const ranked = rankCandidates(spec, [
      { id: 'b', generation: { epoch: 1, generation: 9 } },
      { id: 'd', generation: { epoch: 2, generation: 1 } },
      { id: 'c', generation: { epoch: 1, generation: 9 } },
      { id: 'x', generation: { epoch: 1, generation: 9 } },
      { id: 'e', generation: { epoch: 1, generation: 9 } },
      { id: 'f', generation: { epoch: 1, generation: 3 } }
    ])
    assert.deepEqual(ranked.map(r => r.id), ['d', 'c', 'b', 'e', 'x', 'f'])
  })

  it('treats no replica as older than any generation', () => {
    assert.equal(compareGeneration(null, { epoch: 0, generation: 0 }), -1)
    assert.equal(compareGeneration({ epoch: 0, generation: 0 }, null), 1)
    assert.equal(compareGeneration(null, null), 0)
    assert.equal(compareGeneration({ epoch: 3, generation: 1 }, { epoch: 2, generation: 100 }), 1)
  })
})
