/**
 * Fuzz inputs for the replication control and stream codecs (protocol/replication), shared by
 * its unit test (CI counts) and `npm run bench -- fuzz` (millions).
 */
import type { Random } from '../../../common/random.ts'
import { concat } from '../../unit/replication-protocol/fixtures.ts'

const SPECIAL = [0, 1, 0x7f, 0x80, 0xfe, 0xff]

/** 1–3 edits of an encoded item: bit flips, special bytes, truncation, appended bytes, hostile lengths and words, type byte, splices. */
export function mutateReplication (rng: Random, src: Uint8Array, corpus: Uint8Array[]): Uint8Array {
  let b: Uint8Array = src.slice()
  const ops = 1 + rng.int(3)
  for (let k = 0; k < ops; k++) {
    switch (rng.int(8)) {
      case 0: { // bit flips
        if (b.length === 0) break
        const i = rng.int(b.length)
        b[i] = (b[i] as number) ^ (1 << rng.int(8))
        break
      }
      case 1: { // special byte
        if (b.length === 0) break
        b[rng.int(b.length)] = SPECIAL[rng.int(SPECIAL.length)] as number
        break
      }
      case 2: // truncate
        b = b.subarray(0, rng.int(b.length + 1)).slice()
        break
      case 3: { // append random bytes
        const extra = new Uint8Array(1 + rng.int(64))
        for (let i = 0; i < extra.length; i++) extra[i] = rng.int(256)
        b = concat([b, extra])
        break
      }
      case 4: { // overwrite the declared body length
        if (b.length < 5) break
        const v = [0, 1, b.length - 5 + rng.int(3) - 1, rng.int(1 << 16), 0xffff_ffff, rng.int(2 ** 32)][rng.int(6)] as number
        new DataView(b.buffer, b.byteOffset).setUint32(1, Math.max(0, Math.min(0xffff_ffff, v)))
        break
      }
      case 5: { // overwrite a 4-byte word (counts, ids, lengths) with a hostile value
        if (b.length < 9) break
        const at = 5 + rng.int(b.length - 8)
        new DataView(b.buffer, b.byteOffset).setUint32(at, [0, 1, 0xffff_ffff, 0x8000_0000, rng.int(2 ** 32)][rng.int(5)] as number)
        break
      }
      case 6: { // change the type byte
        if (b.length === 0) break
        b[0] = rng.int(2) === 0 ? 64 + rng.int(12) : rng.int(256)
        break
      }
      default: { // splice with another frame
        const other = corpus[rng.int(corpus.length)] as Uint8Array
        const cut = rng.int(b.length + 1)
        b = concat([b.subarray(0, cut), other.subarray(rng.int(other.length + 1))])
      }
    }
  }
  return b
}

/** Random bytes, most behind a plausible frame header (type byte and body length). */
export function replicationGarbage (rng: Random): Uint8Array {
  const n = rng.int(200)
  const b = new Uint8Array(n)
  for (let i = 0; i < n; i++) b[i] = rng.int(256)
  if (n >= 5) {
    b[0] = rng.int(4) === 0 ? 1 + rng.int(4) : 64 + rng.int(12)
    new DataView(b.buffer).setUint32(1, rng.int(2) === 0 ? n - 5 : rng.int(n * 2))
  }
  return b
}
