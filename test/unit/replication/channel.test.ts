import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { Channel } from '../../../daemon/replication/channel.ts'
import { encodeReplicationItem, ReplicationDecoder, type ReplicationItem } from '../../../protocol/replication/index.ts'
import { encodeBlock, type BlocksFrame } from '../../../protocol/delta/index.ts'
import { SeededRandom } from '../../../common/random.ts'
import { FakeStream, flush } from './fake-stream.ts'

describe('replication channel', () => {
  it('pauses the stream while the queue is above the high-water mark and resumes below the low one', async () => {
    const s = new FakeStream()
    const ch = new Channel(s, { highWaterBytes: 200_000, lowWaterBytes: 50_000 })
    const frame = encodeReplicationItem({ type: 'blocks', fileId: 0, entries: [{ offset: 0, ...encodeBlock(new Uint8Array(randomBytes(65536))) }] })
    for (let i = 0; i < 5; i++) s.deliver(frame)
    assert.equal(s.paused, true)
    for (let i = 0; i < 4; i++) await ch.next()
    assert.equal(s.paused, true, 'one 64 KiB frame left is still above the low-water mark')
    await ch.next()
    assert.equal(s.paused, false)
    assert.ok(s.maxReadBufferLength >= 64 * 1024 * 1024)
  })

  it('waits for drain when send() asks for it', async () => {
    const s = new FakeStream(10)
    const ch = new Channel(s)
    let done = false
    const p = ch.write(new Uint8Array(100)).then(() => { done = true })
    await flush()
    assert.equal(done, false)
    s.drain()
    await p
    assert.equal(done, true)
  })

  it('pays the limiter in pieces of at most 32 KiB when it has a finite rate', async () => {
    const s = new FakeStream()
    const ch = new Channel(s)
    const takes: number[] = []
    await ch.write(new Uint8Array(100_000), { rate: 1000, take: async (n) => { takes.push(n) } })
    assert.deepEqual(takes, [32768, 32768, 32768, 1696])
    assert.equal(s.sent.reduce((n, b) => n + b.byteLength, 0), 100_000)
  })

  it('poisons itself and aborts the stream on undecodable bytes', async () => {
    const s = new FakeStream()
    let reported = 0
    const ch = new Channel(s, { onProtocolError: () => { reported++ } })
    s.deliver(new Uint8Array([0xee, 0, 0, 0, 0]))
    assert.ok(s.aborted !== undefined)
    assert.equal(reported, 1)
    await assert.rejects(ch.next(), (err: Error) => err.name === 'ReplicationUnknownFrameError')
  })

  it('answers pings ahead of queued work when asked to', async () => {
    const s = new FakeStream()
    const ch = new Channel(s, { answerPing: (p) => ({ type: 'pong', nonce: p.nonce, echoTimestampMs: p.timestampMs, timestampMs: 5 }) })
    s.deliver(encodeReplicationItem({ type: 'hashRequest', requestId: 1, fileId: 0, offset: 0, length: 1, blockSize: 1 }))
    s.deliver(encodeReplicationItem({ type: 'ping', nonce: 7, timestampMs: 3 }))
    const pong = s.items().find(i => i.type === 'pong')
    assert.ok(pong?.type === 'pong' && pong.nonce === 7 && pong.echoTimestampMs === 3)
    assert.equal((await ch.next())?.type, 'hashRequest', 'the queued request is still there')
  })

  it('decodes frames cut into chunks anywhere exactly like the decoder does', async () => {
    const rng = new SeededRandom(3)
    const blocks = (n: number, size: number): BlocksFrame => ({ type: 'blocks', fileId: 1, entries: Array.from({ length: n }, (_, i) => ({ offset: i * size, ...encodeBlock(i % 3 === 1 ? new Uint8Array(size) : new Uint8Array(randomBytes(size))) })) })
    const items: ReplicationItem[] = [
      { type: 'ping', nonce: 1, timestampMs: 2 },
      blocks(17, 65536),
      { type: 'hashRequest', requestId: 3, fileId: 0, offset: 0, length: 10, blockSize: 4 },
      blocks(3, 4096),
      blocks(16, 65536)
    ]
    const bytes = Buffer.concat(items.map(i => encodeReplicationItem(i)))
    const want = normalize(new ReplicationDecoder().push(new Uint8Array(bytes)))
    for (let round = 0; round < 20; round++) {
      const s = new FakeStream()
      const ch = new Channel(s)
      // a few random cuts, some a byte apart, the last round one byte at a time for the first 100
      for (let at = 0; at < bytes.length;) {
        const n = round === 19 && at < 100 ? 1 : 1 + rng.int(round % 2 === 0 ? 70_000 : 3000)
        s.deliver(new Uint8Array(bytes.subarray(at, at + n)))
        at += n
      }
      s.end()
      const got: ReplicationItem[] = []
      for (let item = await ch.next(); item !== null; item = await ch.next()) {
        got.push(item)
        if (round % 3 === 0) ch.release(item)
      }
      // released frames are reused: items taken before the next release are still intact
      if (round % 3 !== 0) assert.deepEqual(normalize(got), want)
    }
  })

  it('reuses a released frame buffer for a later frame, and never one still held', async () => {
    const s = new FakeStream()
    const ch = new Channel(s)
    const marked = (m: number): Uint8Array => { const b = new Uint8Array(randomBytes(65536)); b[0] = m; return b }
    const frame = (fill: number): Uint8Array => encodeReplicationItem({ type: 'blocks', fileId: 0, entries: [0, 1].map(i => ({ offset: i * 65536, ...encodeBlock(marked(fill + i)) })) })
    const deliverSplit = (b: Uint8Array): void => { s.deliver(new Uint8Array(b.subarray(0, 1000))); s.deliver(new Uint8Array(b.subarray(1000))) }
    deliverSplit(frame(1))
    const a = await ch.next() as BlocksFrame
    deliverSplit(frame(3))
    const b = await ch.next() as BlocksFrame
    assert.notEqual(a.entries[0]?.payload.buffer, b.entries[0]?.payload.buffer, 'a held frame is not reused')
    assert.equal(a.entries[1]?.payload[0], 2)
    ch.release(a)
    deliverSplit(frame(5))
    const c = await ch.next() as BlocksFrame
    assert.equal(c.entries[0]?.payload.buffer, a.entries[0]?.payload.buffer, 'the released buffer is reused')
    assert.equal(c.entries[1]?.payload[0], 6)
    assert.equal(b.entries[1]?.payload[0], 4)
    ch.release(c)
    ch.release(c)
    ch.release(b)
    // trimmed to none: the next gathered frame gets a buffer of its own
    ch.trimPool(0)
    deliverSplit(frame(7))
    const d = await ch.next() as BlocksFrame
    assert.notEqual(d.entries[0]?.payload.buffer, c.entries[0]?.payload.buffer)
    assert.notEqual(d.entries[0]?.payload.buffer, b.entries[0]?.payload.buffer)
    assert.equal(d.entries[1]?.payload[0], 8)
  })

  it('sends a blocks frame as parts that decode to the same frame, also through a limiter', async () => {
    const frame: BlocksFrame = { type: 'blocks', fileId: 2, entries: [0, 1, 2].map(i => ({ offset: i * 65536, ...encodeBlock(i === 1 ? new Uint8Array(65536) : new Uint8Array(randomBytes(65536))) })) }
    const s = new FakeStream()
    const ch = new Channel(s)
    const n = await ch.sendItem(frame)
    assert.equal(n, encodeReplicationItem(frame).byteLength)
    assert.deepEqual(normalize(s.items()), normalize([frame]))
    const t = new FakeStream()
    const ch2 = new Channel(t)
    const takes: number[] = []
    await ch2.sendItem(frame, { rate: 1000, take: async (k) => { takes.push(k) } })
    assert.ok(takes.every(k => k <= 32768))
    assert.equal(takes.reduce((a, b) => a + b, 0), n)
    assert.deepEqual(normalize(t.items()), normalize([frame]))
  })

  it('returns null after a clean remote close, and rejects a frame cut off by it', async () => {
    const s = new FakeStream()
    const ch = new Channel(s)
    s.deliver(encodeReplicationItem({ type: 'ping', nonce: 1, timestampMs: 2 }))
    s.end()
    assert.equal((await ch.next())?.type, 'ping')
    assert.equal(await ch.next(), null)
    const t = new FakeStream()
    const ch2 = new Channel(t)
    t.deliver(encodeReplicationItem({ type: 'ping', nonce: 1, timestampMs: 2 }).subarray(0, 7))
    t.end()
    await assert.rejects(ch2.next(), (err: Error) => err.name === 'ReplicationTruncatedError')
  })
})

/** Items compared as plain data (views and Buffers as hex). */
function normalize (items: ReplicationItem[]): unknown {
  return JSON.parse(JSON.stringify(items, (_k, v: unknown) => v instanceof Uint8Array ? Buffer.from(v).toString('hex') : (v as { type?: string, data?: number[] })?.type === 'Buffer' ? Buffer.from((v as { data: number[] }).data).toString('hex') : v))
}
