import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { AdaptiveEncoder } from '../../../daemon/replication/encoder.ts'
import { BlockEncoding, decodeBlock } from '../../../protocol/delta/index.ts'

describe('adaptive block encoder', () => {
  it('stops trying lz4 after a run of incompressible blocks, and probes again later', () => {
    const enc = new AdaptiveEncoder({ rawStreak: 2, skipBlocks: 3 })
    const random = (): Uint8Array => new Uint8Array(randomBytes(4096))
    const text = new Uint8Array(4096).fill(0x41)
    assert.equal(enc.encode(random()).encoding, BlockEncoding.Raw)
    assert.equal(enc.encode(random()).encoding, BlockEncoding.Raw)
    // skipping: even a compressible block goes raw (3 blocks), zeros stay zero
    assert.equal(enc.encode(text).encoding, BlockEncoding.Raw)
    assert.equal(enc.encode(new Uint8Array(4096)).encoding, BlockEncoding.Zero)
    assert.equal(enc.encode(text).encoding, BlockEncoding.Raw)
    assert.equal(enc.skipped, 3)
    // probing again
    assert.equal(enc.encode(text).encoding, BlockEncoding.Lz4)
  })

  it('doubles the skip while probes keep failing, and tries every block again once one compresses', () => {
    const enc = new AdaptiveEncoder({ rawStreak: 2, skipBlocks: 2, maxSkipBlocks: 8 })
    const random = (): Uint8Array => new Uint8Array(randomBytes(4096))
    const text = new Uint8Array(4096).fill(0x41)
    const tried = (): number => { const before = enc.skipped; enc.encode(random()); return enc.skipped === before ? 1 : 0 }
    // 2 tries start a skip of 2; then probes, each followed by a skip of 4, 8, 8 (the cap)
    const pattern: number[] = []
    for (let i = 0; i < 2 + 2 + 1 + 4 + 1 + 8 + 1 + 8 + 1; i++) pattern.push(tried())
    assert.deepEqual(pattern, [1, 1, 0, 0, 1, 0, 0, 0, 0, 1, ...new Array(8).fill(0), 1, ...new Array(8).fill(0), 1])
    // skipping now (8 blocks): the next probe is a compressible block, which resets the back-off
    for (let i = 0; i < 8; i++) enc.encode(random())
    assert.equal(enc.encode(text).encoding, BlockEncoding.Lz4)
    assert.equal(enc.encode(text).encoding, BlockEncoding.Lz4)
    assert.equal(enc.encode(random()).encoding, BlockEncoding.Raw)
    assert.equal(tried(), 1)
  })

  it('every block it makes decodes and verifies', () => {
    const enc = new AdaptiveEncoder({ rawStreak: 1, skipBlocks: 2 })
    for (let i = 0; i < 20; i++) {
      const raw = i % 3 === 0 ? new Uint8Array(8192).fill(i) : new Uint8Array(randomBytes(8192))
      const e = enc.encode(raw)
      assert.deepEqual(decodeBlock(e, { maxLength: 8192 }), raw)
    }
  })
})
