import assert from 'node:assert/strict'
import { ANY_HOLDER, decideVote } from '../../../daemon/ownership/voter.ts'
import type { VoteContext, VoterState, VoteRequest } from '../../../daemon/ownership/voter.ts'

// The voter knows owner "a" at epoch 3; candidate "b" asks for epoch 4.
function state (over: Partial<VoterState> = {}): VoterState {
  return { epoch: 3, owner: 'a', votedEpoch: 3, votedFor: 'a', released: null, promises: new Map([['a', 1000]]), ...over }
}
function ctx (over: Partial<VoteContext> = {}): VoteContext {
  return { now: 2000, ownerState: 'dead', candidateIsHost: true, freshest: { epoch: 3, generation: 10 }, ...over }
}
const req: VoteRequest = { epoch: 4, candidate: 'b', generation: { epoch: 3, generation: 10 } }

describe('voter rules (decideVote)', () => {
  it('grants when every rule holds', () => {
    assert.deepEqual(decideVote(state(), req, ctx()), { granted: true })
  })

  it('refuses a candidate that is not a host (notEligible)', () => {
    const d = decideVote(state(), req, ctx({ candidateIsHost: false }))
    assert.equal(d.granted, false)
    assert.equal(!d.granted && d.reason, 'notEligible')
  })

  it('refuses an epoch not above the known owner epoch (staleEpoch)', () => {
    for (const epoch of [3, 2, 0]) {
      const d = decideVote(state(), { ...req, epoch }, ctx())
      assert.equal(!d.granted && d.reason, 'staleEpoch', `epoch ${epoch}`)
    }
  })

  it('refuses a second candidate for the same epoch and any candidate below a granted epoch (alreadyVoted)', () => {
    const voted = state({ votedEpoch: 4, votedFor: 'c' })
    assert.equal((d => !d.granted && d.reason)(decideVote(voted, req, ctx())), 'alreadyVoted')
    const higher = state({ votedEpoch: 6, votedFor: 'b' })
    assert.equal((d => !d.granted && d.reason)(decideVote(higher, req, ctx())), 'alreadyVoted')
  })

  it('repeats a grant to the same candidate for the same epoch (duplicates, retries)', () => {
    const voted = state({ votedEpoch: 4, votedFor: 'b', promises: new Map([['b', 9999]]) })
    assert.deepEqual(decideVote(voted, req, ctx({ ownerState: 'alive' })), { granted: true })
  })

  it('refuses while the owner is alive in the voter\'s view (ownerAlive)', () => {
    const d = decideVote(state(), req, ctx({ ownerState: 'alive' }))
    assert.equal(!d.granted && d.reason, 'ownerAlive')
    // suspect or unknown is not alive
    assert.equal(decideVote(state(), req, ctx({ ownerState: 'suspect' })).granted, true)
    assert.equal(decideVote(state(), req, ctx({ ownerState: 'unknown' })).granted, true)
  })

  it('refuses until its lease promise to another node ends, and says how long (promised)', () => {
    const s = state({ promises: new Map([['a', 2600], ['c', 2300]]) })
    const d = decideVote(s, req, ctx())
    assert.equal(d.granted, false)
    assert.ok(!d.granted)
    assert.equal(d.reason, 'promised')
    assert.equal(d.retryAfterMs, 600)
    assert.equal(decideVote(s, req, ctx({ now: 2600 })).granted, true)
    // a promise to the candidate itself does not block it
    assert.equal(decideVote(state({ promises: new Map([['b', 5000]]) }), req, ctx()).granted, true)
  })

  it('refuses during the restart quiet period (recovering)', () => {
    const d = decideVote(state({ promises: new Map([[ANY_HOLDER, 2500]]) }), req, ctx())
    assert.ok(!d.granted)
    assert.equal(d.reason, 'recovering')
    assert.equal(d.retryAfterMs, 500)
  })

  it('refuses a candidate older than the freshest live replica it knows (staleGeneration)', () => {
    const d = decideVote(state(), req, ctx({ freshest: { epoch: 3, generation: 11 } }))
    assert.equal(!d.granted && d.reason, 'staleGeneration')
    const older = decideVote(state(), { ...req, generation: { epoch: 2, generation: 99 } }, ctx())
    assert.equal(!older.granted && older.reason, 'staleGeneration')
    assert.equal(decideVote(state(), req, ctx({ freshest: null })).granted, true)
  })

  it('after a planned release waives the owner-alive rule and the promise to that owner, nothing else', () => {
    const released = { epoch: 3, to: 'b' }
    const s = state({ released, promises: new Map([['a', 9999]]) })
    assert.equal(decideVote(s, req, ctx({ ownerState: 'alive' })).granted, true)
    // a promise to someone else still binds
    const other = state({ released, promises: new Map([['a', 9999], ['c', 2100]]) })
    assert.equal((d => !d.granted && d.reason)(decideVote(other, req, ctx({ ownerState: 'alive' }))), 'promised')
    // a release of an older epoch is no release of this one
    const stale = state({ released: { epoch: 2, to: 'b' } })
    assert.equal((d => !d.granted && d.reason)(decideVote(stale, req, ctx({ ownerState: 'alive' }))), 'ownerAlive')
  })
})
