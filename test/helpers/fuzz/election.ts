/**
 * Fuzz inputs for the election codec (protocol/election), shared by its unit test (CI counts)
 * and `npm run bench -- fuzz` (millions): valid samples and four kinds of hostile input.
 */
import type { Random } from '../../../common/random.ts'
import { MAX_MESSAGE_BYTES, MAX_NAME_BYTES } from '../../../protocol/election/messages.ts'
import type { ElectionMessage } from '../../../protocol/election/messages.ts'

const MAX = Number.MAX_SAFE_INTEGER
const LONG = 'x'.repeat(MAX_NAME_BYTES)
const PEER = '12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo'

export const ELECTION_SAMPLES: ElectionMessage[] = [
  { type: 'renew', vm: 'web01', epoch: 0, seq: 0 },
  { type: 'renew', vm: LONG, epoch: MAX, seq: MAX },
  { type: 'renewAck', vm: 'web01', epoch: 7, seq: 2 ** 40 + 3 },
  { type: 'renewNack', vm: 'web01', epoch: 3, seq: 9, reason: 'staleEpoch', currentEpoch: 5, owner: PEER },
  { type: 'renewNack', vm: 'web01', epoch: 3, seq: 9, reason: 'votedHigher', currentEpoch: 3, owner: '' },
  { type: 'renewNack', vm: 'web01', epoch: 3, seq: 9, reason: 'notOwner', currentEpoch: 3, owner: 'hv-b' },
  { type: 'renewNack', vm: 'ghost', epoch: 1, seq: 1, reason: 'unknownVm', currentEpoch: 0, owner: '' },
  { type: 'requestVote', vm: 'web01', epoch: 4, seq: 11, candidate: 'hv-b', generation: { epoch: 3, generation: 42 } },
  { type: 'vote', vm: 'web01', epoch: 4, seq: 11, candidate: 'hv-b', granted: true, reason: 'granted', currentEpoch: 3, owner: 'hv-a', retryAfterMs: 0 },
  { type: 'vote', vm: 'web01', epoch: 4, seq: 11, candidate: 'hv-b', granted: false, reason: 'promised', currentEpoch: 3, owner: 'hv-a', retryAfterMs: 0xffff_ffff },
  { type: 'vote', vm: 'web01', epoch: 4, seq: 11, candidate: 'hv-b', granted: false, reason: 'recovering', currentEpoch: 0, owner: '', retryAfterMs: 5100 },
  { type: 'owner', vm: 'wéb-ü', epoch: 12, owner: 'hv-ß' },
  { type: 'release', vm: 'web01', epoch: 12, to: 'hv-c', generation: { epoch: 12, generation: MAX } },
  { type: 'replicaReport', vm: 'web01', generation: { epoch: 2, generation: 0 } },
  { type: 'replicaReport', vm: 'web01', generation: null },
  { type: 'takeover', vm: 'web01', force: true },
  { type: 'takeover', vm: 'web01', force: false }
]

/** One input: random bytes past the version byte, a valid message with bytes changed, cut or extended, or a large random one. */
export function electionInput (rng: Random, valid: Uint8Array[]): Uint8Array {
  let bytes: Uint8Array
  const mode = rng.int(4)
  if (mode === 0) {
    bytes = new Uint8Array(rng.int(64))
    for (let j = 0; j < bytes.length; j++) bytes[j] = rng.int(256)
    if (bytes.length > 0 && rng.next() < 0.5) bytes[0] = 1 // get past the version byte
    if (bytes.length > 1 && rng.next() < 0.5) bytes[1] = 1 + rng.int(9)
  } else if (mode === 1) {
    // flip a few bytes of a valid message
    bytes = (valid[rng.int(valid.length)] as Uint8Array).slice()
    for (let k = 1 + rng.int(3); k > 0; k--) bytes[rng.int(bytes.length)] = rng.int(256)
  } else if (mode === 2) {
    // cut or extend a valid message
    const base = valid[rng.int(valid.length)] as Uint8Array
    const len = rng.int(base.length + 8)
    bytes = new Uint8Array(len)
    bytes.set(base.subarray(0, Math.min(len, base.length)))
    for (let j = base.length; j < len; j++) bytes[j] = rng.int(256)
  } else {
    bytes = new Uint8Array(rng.next() < 0.1 ? MAX_MESSAGE_BYTES + 1 + rng.int(100) : rng.int(MAX_MESSAGE_BYTES + 1))
    for (let j = 0; j < bytes.length; j++) bytes[j] = rng.int(256)
    bytes[0] = 1
  }
  return bytes
}
