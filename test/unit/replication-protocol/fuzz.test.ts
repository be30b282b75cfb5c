import assert from 'node:assert/strict'
import { SeededRandom } from '../../../common/random.ts'
import { decodeControl, encodeControl } from '../../../protocol/replication/codec.ts'
import { isPeerProtocolError } from '../../../protocol/replication/errors.ts'
import { ReplicationDecoder, encodeReplicationItem } from '../../../protocol/replication/stream.ts'
import type { ReplicationItem } from '../../../protocol/replication/stream.ts'
import { concat, randomChunks, sampleGeneration, sampleMessages } from './fixtures.ts'
import { mutateReplication as mutate, replicationGarbage as garbage } from '../../helpers/fuzz/replication.ts'

const INPUTS = 24_000
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
