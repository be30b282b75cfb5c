import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { encodeReplicationItem, CONTROL_PROTOCOL_VERSION, SeedMode, NackCode, type ReplicationItem, type HelloMessage } from '../../../protocol/replication/index.ts'
import { encodeGeneration, encodeBlock, FileKind, type Frame } from '../../../protocol/delta/index.ts'
import { receiverBed, sendItems } from './receiver-bed.ts'
import { FakeStream, until } from './fake-stream.ts'
import { SeededRandom } from '../../../common/random.ts'

const BS = 4096
const hello: HelloMessage = { type: 'hello', protocolVersion: CONTROL_PROTOCOL_VERSION, vm: 'vm1', sourceNode: 'hv-a', files: [{ fileId: 0, path: '/src/disk.img', kind: FileKind.Disk, size: 3 * BS, blockSize: BS }], seedMode: SeedMode.Full }

async function frames (data: Uint8Array, generation = 1, base = 0, opts: { blockSize?: number, only?: number[], framePayload?: number } = {}): Promise<Frame[]> {
  const bs = opts.blockSize ?? BS
  const out: Frame[] = []
  for await (const f of encodeGeneration({
    vm: 'vm1', generation, baseGeneration: base, consistent: true, createdAtMs: 1000,
    files: [{ fileId: 0, path: '/src/disk.img', size: data.length, blockSize: bs, kind: FileKind.Disk }],
    readBlocks: function * () {
      for (let o = 0, i = 0; o < data.length; o += bs, i++) if (opts.only === undefined || opts.only.includes(i)) yield { offset: o, data: data.subarray(o, o + bs) }
    },
    ...(opts.framePayload !== undefined ? { maxFramePayloadBytes: opts.framePayload } : {})
  })) out.push(f)
  return out
}

/** The bytes of `items`, delivered in chunks of random sizes (as a transport would). */
function deliverChunked (s: FakeStream, items: ReplicationItem[], rng: SeededRandom): void {
  const bytes = Buffer.concat(items.map(i => encodeReplicationItem(i)))
  for (let at = 0; at < bytes.length;) {
    const n = 1 + rng.int(80_000)
    s.deliver(new Uint8Array(bytes.subarray(at, at + n)))
    at += n
  }
}


