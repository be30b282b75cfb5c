/**
 * Seeded fuzz of the receive path: mutated generations go through FrameDecoder (in random chunk
 * splits), GenerationValidator and decodeBlock, exactly as a receiver would use them. The only
 * acceptable failures are DeltaProtocolError subclasses; any other exception, a body buffer larger
 * than what arrived, or a slow input fails the test. Rerun one case with FUZZ_ONLY=<index>.
 */
import assert from 'node:assert/strict'
import { SeededRandom } from '../../../common/random.ts'
import { concat } from './fixtures.ts'
import { deltaCorpus, mutateDelta as mutate, receiveDelta as receive, type DeltaSample as Sample } from '../../helpers/fuzz/delta.ts'

const ITERATIONS = Number(process.env.FUZZ_ITERATIONS ?? 100_000)
const SEED = 0x5eed
describe('delta receive path fuzz', function () {
  this.timeout(120_000)
  let corpus: Sample[]

  before(async () => {
    corpus = await deltaCorpus()
  })

  it('the unmutated corpus is accepted', () => {
    for (const s of corpus) assert.equal(receive(new SeededRandom(1), concat(s.frames), { alloc: 0 }), 'ok')
  })

  it(`${ITERATIONS} mutated inputs fail only with typed errors, bounded memory and time`, () => {
    const only = process.env.FUZZ_ONLY
    const outcomes = new Map<string, number>()
    let slowest = 0
    const t0 = performance.now()
    for (let i = 0; i < ITERATIONS; i++) {
      if (only !== undefined && String(i) !== only) continue
      const rng = new SeededRandom(SEED + i)
      const input = mutate(rng, corpus)
      const peak = { alloc: 0 }
      const start = performance.now()
      let outcome: string
      try {
        outcome = receive(rng, input, peak)
      } catch (err) {
        assert.fail(`input ${i} (FUZZ_ONLY=${i}) threw a non-delta error: ${err instanceof Error ? `${err.name}: ${err.message}\n${err.stack ?? ''}` : String(err)}`)
      }
      const took = performance.now() - start
      slowest = Math.max(slowest, took)
      // the body buffer follows the bytes that arrived, never the declared length
      assert.ok(peak.alloc <= Math.max(64 * 1024, 2 * input.byteLength), `input ${i}: allocated ${peak.alloc} for ${input.byteLength} bytes`)
      assert.ok(took < 2000, `input ${i} took ${took.toFixed(0)} ms`)
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)
    }
    const seconds = (performance.now() - t0) / 1000
    if (only === undefined) {
      console.log(`      fuzz: ${ITERATIONS} inputs in ${seconds.toFixed(1)} s, slowest ${slowest.toFixed(1)} ms`)
      console.log(`      outcomes: ${JSON.stringify(Object.fromEntries([...outcomes].sort((a, b) => b[1] - a[1])))}`)
      // the mutations must reach deep: many distinct refusals, and some inputs still valid
      assert.ok(outcomes.size >= 15, `only ${outcomes.size} distinct outcomes`)
      for (const code of ['ERR_DELTA_CHECKSUM_MISMATCH', 'ERR_DELTA_FRAME_TOO_LARGE', 'ERR_DELTA_TRUNCATED', 'ERR_DELTA_UNKNOWN_FRAME', 'ERR_DELTA_SEQUENCE', 'ERR_DELTA_DIGEST_MISMATCH']) {
        assert.ok((outcomes.get(code) ?? 0) > 0, `no input reached ${code}`)
      }
    }
  })
})
