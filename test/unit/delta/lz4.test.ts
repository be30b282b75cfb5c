import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { SeededRandom } from '../../../common/random.ts'
import { loadJsLz4, lz4 } from '../../../common/lz4.ts'
import { decodeBlock, encodeBlock } from '../../../protocol/delta/block.ts'
import { randomBytes } from './fixtures.ts'

/**
 * Linux nodes encode with the native lz4 addon, Windows nodes installed without a toolchain with
 * the package's pure-JS codec: each must decode the other's blocks byte for byte.
 */
const js = loadJsLz4()
const native = (() => {
  try {
    const m = createRequire(import.meta.url)('lz4') as { encodeBlock: (s: Uint8Array, d: Uint8Array) => number, decodeBlock: (s: Uint8Array, d: Uint8Array) => number, encodeBound: (n: number) => number }
    return m
  } catch { return null }
})()

function samples (rng: SeededRandom): Uint8Array[] {
  const text = Buffer.from('vmesh replicates VHDX blocks between Hyper-V hosts. '.repeat(2000))
  const out: Uint8Array[] = []
  for (const n of [1, 13, 64, 4096, 65536, 1 << 20]) {
    out.push(randomBytes(rng, n))
    out.push(new Uint8Array(text.subarray(0, n)))
    const mixed = randomBytes(rng, n)
    mixed.fill(7, 0, n >>> 1)
    out.push(mixed)
  }
  return out
}

describe('lz4: the JS fallback and the native codec interoperate (common/lz4)', () => {
  const rng = new SeededRandom(5)

  it('uses the native addon on Linux, the JS codec where it cannot load', () => {
    assert.equal(lz4.impl, process.platform === 'linux' && process.env.VMESH_LZ4 !== 'js' ? 'native' : 'js')
  })

  it('JS-encoded blocks decode with the native addon, and native-encoded with JS', function () {
    if (native === null) this.skip()
    for (const raw of samples(rng)) {
      const bound = native.encodeBound(raw.length)
      const a = Buffer.alloc(bound)
      const na = native.encodeBlock(raw, a)
      const b = Buffer.alloc(js.encodeBound(raw.length))
      const nb = js.encodeBlock(raw, b)
      if (na > 0) {
        const out = Buffer.alloc(raw.length)
        assert.equal(js.decodeBlock(a.subarray(0, na), out), raw.length)
        assert.deepEqual(new Uint8Array(out), raw)
      }
      if (nb > 0) {
        const out = Buffer.alloc(raw.length)
        assert.equal(native.decodeBlock(b.subarray(0, nb), out), raw.length)
        assert.deepEqual(new Uint8Array(out), raw)
      }
    }
  })

  it('the JS encoder gives up (0) when the result does not fit the budget, like the native one', () => {
    const random = randomBytes(rng, 65536)
    assert.equal(js.encodeBlock(random, Buffer.alloc(65536 - 2048)), 0)
    const text = Buffer.from('abcd'.repeat(16384))
    const n = js.encodeBlock(text, Buffer.alloc(4096))
    assert.ok(n > 0 && n <= 4096)
  })

  it('delta blocks round-trip through whichever codec is loaded', () => {
    for (const raw of samples(rng)) {
      const e = encodeBlock(raw)
      assert.deepEqual(new Uint8Array(decodeBlock(e, { maxLength: 1 << 21 })), raw)
    }
  })

  it('the JS decoder answers damaged input with a bad length, never a crash (2 000 mutations)', () => {
    const text = Buffer.from('the quick brown fox jumps over the lazy dog '.repeat(1500))
    const enc = Buffer.alloc(js.encodeBound(text.length))
    const n = js.encodeBlock(text, enc)
    for (let i = 0; i < 2000; i++) {
      const m = Buffer.from(enc.subarray(0, n))
      for (let k = 0; k < 1 + rng.int(8); k++) m[rng.int(m.length)] = rng.int(256)
      const out = Buffer.alloc(text.length)
      const r = js.decodeBlock(m.subarray(0, rng.int(2) === 0 ? m.length : rng.int(m.length)), out)
      assert.equal(typeof r, 'number')
    }
  })
})
