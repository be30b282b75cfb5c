/**
 * Fuzz inputs for the membership codec (protocol/membership), shared by its unit test (CI
 * counts) and `npm run bench -- fuzz` (millions): valid sample messages, garbage and mutations.
 */
import type { Random } from '../../../common/random.ts'
import { MEMBERSHIP_WIRE_VERSION } from '../../../protocol/membership/messages.ts'
import type { SwimMessage, Update } from '../../../protocol/membership/messages.ts'

export const MEMBERSHIP_PEER = '12D3KooWGzBXdZ6sHpyJ3F9kQmJtV8pNwRk5yB3oX4Lq9cEeTtUv'

export const MEMBERSHIP_UPDATES: Update[] = [
  { kind: 'alive', id: MEMBERSHIP_PEER, incarnation: 1 },
  { kind: 'suspect', id: 'hv-b', incarnation: 7, from: MEMBERSHIP_PEER },
  { kind: 'dead', id: 'hv-ü', incarnation: Number.MAX_SAFE_INTEGER, from: 'x' }
]

export const MEMBERSHIP_SAMPLES: SwimMessage[] = [
  { type: 'ping', seq: 0, incarnation: 1, piggyback: [] },
  { type: 'ping', seq: 0xffff_ffff, incarnation: 300, target: { state: 'dead', incarnation: 5 }, piggyback: MEMBERSHIP_UPDATES },
  { type: 'ack', seq: 42, incarnation: 9, piggyback: MEMBERSHIP_UPDATES.slice(0, 1) },
  { type: 'ack', seq: 43, incarnation: 2 ** 40, target: { state: 'suspect', incarnation: 0 }, piggyback: [] },
  { type: 'pingReq', seq: 7, incarnation: 3, target: MEMBERSHIP_PEER, timeoutMs: 300, piggyback: MEMBERSHIP_UPDATES },
  { type: 'pingReq', seq: 8, incarnation: 3, target: 'c', claim: { state: 'alive', incarnation: 127 }, timeoutMs: 0xffff_ffff, piggyback: [] },
  { type: 'nack', seq: 9, incarnation: 128, piggyback: [] },
  { type: 'nack', seq: 10, incarnation: 16384, piggyback: MEMBERSHIP_UPDATES.slice(1) },
  { type: 'gossip', seq: 0, incarnation: 5, piggyback: MEMBERSHIP_UPDATES }
]

/** Random bytes, half of them behind a plausible header so the body parsers get exercised. */
export function membershipGarbage (rng: Random): Uint8Array {
  const len = rng.int(300)
  const out = new Uint8Array(len)
  for (let i = 0; i < len; i++) out[i] = rng.int(256)
  // half the time give it a plausible header so the body parsers get exercised
  if (len >= 2 && rng.next() < 0.5) { out[0] = MEMBERSHIP_WIRE_VERSION; out[1] = 1 + rng.int(5) }
  return out
}

/** 1–4 edits of a valid frame: bit flip, random byte, truncation, insertion, duplication. */
export function mutateMembership (src: Uint8Array, rng: Random): Uint8Array {
  let b = Uint8Array.from(src)
  const edits = 1 + rng.int(4)
  for (let e = 0; e < edits; e++) {
    switch (rng.int(5)) {
      case 0: if (b.length > 0) { const i = rng.int(b.length); b[i] = (b[i] as number) ^ (1 << rng.int(8)) } break
      case 1: if (b.length > 0) b[rng.int(b.length)] = rng.int(256); break
      case 2: b = b.slice(0, rng.int(b.length + 1)); break
      case 3: { const i = rng.int(b.length + 1); b = Uint8Array.from([...b.subarray(0, i), rng.int(256), ...b.subarray(i)]); break }
      case 4: { const i = rng.int(b.length + 1); b = Uint8Array.from([...b.subarray(0, i), ...b.subarray(i)]); b = Uint8Array.from([...b, ...b.subarray(0, rng.int(8))]); break }
    }
  }
  return b
}
