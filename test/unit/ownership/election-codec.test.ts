import assert from 'node:assert/strict'
import { SeededRandom } from '../../../common/random.ts'
import { decodeElectionMessage, encodeElectionMessage } from '../../../protocol/election/codec.ts'
import { ELECTION_DECODE_CODES, ElectionDecodeError } from '../../../protocol/election/errors.ts'
import { ELECTION_PROTOCOL } from '../../../protocol/election/ids.ts'
import { ELECTION_SAMPLES as SAMPLES, electionInput } from '../../helpers/fuzz/election.ts'
import { MAX_MESSAGE_BYTES, MAX_NAME_BYTES } from '../../../protocol/election/messages.ts'
import type { ElectionMessage } from '../../../protocol/election/messages.ts'

const MAX = Number.MAX_SAFE_INTEGER
const LONG = 'x'.repeat(MAX_NAME_BYTES)

function decodeCode (bytes: Uint8Array): string {
  try {
    decodeElectionMessage(bytes)
  } catch (err) {
    assert.ok(err instanceof ElectionDecodeError, `not an ElectionDecodeError: ${String(err)}`)
    return err.code
  }
  return 'ok'
}

describe('election codec', () => {
  it('has its protocol id', () => {
    assert.equal(ELECTION_PROTOCOL, '/vmesh/election/1.0.0')
  })

  it('round-trips every message type, including limits', () => {
    for (const m of SAMPLES) {
      const bytes = encodeElectionMessage(m)
      assert.ok(bytes.length <= MAX_MESSAGE_BYTES)
      assert.deepEqual(decodeElectionMessage(bytes), m)
    }
    const types = new Set(SAMPLES.map(m => m.type))
    assert.equal(types.size, 9)
  })

  it('refuses every proper prefix of a valid message as truncated', () => {
    for (const m of SAMPLES) {
      const bytes = encodeElectionMessage(m)
      for (let n = 0; n < bytes.length; n++) assert.equal(decodeCode(bytes.subarray(0, n)), 'ERR_ELECTION_TRUNCATED', `${m.type} cut at ${n}`)
    }
  })

  it('names each malformation with its own code', () => {
    const renew = encodeElectionMessage({ type: 'renew', vm: 'v', epoch: 1, seq: 1 })
    const withByte = (b: Uint8Array, i: number, v: number): Uint8Array => { const c = b.slice(); c[i] = v; return c }
    assert.equal(decodeCode(new Uint8Array(MAX_MESSAGE_BYTES + 1)), 'ERR_ELECTION_TOO_LARGE')
    assert.equal(decodeCode(withByte(renew, 0, 2)), 'ERR_ELECTION_BAD_VERSION')
    assert.equal(decodeCode(withByte(renew, 1, 0)), 'ERR_ELECTION_UNKNOWN_TYPE')
    assert.equal(decodeCode(withByte(renew, 1, 200)), 'ERR_ELECTION_UNKNOWN_TYPE')
    assert.equal(decodeCode(withByte(renew, 2, 0)), 'ERR_ELECTION_BAD_NAME') // empty vm name
    assert.equal(decodeCode(withByte(renew, 2, MAX_NAME_BYTES + 1)), 'ERR_ELECTION_BAD_NAME')
    assert.equal(decodeCode(withByte(renew, 3, 0xff)), 'ERR_ELECTION_BAD_NAME') // invalid UTF-8
    assert.equal(decodeCode(withByte(renew, 4, 0x00 + 0x20)), 'ERR_ELECTION_BAD_INTEGER') // epoch high word ≥ 2^21
    assert.equal(decodeCode(Uint8Array.from([...renew, 0])), 'ERR_ELECTION_TRAILING_BYTES')
    const nack = encodeElectionMessage({ type: 'renewNack', vm: 'v', epoch: 1, seq: 1, reason: 'staleEpoch', currentEpoch: 2, owner: '' })
    assert.equal(decodeCode(withByte(nack, 20, 99)), 'ERR_ELECTION_BAD_ENUM')
    const vote = encodeElectionMessage({ type: 'vote', vm: 'v', epoch: 1, seq: 1, candidate: 'c', granted: true, reason: 'granted', currentEpoch: 0, owner: '', retryAfterMs: 0 })
    assert.equal(decodeCode(withByte(vote, 22, 0)), 'ERR_ELECTION_INCONSISTENT') // refused "granted"
    assert.equal(decodeCode(withByte(vote, 22, 3)), 'ERR_ELECTION_BAD_FLAGS')
    assert.equal(decodeCode(withByte(vote, 23, 77)), 'ERR_ELECTION_BAD_ENUM')
    const takeover = encodeElectionMessage({ type: 'takeover', vm: 'v', force: false })
    assert.equal(decodeCode(withByte(takeover, 4, 2)), 'ERR_ELECTION_BAD_FLAGS')
  })

  it('refuses to encode what it could not decode', () => {
    const bad: unknown[] = [
      { type: 'renew', vm: '', epoch: 1, seq: 1 },
      { type: 'renew', vm: LONG + 'x', epoch: 1, seq: 1 },
      { type: 'renew', vm: 'v', epoch: -1, seq: 1 },
      { type: 'renew', vm: 'v', epoch: 1.5, seq: 1 },
      { type: 'renew', vm: 'v', epoch: MAX + 1, seq: 1 },
      { type: 'renew', vm: 'v\ud800', epoch: 1, seq: 1 },
      { type: 'vote', vm: 'v', epoch: 1, seq: 1, candidate: 'c', granted: true, reason: 'promised', currentEpoch: 0, owner: '', retryAfterMs: 0 },
      { type: 'vote', vm: 'v', epoch: 1, seq: 1, candidate: 'c', granted: false, reason: 'promised', currentEpoch: 0, owner: '', retryAfterMs: 2 ** 32 },
      { type: 'renewNack', vm: 'v', epoch: 1, seq: 1, reason: 'nope', currentEpoch: 0, owner: '' },
      { type: 'owner', vm: 'v', epoch: 1, owner: '' },
      { type: 'bogus', vm: 'v' }
    ]
    for (const m of bad) {
      assert.throws(() => encodeElectionMessage(m as ElectionMessage), (err: Error & { code?: string }) => {
        return err.name === 'ElectionEncodeError' && err.code === 'ERR_ELECTION_ENCODE_INVALID'
      }, JSON.stringify(m))
    }
  })

  it('survives 20 000 seeded garbage inputs: canonical message or a typed decode error', () => {
    const rng = new SeededRandom(0xe1ec7)
    const valid = SAMPLES.map(m => encodeElectionMessage(m))
    const seen = new Map<string, number>()
    for (let i = 0; i < 20_000; i++) {
      const bytes = electionInput(rng, valid)
      let code: string
      try {
        const msg = decodeElectionMessage(bytes)
        assert.deepEqual(encodeElectionMessage(msg), bytes, 'decoding is canonical')
        code = 'ok'
      } catch (err) {
        if (err instanceof assert.AssertionError) throw err
        assert.ok(err instanceof ElectionDecodeError, `iteration ${i}: ${String(err)}`)
        assert.ok((ELECTION_DECODE_CODES as readonly string[]).includes(err.code), err.code)
        code = err.code
      }
      seen.set(code, (seen.get(code) ?? 0) + 1)
    }
    // the generator reached most outcomes, including valid messages
    assert.ok((seen.get('ok') ?? 0) > 100, JSON.stringify([...seen]))
    assert.ok(seen.size >= 9, JSON.stringify([...seen]))
  })
})
