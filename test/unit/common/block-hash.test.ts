import assert from 'node:assert/strict'
import { BLOCK_HASH_BYTES, blake3, hashBlocks, hashBlocksInto } from '../../../common/blake3.ts'
import { isAllZero } from '../../../common/zero.ts'

describe('common/blake3: the one per-block hash loop', () => {
  const data = new Uint8Array(10_000)
  for (let i = 0; i < data.length; i++) data[i] = i < 4096 || i >= 8192 ? (i * 31) & 0xff : 0
  data[4096] = 0

  it('hashes each block, the last one short, like hashing each block alone', () => {
    const hs = hashBlocks(data, 4096)
    assert.equal(hs.length, 3)
    hs.forEach((h, i) => assert.deepEqual(h, blake3(data.subarray(i * 4096, Math.min(data.length, (i + 1) * 4096)), BLOCK_HASH_BYTES)))
    assert.equal(hashBlocks(data, 4096, 5000).length, 2)
    assert.deepEqual(hashBlocks(data, 4096, 5000)[1], blake3(data.subarray(4096, 5000), 16))
  })

  it('with a zero mask, skips all-zero blocks without hashing them', () => {
    const hashes = new Uint8Array(3 * 16).fill(7)
    const mask = new Uint8Array(3)
    assert.equal(hashBlocksInto(data, data.length, 4096, hashes, mask), 3)
    assert.deepEqual([...mask], [0, 1, 0])
    assert.deepEqual(hashes.subarray(16, 32), new Uint8Array(16).fill(7))
    assert.ok(isAllZero(data.subarray(4096, 8192)) && !isAllZero(data.subarray(4095, 8192)) && isAllZero(new Uint8Array(0)))
  })
})
