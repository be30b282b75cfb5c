import assert from 'node:assert/strict'
import { SeededRandom } from '../../../common/random.ts'
import { decodeSwimMessage, encodeSwimMessage } from '../../../protocol/membership/codec.ts'
import { MembershipDecodeError, MembershipEncodeError } from '../../../protocol/membership/errors.ts'
import { MAX_ID_BYTES, MAX_MESSAGE_BYTES, MAX_UPDATES, MEMBERSHIP_WIRE_VERSION } from '../../../protocol/membership/messages.ts'
import type { SwimMessage, Update } from '../../../protocol/membership/messages.ts'
import { MEMBERSHIP_PROTOCOL } from '../../../protocol/membership/ids.ts'
import { MEMBERSHIP_PEER as PEER, MEMBERSHIP_UPDATES as updates, MEMBERSHIP_SAMPLES as samples, membershipGarbage as garbage, mutateMembership as mutateRandomly } from '../../helpers/fuzz/membership.ts'


function decodeCode (bytes: Uint8Array): string {
  try {
    decodeSwimMessage(bytes)
  } catch (err) {
    assert.ok(err instanceof MembershipDecodeError, `expected MembershipDecodeError, got ${String(err)}`)
    return err.code
  }
  return 'ok'
}

describe('membership codec', () => {
  it('has a versioned protocol id', () => {
    assert.equal(MEMBERSHIP_PROTOCOL, '/vmesh/membership/1.0.0')
  })

  it('round-trips every message type, with and without optional fields', () => {
    for (const msg of samples) {
      const bytes = encodeSwimMessage(msg)
      assert.equal(bytes[0], MEMBERSHIP_WIRE_VERSION)
      assert.deepEqual(decodeSwimMessage(bytes), msg)
    }
  })

  it('round-trips the largest legal message', () => {
    const id = 'p'.repeat(MAX_ID_BYTES)
    const big: SwimMessage = {
      type: 'pingReq',
      seq: 1,
      incarnation: Number.MAX_SAFE_INTEGER,
      target: id,
      claim: { state: 'dead', incarnation: Number.MAX_SAFE_INTEGER },
      timeoutMs: 1,
      piggyback: Array.from({ length: MAX_UPDATES }, (_, i) => ({ kind: 'dead' as const, id: id.slice(0, MAX_ID_BYTES - 3) + String(i).padStart(3, '0'), incarnation: Number.MAX_SAFE_INTEGER - i, from: id }))
    }
    const bytes = encodeSwimMessage(big)
    assert.ok(bytes.length <= MAX_MESSAGE_BYTES)
    assert.deepEqual(decodeSwimMessage(bytes), big)
  })

  it('refuses to encode messages that break the limits', () => {
    const bad: Array<() => SwimMessage> = [
      () => ({ type: 'ping', seq: -1, incarnation: 1, piggyback: [] }),
      () => ({ type: 'ping', seq: 2 ** 32, incarnation: 1, piggyback: [] }),
      () => ({ type: 'ping', seq: 1.5, incarnation: 1, piggyback: [] }),
      () => ({ type: 'ack', seq: 1, incarnation: -1, piggyback: [] }),
      () => ({ type: 'ack', seq: 1, incarnation: 2 ** 53, piggyback: [] }),
      () => ({ type: 'pingReq', seq: 1, incarnation: 1, target: '', timeoutMs: 1, piggyback: [] }),
      () => ({ type: 'pingReq', seq: 1, incarnation: 1, target: 'x'.repeat(MAX_ID_BYTES + 1), timeoutMs: 1, piggyback: [] }),
      () => ({ type: 'pingReq', seq: 1, incarnation: 1, target: 'a\ud800b', timeoutMs: 1, piggyback: [] }),
      () => ({ type: 'pingReq', seq: 1, incarnation: 1, target: 'x', timeoutMs: -5, piggyback: [] }),
      () => ({ type: 'nack', seq: 1, incarnation: 1, piggyback: Array.from({ length: MAX_UPDATES + 1 }, () => updates[0] as Update) }),
      () => ({ type: 'nack', seq: 1, incarnation: 1, piggyback: [{ kind: 'alive', id: 'é'.repeat(65), incarnation: 1 }] }),
      () => ({ type: 'bogus', seq: 1, incarnation: 1, piggyback: [] }) as unknown as SwimMessage
    ]
    for (const make of bad) {
      assert.throws(() => encodeSwimMessage(make()), (err: unknown) => err instanceof MembershipEncodeError && err.code === 'ERR_MEMBERSHIP_ENCODE_INVALID')
    }
  })

  it('rejects each kind of malformed input with its own code', () => {
    const ping = encodeSwimMessage({ type: 'ping', seq: 1, incarnation: 1, target: { state: 'alive', incarnation: 1 }, piggyback: [{ kind: 'alive', id: 'ab', incarnation: 1 }] })
    // layout: [0]=version [1]=type [2..5]=seq [6]=inc [7]=flags [8]=state [9]=inc [10]=count [11]=kind [12]=flags [13]=len [14,15]=id [16]=inc
    const mutate = (at: number, value: number): Uint8Array => { const b = Uint8Array.from(ping); b[at] = value; return b }
    assert.equal(decodeCode(ping), 'ok')
    assert.equal(decodeCode(new Uint8Array(0)), 'ERR_MEMBERSHIP_TRUNCATED')
    assert.equal(decodeCode(ping.subarray(0, ping.length - 1)), 'ERR_MEMBERSHIP_TRUNCATED')
    assert.equal(decodeCode(ping.subarray(0, 4)), 'ERR_MEMBERSHIP_TRUNCATED')
    assert.equal(decodeCode(new Uint8Array(MAX_MESSAGE_BYTES + 1)), 'ERR_MEMBERSHIP_TOO_LARGE')
    assert.equal(decodeCode(mutate(0, 2)), 'ERR_MEMBERSHIP_BAD_VERSION')
    assert.equal(decodeCode(mutate(1, 0)), 'ERR_MEMBERSHIP_UNKNOWN_TYPE')
    assert.equal(decodeCode(mutate(1, 99)), 'ERR_MEMBERSHIP_UNKNOWN_TYPE')
    assert.equal(decodeCode(mutate(7, 0x03)), 'ERR_MEMBERSHIP_BAD_FLAGS')
    assert.equal(decodeCode(mutate(8, 0)), 'ERR_MEMBERSHIP_BAD_ENUM')
    assert.equal(decodeCode(mutate(8, 9)), 'ERR_MEMBERSHIP_BAD_ENUM')
    assert.equal(decodeCode(mutate(10, MAX_UPDATES + 1)), 'ERR_MEMBERSHIP_TOO_MANY_UPDATES')
    assert.equal(decodeCode(mutate(12, 0x80)), 'ERR_MEMBERSHIP_BAD_FLAGS')
    assert.equal(decodeCode(mutate(13, 0)), 'ERR_MEMBERSHIP_BAD_ID')
    assert.equal(decodeCode(mutate(13, MAX_ID_BYTES + 1)), 'ERR_MEMBERSHIP_BAD_ID')
    assert.equal(decodeCode(mutate(14, 0xff)), 'ERR_MEMBERSHIP_BAD_ID') // not UTF-8
    assert.equal(decodeCode(Uint8Array.from([...ping, 0])), 'ERR_MEMBERSHIP_TRAILING_BYTES')
    // varints: overlong (0x81 0x00), and beyond 2^53 - 1
    assert.equal(decodeCode(Uint8Array.from([...ping.subarray(0, 6), 0x81, 0x00, ...ping.subarray(7)])), 'ERR_MEMBERSHIP_BAD_VARINT')
    assert.equal(decodeCode(Uint8Array.from([...ping.subarray(0, 6), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, ...ping.subarray(7)])), 'ERR_MEMBERSHIP_BAD_VARINT')
    assert.equal(decodeCode(Uint8Array.from([...ping.subarray(0, 6), 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, ...ping.subarray(7)])), 'ERR_MEMBERSHIP_BAD_VARINT')
  })

  it('skips update kinds appended by a later version', () => {
    const bytes = encodeSwimMessage({ type: 'gossip', seq: 0, incarnation: 1, piggyback: [{ kind: 'alive', id: 'a', incarnation: 1 }, { kind: 'dead', id: 'b', incarnation: 2 }] })
    const future = Uint8Array.from(bytes)
    future[8] = 42 // first update's kind byte: [7]=count [8]=kind
    assert.deepEqual(decodeSwimMessage(future), { type: 'gossip', seq: 0, incarnation: 1, piggyback: [{ kind: 'dead', id: 'b', incarnation: 2 }] })
  })

  it('survives 24 000 seeded garbage and mutated inputs with typed errors only', function () {
    this.timeout(30_000)
    const rng = new SeededRandom(0x5eed)
    const valid = samples.map(encodeSwimMessage)
    const codes = new Map<string, number>()
    let decoded = 0
    for (let i = 0; i < 24_000; i++) {
      const input = i % 4 === 0 ? garbage(rng) : mutateRandomly(valid[rng.int(valid.length)] as Uint8Array, rng)
      let msg: SwimMessage
      try {
        msg = decodeSwimMessage(input)
      } catch (err) {
        assert.ok(err instanceof MembershipDecodeError, `input ${i}: untyped error ${String(err)}`)
        assert.match(err.code, /^ERR_MEMBERSHIP_/)
        codes.set(err.code, (codes.get(err.code) ?? 0) + 1)
        continue
      }
      decoded++
      // Whatever decodes must be a legal message: it re-encodes and decodes to the same thing.
      assert.deepEqual(decodeSwimMessage(encodeSwimMessage(msg)), msg)
    }
    assert.ok(decoded > 100, 'mutations should sometimes stay valid')
    for (const code of ['ERR_MEMBERSHIP_TRUNCATED', 'ERR_MEMBERSHIP_BAD_VERSION', 'ERR_MEMBERSHIP_UNKNOWN_TYPE', 'ERR_MEMBERSHIP_TRAILING_BYTES', 'ERR_MEMBERSHIP_BAD_ID', 'ERR_MEMBERSHIP_BAD_FLAGS']) {
      assert.ok((codes.get(code) ?? 0) > 0, `fuzzing never produced ${code}`)
    }
  })
})
