import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { Channel } from '../../../daemon/replication/channel.ts'
import { encodeReplicationItem } from '../../../protocol/replication/index.ts'
import { encodeBlock } from '../../../protocol/delta/index.ts'
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