describe('replication receiver (fake streams)', () => {
  const bed = receiverBed('vmesh-bed.rx-')
  const send = sendItems

  it('answers hello with targetState, applies a seed and acks it', async () => {
    const s = new FakeStream()
    const done = bed.rx.accept(s, 'PEER-A')
    send(s, [hello])
    await until('targetState', () => s.items().some(i => i.type === 'targetState'))
    const ts = s.items().find(i => i.type === 'targetState')
    assert.equal(ts?.type === 'targetState' && ts.appliedGeneration, 0)
    const data = new Uint8Array(3 * BS).map((_, i) => (i * 7) & 0xff)
    send(s, await frames(data))
    await until('ack', () => s.items().some(i => i.type === 'ack'))
    const store = await bed.replicas.open('hv-a', 'vm1')
    assert.equal(store.state().appliedGeneration, 1)
    assert.deepEqual(new Uint8Array(await readFile(store.state().files['/src/disk.img'] as string)), data)
    s.end()
    await done
    assert.equal(s.aborted, undefined)
  })

  it('a generation without files after a fuzzy seed becomes the recovery point; the bytes stay', async () => {
    const s = new FakeStream()
    const done = bed.rx.accept(s, 'PEER-A')
    send(s, [hello])
    await until('targetState', () => s.items().some(i => i.type === 'targetState'))
    const data = new Uint8Array(3 * BS).map((_, i) => (i * 13) & 0xff)
    const gen = async (generation: number, base: number, consistent: boolean, withFile: boolean): Promise<Frame[]> => {
      const out: Frame[] = []
      for await (const f of encodeGeneration({
        vm: 'vm1', generation, baseGeneration: base, consistent, createdAtMs: 1000 + generation,
        files: withFile ? [{ fileId: 0, path: '/src/disk.img', size: data.length, blockSize: BS, kind: FileKind.Disk }] : [],
        readBlocks: function * () { for (let o = 0; o < data.length; o += BS) yield { offset: o, data: data.subarray(o, o + BS) } }
      })) out.push(f)
      return out
    }
    send(s, await gen(1, 0, false, true))
    await until('ack 1', () => s.items().some(i => i.type === 'ack' && i.generation === 1))
    const store = await bed.replicas.open('hv-a', 'vm1')
    assert.equal(store.state().appliedConsistentGeneration, 0, 'a fuzzy seed is no recovery point')
    send(s, await gen(2, 1, true, false))
    await until('ack 2', () => s.items().some(i => i.type === 'ack' && i.generation === 2))
    assert.equal(store.state().appliedGeneration, 2)
    assert.equal(store.state().appliedConsistentGeneration, 2)
    assert.deepEqual(new Uint8Array(await readFile(store.state().files['/src/disk.img'] as string)), data)
    s.end()
    await done
    assert.equal(s.aborted, undefined)
  })

  it('aborts the stream on garbage and applies nothing', async () => {
    const s = new FakeStream()
    const done = bed.rx.accept(s, 'PEER-A')
    send(s, [hello])
    await until('targetState', () => s.items().length > 0)
    const f = await frames(new Uint8Array(3 * BS).fill(1))
    send(s, f.slice(0, 2))
    s.deliver(new Uint8Array([0xee, 0, 0, 0, 1, 0]))
    await done
    assert.ok(s.aborted !== undefined)
    assert.ok(bed.rx.protocolErrors >= 1)
    assert.equal((await bed.replicas.open('hv-a', 'vm1')).state().appliedGeneration, 0)
  })

  it('aborts on a structurally invalid generation (block past the declared size)', async () => {
    const s = new FakeStream()
    const done = bed.rx.accept(s, 'PEER-A')
    send(s, [hello])
    await until('targetState', () => s.items().length > 0)
    const f = await frames(new Uint8Array(3 * BS).fill(2))
    send(s, [f[0] as Frame, { type: 'blocks', fileId: 0, entries: [{ offset: 3 * BS, ...encodeBlock(new Uint8Array(BS).fill(3)) }] }])
    await done
    assert.ok(s.aborted !== undefined)
    assert.equal((await bed.replicas.open('hv-a', 'vm1')).state().appliedGeneration, 0)
  })

  it('refuses a block whose checksum fails: resend + nack, nothing applied, session continues', async () => {
    const s = new FakeStream()
    const done = bed.rx.accept(s, 'PEER-A')
    send(s, [hello])
    await until('targetState', () => s.items().length > 0)
    const f = await frames(new Uint8Array(3 * BS).fill(4))
    const blocks = f[1] as Extract<Frame, { type: 'blocks' }>
    const bad = { ...blocks, entries: blocks.entries.map((e, i) => i === 1 ? { ...e, checksum: new Uint8Array(16).fill(9) } : e) }
    // the digest covers checksums as sent: recompute the end frame for the altered frame
    const { GenerationValidator } = await import('../../../protocol/delta/index.ts')
    const v = new GenerationValidator(); v.accept(f[0] as Frame); v.accept(bad)
    send(s, [f[0] as Frame, bad, { type: 'end', generation: 1, blockCount: v.blockCount, byteCount: v.byteCount, digest: v.digest() }])
    await until('nack', () => s.items().some(i => i.type === 'nack'))
    const resend = s.items().find(i => i.type === 'resend')
    assert.ok(resend?.type === 'resend' && resend.offset === BS && resend.length === BS)
    const nack = s.items().find(i => i.type === 'nack')
    assert.equal(nack?.type === 'nack' && nack.code, NackCode.ChecksumMismatch)
    assert.equal((await bed.replicas.open('hv-a', 'vm1')).state().appliedGeneration, 0)
    // the same session then delivers a good generation
    send(s, await frames(new Uint8Array(3 * BS).fill(5), 2))
    await until('ack', () => s.items().some(i => i.type === 'ack'))
    assert.equal((await bed.replicas.open('hv-a', 'vm1')).state().appliedGeneration, 2)
    s.end()
    await done
  })

  it('refuses a hello naming another source node, and drops unknown peers at once', async () => {
    const s = new FakeStream()
    const done = bed.rx.accept(s, 'PEER-A')
    send(s, [{ ...hello, sourceNode: 'hv-x' }])
    await done
    assert.equal(s.items()[0]?.type, 'refuse')
    const u = new FakeStream()
    await bed.rx.accept(u, 'PEER-UNKNOWN')
    assert.ok(u.aborted !== undefined)
    assert.equal(u.sent.length, 0)
  })

  it('pipelines a seed of many frames, then an incremental of scattered and contiguous blocks, delivered in random chunks', async () => {
    const rng = new SeededRandom(21)
    const big = 64 * 1024
    const size = 48 * big + 1234
    const data = new Uint8Array(size).map((_, i) => (i * 31 + (i >> 11)) & 0xff)
    for (let b = 5; b < 9; b++) data.fill(0, b * big, (b + 1) * big) // zero blocks in the middle
    const h = { ...hello, files: [{ fileId: 0, path: '/src/disk.img', kind: FileKind.Disk, size, blockSize: big }] }
    const s = new FakeStream()
    const done = bed.rx.accept(s, 'PEER-A')
    send(s, [h])
    await until('targetState', () => s.items().some(i => i.type === 'targetState'))
    deliverChunked(s, await frames(data, 1, 0, { blockSize: big, framePayload: 256 * 1024 }), rng)
    await until('ack 1', () => s.items().some(i => i.type === 'ack' && i.generation === 1))
    const store = await bed.replicas.open('hv-a', 'vm1')
    const path = store.state().files['/src/disk.img'] as string
    assert.deepEqual(new Uint8Array(await readFile(path)), data)
    // generation 2: a run of contiguous blocks (one gathered write) and scattered ones
    const next = new Uint8Array(data)
    const changed = [1, 2, 3, 4, 10, 20, 21, 47, 48]
    for (const b of changed) for (let o = b * big; o < Math.min(size, (b + 1) * big); o++) next[o] = (o * 7 + 1) & 0xff
    deliverChunked(s, await frames(next, 2, 1, { blockSize: big, only: changed, framePayload: 128 * 1024 }), rng)
    await until('ack 2', () => s.items().some(i => i.type === 'ack' && i.generation === 2))
    // the ack leaves once the generation is durable; the in-place apply finishes right after
    await until('applied 2', () => store.state().appliedGeneration === 2)
    assert.deepEqual(new Uint8Array(await readFile(path)), next)
    s.end()
    await done
    assert.equal(s.aborted, undefined)
  })

  it('a write that fails after its frame was queued nacks the generation and applies nothing of it', async () => {
    const s = new FakeStream()
    const done = bed.rx.accept(s, 'PEER-A')
    send(s, [hello])
    await until('targetState', () => s.items().length > 0)
    const data = new Uint8Array(3 * BS).fill(7)
    send(s, await frames(data))
    await until('ack', () => s.items().some(i => i.type === 'ack'))
    const store = await bed.replicas.open('hv-a', 'vm1')
    const f2 = await frames(new Uint8Array(3 * BS).fill(8), 2, 1)
    send(s, f2.slice(0, 1))
    await until('generation 2 begun', () => existsSync(join(bed.replicas.dirOf('hv-a', 'vm1'), 'journal', 'redo-2.log')))
    // failover takes the replica after begin: the writer the blocks are queued for is gone
    await store.finalize({ acceptFuzzy: true })
    send(s, f2.slice(1))
    await until('nack', () => s.items().some(i => i.type === 'nack' && i.generation === 2))
    assert.equal(store.state().appliedGeneration, 1)
    assert.deepEqual(new Uint8Array(await readFile(store.state().files['/src/disk.img'] as string)), data)
    s.end()
    await done
  })

  it('acks a generation once it is durable; an apply failing after that ends the session instead of a nack', async () => {
    // a store whose in-place apply of generation 2 fails (after its commit record is durable)
    let failApply = false
    await bed.reopen({ step: (s, g) => { if (failApply && g.generation === 2 && s === 'inplace-partial') throw new Error('injected: replica disk gone') } })
    const s = new FakeStream()
    const done = bed.rx.accept(s, 'PEER-A')
    send(s, [hello])
    await until('targetState', () => s.items().length > 0)
    send(s, await frames(new Uint8Array(3 * BS).fill(7)))
    await until('ack 1', () => s.items().some(i => i.type === 'ack' && i.generation === 1))
    failApply = true
    const gen2 = new Uint8Array(3 * BS).fill(8)
    send(s, await frames(gen2, 2, 1))
    await done
    const items = s.items()
    assert.ok(items.some(i => i.type === 'ack' && i.generation === 2), 'generation 2 acknowledged as durable')
    assert.ok(!items.some(i => i.type === 'nack'), 'no nack after the ack')
    assert.equal((s.aborted as { code?: string } | undefined)?.code, 'ERR_REPLICA_APPLY_AFTER_ACK')
    // the failed apply was rolled back whole: the replica is exactly generation 1, and the
    // source, whose books say 2, finds 1 in the next session's targetState and resends (rebase)
    failApply = false
    const store = await bed.replicas.open('hv-a', 'vm1')
    assert.equal(store.state().appliedGeneration, 1)
    assert.deepEqual(new Uint8Array(await readFile(store.state().files['/src/disk.img'] as string)), new Uint8Array(3 * BS).fill(7))
    assert.notDeepEqual(gen2, new Uint8Array(3 * BS).fill(7))
  })

  it('answers hash requests over the replica in bounded frames', async () => {
    const s = new FakeStream()
    const done = bed.rx.accept(s, 'PEER-A')
    send(s, [hello])
    await until('targetState', () => s.items().length > 0)
    const data = new Uint8Array(3 * BS).map((_, i) => (i * 13) & 0xff)
    send(s, await frames(data))
    await until('ack', () => s.items().some(i => i.type === 'ack'))
    send(s, [{ type: 'hashRequest', requestId: 4, fileId: 0, offset: 0, length: 3 * BS, blockSize: BS }])
    await until('hashes', () => s.items().some(i => i.type === 'hashResponse' && i.last))
    const r = s.items().filter(i => i.type === 'hashResponse')
    const hashes = r.flatMap(x => x.type === 'hashResponse' ? x.hashes : [])
    assert.equal(hashes.length, 3)
    assert.deepEqual(hashes[2], encodeBlock(data.slice(2 * BS)).checksum)
    s.end()
    await done
  })
})
