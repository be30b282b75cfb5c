import assert from 'node:assert/strict'
import { hash as packageHash } from 'blake3'
import { SeededRandom } from '../../../common/random.ts'
import { blake3, blake3Impl, blake3Package, createBlake3 } from '../../../common/blake3.ts'
import { randomBytes } from './fixtures.ts'

describe('BLAKE3 without the package stream wrapper (common/blake3)', () => {
  const rng = new SeededRandom(11)

  it('uses the native binding directly on Linux (the WebAssembly build where it cannot load)', function () {
    assert.equal(blake3Impl, process.platform === 'linux' && process.env.VMESH_BLAKE3 !== 'wasm' ? 'native-direct' : 'wasm')
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
