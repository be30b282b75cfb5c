import assert from 'node:assert/strict'
import { crc32c } from '../../../storage/formats/crc32c.ts'

describe('crc32c', () => {
  it('matches the standard check value and the RFC 3720 vectors', () => {
    assert.equal(crc32c(new TextEncoder().encode('123456789')), 0xe3069283)
    assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa)
    assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43)
    assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e)
    assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i)), 0x113fdb5c)
    assert.equal(crc32c(new Uint8Array(0)), 0)
  })

  it('continues a running checksum and treats the skip span as zeros', () => {
    const data = Uint8Array.from({ length: 1000 }, (_, i) => (i * 37 + 11) & 0xff)
    for (const cut of [0, 1, 7, 8, 9, 500, 999, 1000]) {
      assert.equal(crc32c(data.subarray(cut), crc32c(data.subarray(0, cut))), crc32c(data))
    }
    const zeroed = data.slice()
    zeroed.fill(0, 4, 8)
    assert.equal(crc32c(data, 0, [4, 8]), crc32c(zeroed))
    assert.notEqual(crc32c(data, 0, [4, 8]), crc32c(data))
    assert.equal(crc32c(data, 0, [990, 2000]), crc32c(data.slice().fill(0, 990)))
  })
})
