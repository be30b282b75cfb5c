import assert from 'node:assert/strict'
import { Uint8ArrayList } from 'uint8arraylist'
import { SeededRandom } from '../../../common/random.ts'
import { encodeFrame } from '../../../protocol/delta/codec.ts'
import { DeltaProtocolError } from '../../../protocol/delta/errors.ts'
import { encodeControl } from '../../../protocol/replication/codec.ts'
import { isControlMessage } from '../../../protocol/replication/messages.ts'
import type { ReplicationItem } from '../../../protocol/replication/stream.ts'
import {
  ReplicationDecoder, decodeReplicationStream, encodeReplicationItem, encodeReplicationStream
} from '../../../protocol/replication/stream.ts'
import { concat, normalize, randomChunks, sampleGeneration, sampleMessages } from './fixtures.ts'

function session (rng: SeededRandom): ReplicationItem[] {
  const msgs = sampleMessages()
  return [msgs[0]!, msgs[2]!, ...sampleGeneration(rng), msgs[5]!, msgs[19]!, ...sampleGeneration(rng), msgs[7]!, msgs[20]!, msgs[17]!]
}

async function collect<T> (it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const x of it) out.push(x)
  return out
}

describe('replication stream (delta frames + control messages)', () => {
  it('decodes an interleaved session from chunks split anywhere', () => {
    const rng = new SeededRandom(1)
    const items = session(rng)
    const bytes = concat(items.map(i => encodeReplicationItem(i)))
    for (let trial = 0; trial < 200; trial++) {
      const dec = new ReplicationDecoder()
      const out: ReplicationItem[] = []
      for (const c of randomChunks(rng, bytes, trial < 100 ? 7 : 3000)) out.push(...dec.push(c))
      dec.end()
      assert.deepEqual(normalize(out), normalize(items))
    }
    // one byte at a time, and the whole stream at once
    const one = new ReplicationDecoder()
    const out: ReplicationItem[] = []
    for (let i = 0; i < bytes.byteLength; i++) out.push(...one.push(bytes.subarray(i, i + 1)))
    assert.deepEqual(normalize(out), normalize(items))
    assert.deepEqual(normalize(new ReplicationDecoder().push(bytes)), normalize(items))
  })

  it('tells control messages from delta frames by type', () => {
    const items = new ReplicationDecoder().push(concat(session(new SeededRandom(2)).map(i => encodeReplicationItem(i))))
    assert.deepEqual(items.map(i => isControlMessage(i)), [true, true, false, false, false, true, true, false, false, false, true, true, true])
  })

  it('accepts Uint8ArrayList chunks and async sources; encodeReplicationStream mirrors it', async () => {
    const rng = new SeededRandom(3)
    const items = session(rng)
    const encoded = await collect(encodeReplicationStream(items))
    assert.equal(encoded.length, items.length)
    const lists = encoded.map(b => new Uint8ArrayList(b.subarray(0, 3), b.subarray(3)))
    const out = await collect(decodeReplicationStream((async function * () { yield * lists })()))
    assert.deepEqual(normalize(out), normalize(items))
  })

  it('judges a header before buffering its body: hostile lengths allocate nothing', () => {
    // hello claiming a 4 GiB body
    const dec = new ReplicationDecoder()
    assert.throws(() => dec.push(Uint8Array.of(64, 0xff, 0xff, 0xff, 0xff)), { name: 'ReplicationFrameTooLargeError' })
    assert.equal(dec.peakAllocation, 0)
    // poisoned: the same error again, even for good input
    assert.throws(() => dec.push(encodeControl({ type: 'ping', nonce: 1, timestampMs: 1 })), { name: 'ReplicationFrameTooLargeError' })
    // a delta blocks frame claiming 4 GiB goes through the delta codec's check
    const d = new ReplicationDecoder()
    assert.throws(() => { d.push(Uint8Array.of(2, 0xff)); d.push(Uint8Array.of(0xff, 0xff, 0xff)) }, (err: Error) => err instanceof DeltaProtocolError)
    assert.equal(d.peakAllocation, 0)
    // a legal but large declared body (1 MiB of hashes) grows only with what arrives
    const g = new ReplicationDecoder()
    const header = new Uint8Array(5 + 25)
    header[0] = 70
    new DataView(header.buffer).setUint32(1, 25 + 65536 * 16)
    assert.deepEqual(g.push(header), [])
    assert.ok(g.peakAllocation <= 64 * 1024, `peak ${g.peakAllocation}`)
    assert.equal(g.bufferedBytes, 25)
    // an unknown type byte fails on its first byte
    assert.throws(() => new ReplicationDecoder().push(Uint8Array.of(16)), { name: 'ReplicationUnknownFrameError', code: 'ERR_REPLICATION_UNKNOWN_FRAME' })
    assert.throws(() => new ReplicationDecoder().push(Uint8Array.of(200)), { name: 'ReplicationUnknownFrameError' })
  })

  it('input that ends inside a frame is ReplicationTruncatedError', async () => {
    const ping = encodeControl({ type: 'ping', nonce: 1, timestampMs: 1 })
    for (const cut of [1, 4, 5, ping.byteLength - 1]) {
      const dec = new ReplicationDecoder()
      dec.push(ping.subarray(0, cut))
      assert.throws(() => { dec.end() }, { name: 'ReplicationTruncatedError', code: 'ERR_REPLICATION_TRUNCATED' })
    }
    await assert.rejects(collect(decodeReplicationStream([ping, ping.subarray(0, 7)])), { name: 'ReplicationTruncatedError' })
  })

  it('delta frames keep the delta codec checks (typed delta errors)', () => {
    const rng = new SeededRandom(4)
    const blocks = encodeFrame(sampleGeneration(rng)[1]!)
    const bad = blocks.slice()
    bad[5 + 4 + 4 + 8 + 4] = 9 // first entry's encoding byte
    assert.throws(() => new ReplicationDecoder().push(bad), (err: Error) => err instanceof DeltaProtocolError && err.name === 'DeltaBadEncodingError')
  })

  it('stops with AbortedError when the signal fires, even while the source waits', async () => {
    const ac = new AbortController()
    let release: (() => void) | undefined
    const source = (async function * () {
      yield encodeControl({ type: 'ping', nonce: 1, timestampMs: 1 })
      await new Promise<void>(resolve => { release = resolve })
      yield encodeControl({ type: 'ping', nonce: 2, timestampMs: 2 })
    })()
    const got: ReplicationItem[] = []
    const run = (async () => { for await (const item of decodeReplicationStream(source, { signal: ac.signal })) got.push(item) })()
    await new Promise(resolve => setImmediate(resolve))
    assert.equal(got.length, 1)
    ac.abort(new Error('shutdown'))
    await assert.rejects(run, { name: 'AbortedError', code: 'ERR_ABORTED' })
    release?.()
  })
})
