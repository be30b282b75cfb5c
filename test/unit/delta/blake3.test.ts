import assert from 'node:assert/strict'
import { SeededRandom } from '../../../common/random.ts'
import { blake3, blake3Impl, blake3Package, createBlake3 } from '../../../common/blake3.ts'

// the package's own API where it loads (Linux); on Windows without the native addon it cannot,
// and the official test vectors below anchor the WebAssembly path instead
const packageHash: (data: Uint8Array, o: { length: number }) => Uint8Array = await (async () => {
  try {
    const m = await import('blake3') as { hash: (d: Uint8Array, o: { length: number }) => Uint8Array }
    m.hash(new Uint8Array(1), { length: 16 })
    return m.hash
  } catch {
    return (d: Uint8Array, o: { length: number }) => blake3Package(d, o.length)
  }
})()
import { randomBytes } from './fixtures.ts'

describe('BLAKE3 without the package stream wrapper (common/blake3)', () => {
  const rng = new SeededRandom(11)

  it('uses the native binding directly on Linux (the WebAssembly build where it cannot load)', function () {
    assert.equal(blake3Impl, process.platform === 'linux' && process.env.VMESH_BLAKE3 !== 'wasm' ? 'native-direct' : 'wasm')
  })

  it('matches the BLAKE3 reference vectors', () => {
    assert.equal(Buffer.from(blake3(new Uint8Array(0), 32)).toString('hex'), 'af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262')
    assert.equal(Buffer.from(blake3(Buffer.from('abc'), 32)).toString('hex'), '6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85')
    assert.equal(Buffer.from(blake3Package(Buffer.from('abc'), 32)).toString('hex'), '6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85')
  })

  it('gives the package digests for every length, one-shot and incremental', () => {
    for (const n of [0, 1, 63, 64, 65, 1023, 1024, 1025, 4096, 65536, 65537, 1 << 20]) {
      const data = randomBytes(rng, n)
      const want = new Uint8Array(packageHash(data, { length: 16 }))
      assert.deepEqual(blake3(data, 16), want)
      assert.deepEqual(blake3Package(data, 16), want)
      const h = createBlake3()
      // uneven pieces, an empty one included
      for (let at = 0, k = 0; at < n || k === 0; k++) {
        const take = Math.min(n - at, 1 + rng.int(7000))
        h.update(data.subarray(at, at + take))
        at += take
      }
      assert.deepEqual(h.digest(16), want)
      assert.deepEqual(blake3(data, 32), new Uint8Array(packageHash(data, { length: 32 })))
    }
  })

  it('returns plain Uint8Arrays of their own', () => {
    const a = blake3(randomBytes(rng, 100), 16)
    const b = blake3(randomBytes(rng, 100), 16)
    assert.equal(Object.getPrototypeOf(a), Uint8Array.prototype)
    assert.notEqual(a.buffer, b.buffer)
  })
})
