import assert from 'node:assert/strict'
import { SeededRandom } from '../../../common/random.ts'
import type { Random } from '../../../common/random.ts'
import { decodeControl, encodeControl } from '../../../protocol/replication/codec.ts'
import { isPeerProtocolError } from '../../../protocol/replication/errors.ts'
import { ReplicationDecoder, encodeReplicationItem } from '../../../protocol/replication/stream.ts'
import type { ReplicationItem } from '../../../protocol/replication/stream.ts'
import { concat, randomChunks, sampleGeneration, sampleMessages } from './fixtures.ts'

const INPUTS = 24_000
const SPECIAL = [0, 1, 0x7f, 0x80, 0xfe, 0xff]

function mutate (rng: Random, src: Uint8Array, corpus: Uint8Array[]): Uint8Array {
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

function garbage (rng: Random): Uint8Array {
  const n = rng.int(200)
  const b = new Uint8Array(n)
  for (let i = 0; i < n; i++) b[i] = rng.int(256)
  if (n >= 5) {
    b[0] = rng.int(4) === 0 ? 1 + rng.int(4) : 64 + rng.int(10)
    new DataView(b.buffer).setUint32(1, rng.int(2) === 0 ? n - 5 : rng.int(n * 2))
  }
  return b
}

describe('replication codec fuzz (seeded)', function () {
  this.timeout(120_000)

  it(`${INPUTS} garbage and mutated inputs: typed errors only, no big allocation, canonical when accepted`, () => {
    const rng = new SeededRandom(20240108)
    const items: ReplicationItem[] = [...sampleMessages(), ...sampleGeneration(rng)]
    const corpus = items.map(i => encodeReplicationItem(i))
    const codes = new Map<string, number>()
    let accepted = 0
    let controlAccepted = 0
    for (let n = 0; n < INPUTS; n++) {
      const input = n % 5 === 0 ? garbage(rng) : mutate(rng, corpus[rng.int(corpus.length)] as Uint8Array, corpus)
      // 1. the one-frame control decoder
      try {
        const msg = decodeControl(input)
        assert.deepEqual(encodeControl(msg), input, 'a decoded control frame must re-encode to the same bytes')
        controlAccepted++
      } catch (err) {
        if (!isPeerProtocolError(err)) throw new Error(`input ${n}: decodeControl threw a non-protocol error: ${String(err)}`, { cause: err })
      }
      // 2. the stream decoder, fed in random chunks
      const dec = new ReplicationDecoder()
      const out: ReplicationItem[] = []
      try {
        for (const c of randomChunks(rng, input, 1 + rng.int(64))) out.push(...dec.push(c))
        dec.end()
        accepted++
        assert.deepEqual(concat(out.map(i => encodeReplicationItem(i))), input, 'accepted items must re-encode to the input')
      } catch (err) {
        if (!isPeerProtocolError(err)) throw new Error(`input ${n}: stream decoder threw a non-protocol error: ${String(err)}`, { cause: err })
        const code = (err as { code: string }).code
        codes.set(code, (codes.get(code) ?? 0) + 1)
      }
      assert.ok(dec.peakAllocation <= Math.max(65536, 2 * input.byteLength), `input ${n}: allocated ${dec.peakAllocation} for ${input.byteLength} bytes`)
    }
    if (process.env.VMESH_FUZZ_STATS !== undefined) console.log({ accepted, controlAccepted, codes: Object.fromEntries(codes) })
    // the mutations reach deep into the codecs, not just the header check
    assert.ok(codes.size >= 10, `only ${codes.size} distinct error codes: ${[...codes.keys()].join(', ')}`)
    assert.ok(accepted > 100 && controlAccepted > 100, `accepted ${accepted} stream, ${controlAccepted} control inputs`)
    for (const code of ['ERR_REPLICATION_BAD_RANGES', 'ERR_REPLICATION_BAD_ENUM', 'ERR_REPLICATION_FRAME_TOO_LARGE', 'ERR_REPLICATION_TRUNCATED', 'ERR_REPLICATION_UNKNOWN_FRAME', 'ERR_REPLICATION_MALFORMED_FRAME', 'ERR_REPLICATION_LIMIT_EXCEEDED']) {
      assert.ok(codes.has(code), `never hit ${code}`)
    }
  })
})
