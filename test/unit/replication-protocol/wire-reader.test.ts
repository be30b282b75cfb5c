import assert from 'node:assert/strict'
import { BoundedReader } from '../../../protocol/common/wire-reader.ts'
import { WireReader } from '../../../protocol/delta/wire.ts'
import { Reader } from '../../../protocol/replication/wire.ts'

class TestMalformed extends Error { override name = 'TestMalformed' }
class TestLimit extends Error { override name = 'TestLimit' }

const bytes = (...xs: number[]): Uint8Array => new Uint8Array(xs)

describe('shared bounded wire reader (protocol/common)', () => {
  const errors = { malformed: (m: string) => new TestMalformed(m), limit: (m: string) => new TestLimit(m) }

  it('reads big-endian integers, views, strings and flags, and checks the end', () => {
    const body = bytes(7, 0x01, 0x02, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 2, 0x68, 0x69, 0b101, 0, 0, 0xaa)
    const r = new BoundedReader(body, 'test', errors)
    assert.equal(r.u8('a'), 7)
    assert.equal(r.u16('b'), 0x0102)
    assert.equal(r.u32('c'), 0x100)
    assert.equal(r.u64('d'), 9)
    assert.equal(r.string('s', 10), 'hi')
    assert.equal(r.flags('f', 0b111), 0b101)
    assert.equal(r.string('empty', 10, true), '')
    const v = r.bytes(1, 'v')
    assert.equal(v.buffer, body.buffer)
    assert.equal(r.remaining, 0)
    r.end()
  })

  it('throws the errors it was given, before reading past the end', () => {
    const cases: Array<[Uint8Array, (r: BoundedReader) => unknown, string]> = [
      [bytes(1), r => r.u16('x'), 'TestMalformed'],
      [bytes(0, 0, 0), r => r.u32('x'), 'TestMalformed'],
      [bytes(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), r => r.u64('x'), 'TestLimit'],
      [bytes(0, 5, 1, 2), r => r.string('s', 100), 'TestMalformed'],
      [bytes(0, 3, 1, 2, 3), r => r.string('s', 2), 'TestLimit'],
      [bytes(0, 0), r => r.string('s', 2), 'TestMalformed'],
      [bytes(0, 2, 0x61, 0), r => r.string('s', 2), 'TestMalformed'],
      [bytes(0, 2, 0xc3, 0x28), r => r.string('s', 2), 'TestMalformed'],
      [bytes(0b1000), r => r.flags('f', 0b111), 'TestMalformed'],
      [bytes(1, 2), r => { r.u8('x'); r.end() }, 'TestMalformed'],
      [bytes(1, 2), r => r.bytes(3, 'b'), 'TestMalformed']
    ]
    for (const [buf, read, name] of cases) assert.throws(() => read(new BoundedReader(buf, 'test', errors)), (err: Error) => err.name === name)
  })

  it('the delta and replication codecs each get their own error family', () => {
    const short = bytes(1)
    assert.throws(() => new WireReader(short, 'blocks').u32('x'), (err: Error & { code?: string }) => err.name === 'DeltaMalformedFrameError' && err.code === 'ERR_DELTA_MALFORMED_FRAME')
    assert.throws(() => new Reader(short, 'hello').u32('x'), (err: Error & { code?: string }) => err.name === 'ReplicationMalformedFrameError' && err.code === 'ERR_REPLICATION_MALFORMED_FRAME')
    const big = bytes(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
    assert.throws(() => new WireReader(big, 'end').u64('x'), (err: Error) => err.name === 'DeltaLimitExceededError')
    assert.throws(() => new Reader(big, 'ack').u64('x'), (err: Error) => err.name === 'ReplicationLimitExceededError')
    assert.throws(() => new WireReader(bytes(0, 2, 0xc3, 0x28), 'begin').string('vm', 10), (err: Error & { cause?: unknown }) => err.name === 'DeltaMalformedFrameError' && err.cause !== undefined)
  })
})
