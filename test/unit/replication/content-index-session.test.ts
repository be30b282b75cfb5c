/**
 * The target's side of haveQuery (replication 1.2.0): a receiver with a content index copies the
 * blocks it holds — from another VM's replica or another place of the same one — into the
 * generation, answers which, and the replica ends byte-identical to the source; blocks that
 * changed since they were indexed are "not held".
 */
import assert from 'node:assert/strict'
import { readFile, open as openFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ManualClock } from '../../../common/clock.ts'
import { silentLogger } from '../../../daemon/log.ts'
import { ReplicationReceiver } from '../../../daemon/replication/receiver.ts'
import { ReplicaRegistry } from '../../../daemon/replication/replicas.ts'
import { ContentIndex } from '../../../storage/content-index/index.ts'
import { CONTROL_PROTOCOL_VERSION, SeedMode, type HaveAnswerMessage, type HelloMessage, type ReplicationItem } from '../../../protocol/replication/index.ts'
import { blockChecksum, encodeGeneration, FileKind, type Frame } from '../../../protocol/delta/index.ts'
import { tempDir } from '../../helpers/tmp.ts'
import { sendItems as send } from './receiver-bed.ts'
import { FakeStream, until } from './fake-stream.ts'

const BS = 4096
const N = 6
const PATH = '/src/disk.img'

const hello = (vm: string): HelloMessage => ({ type: 'hello', protocolVersion: CONTROL_PROTOCOL_VERSION, vm, sourceNode: 'hv-a', files: [{ fileId: 0, path: PATH, kind: FileKind.Disk, size: N * BS, blockSize: BS }], seedMode: SeedMode.Full })

/** Block i of a disk: distinct content per seed and index; zeros for seed 0. */
function disk (blocks: number[]): Buffer {
  return Buffer.concat(blocks.map(b => Buffer.alloc(BS, b)))
}

/** begin, haveQuery for `asked` blocks, then the frames of the `sent` blocks and end. */
async function generation (vm: string, data: Buffer, g: number, base: number, asked: number[], sent: number[]): Promise<ReplicationItem[]> {
  const frames: Frame[] = []
  for await (const f of encodeGeneration({
    vm, generation: g, baseGeneration: base, consistent: true, createdAtMs: 1000,
    files: [{ fileId: 0, path: PATH, size: data.length, blockSize: BS, kind: FileKind.Disk }],
    readBlocks: function * () { for (const i of sent) yield { offset: i * BS, data: data.subarray(i * BS, (i + 1) * BS) } }
  })) frames.push(f)
  const query: ReplicationItem[] = asked.length === 0
    ? []
    : [{ type: 'haveQuery', queryId: g * 100, generation: g, fileId: 0, blocks: asked.map(i => ({ offset: i * BS, length: BS, hash: blockChecksum(data.subarray(i * BS, (i + 1) * BS)) })) }]
  return [frames[0] as Frame, ...query, ...frames.slice(1)]
}

describe('replication receiver: haveQuery and the content index', function () {
  const clock = new ManualClock()
  let dir: string
  let cleanup: () => Promise<void>
  let replicas: ReplicaRegistry
  let index: ContentIndex | undefined
  let rx: ReplicationReceiver

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('vmesh-cindex-rx-'))
    replicas = new ReplicaRegistry({ clock, log: silentLogger() }, { dir: join(dir, 'replicas'), fsync: false })
    await replicas.start()
    index = await ContentIndex.open({}, { dir: join(dir, 'content-index'), root: join(dir, 'replicas') })
    rx = new ReplicationReceiver({ clock, log: silentLogger(), replicas, peerName: (id) => id === 'PEER-A' ? 'hv-a' : undefined, contentIndex: index })
    await rx.start()
  })
  afterEach(async () => { await rx.stop(); await replicas.stop(); await index?.close(); await cleanup() })

  /** Runs one session of `vm` that sends `items` after targetState; returns what the target sent. */
  async function session (vm: string, items: ReplicationItem[], acks = 1): Promise<ReplicationItem[]> {
    const s = new FakeStream()
    const done = rx.accept(s, 'PEER-A')
    send(s, [hello(vm)])
    await until('targetState', () => s.items().some(i => i.type === 'targetState'))
    send(s, items)
    await until(`${acks} ack(s) of ${vm}`, () => s.items().filter(i => i.type === 'ack' || i.type === 'nack').length >= acks || s.aborted !== undefined)
    s.end()
    await done
    assert.equal(s.aborted, undefined, `session of ${vm} aborted: ${String(s.aborted)}`)
    return s.items()
  }

  const replicaBytes = async (vm: string): Promise<Buffer> => await readFile((await replicas.open('hv-a', vm)).state().files[PATH] as string)
  const answers = (items: ReplicationItem[]): boolean[][] => items.filter((i): i is HaveAnswerMessage => i.type === 'haveAnswer').map(a => a.held)

  it('a second VM seeded from the same template: held blocks are copied, only the rest is received', async () => {
    const a = disk([1, 2, 3, 4, 0, 5])
    await session('vm1', await generation('vm1', a, 1, 0, [], [0, 1, 2, 3, 4, 5]))
    await index?.flush()
    // vm2: the template with block 2 changed; block 4 is zeros (never asked)
    const b = disk([1, 2, 9, 4, 0, 5])
    const out = await session('vm2', await generation('vm2', b, 1, 0, [0, 1, 2, 3, 5], [2, 4]))
    assert.deepEqual(answers(out), [[true, true, false, true, true]])
    assert.ok(out.some(i => i.type === 'ack'))
    assert.deepEqual(await replicaBytes('vm2'), b)
    assert.deepEqual(rx.copied, { blocks: 4, bytes: 4 * BS })
  })

  it('a block overwritten since it was indexed is not held (and the data path fills it)', async () => {
    const a = disk([1, 2, 3, 4, 6, 5])
    await session('vm1', await generation('vm1', a, 1, 0, [], [0, 1, 2, 3, 4, 5]))
    await index?.flush()
    // vm1's replica block 1 changes behind the index's back (as a rollback would)
    const fh = await openFile((await replicas.open('hv-a', 'vm1')).state().files[PATH] as string, 'r+')
    await fh.write(Buffer.alloc(16, 0xaa), 0, 16, BS + 5)
    await fh.close()
    const out = await session('vm2', await generation('vm2', a, 1, 0, [0, 1, 2], [1, 3, 4, 5]))
    assert.deepEqual(answers(out), [[true, false, true]])
    assert.deepEqual(await replicaBytes('vm2'), a)
  })

  it('an incremental generation copies held blocks too, once committed it feeds the index', async () => {
    const a = disk([1, 2, 3, 4, 6, 5])
    await session('vm1', await generation('vm1', a, 1, 0, [], [0, 1, 2, 3, 4, 5]))
    // generation 2: block 0 takes block 3's content (held at another offset of the same replica),
    // block 5 new content 7
    const a2 = disk([4, 2, 3, 4, 6, 7])
    await index?.flush()
    const out = await session('vm1', await generation('vm1', a2, 2, 1, [0, 5], [5]))
    assert.deepEqual(answers(out), [[true, false]])
    assert.deepEqual(await replicaBytes('vm1'), a2)
    assert.equal((await replicas.open('hv-a', 'vm1')).state().appliedGeneration, 2)
    await index?.flush()
    // block 5's new content, committed in generation 2, is now held
    const [seven] = await (index as ContentIndex).fetchMany([{ hash: blockChecksum(Buffer.alloc(BS, 7)), length: BS }])
    assert.deepEqual(seven, Buffer.alloc(BS, 7))
  })

  it('without a content index every block is "not held"', async () => {
    await rx.stop()
    rx = new ReplicationReceiver({ clock, log: silentLogger(), replicas, peerName: () => 'hv-a' })
    await rx.start()
    const a = disk([1, 2, 3, 4, 6, 5])
    await session('vm1', await generation('vm1', a, 1, 0, [], [0, 1, 2, 3, 4, 5]))
    const out = await session('vm2', await generation('vm2', a, 1, 0, [0, 1], [0, 1, 2, 3, 4, 5]))
    assert.deepEqual(answers(out), [[false, false]])
    assert.deepEqual(await replicaBytes('vm2'), a)
  })

  it('a haveQuery outside a generation or past the file breaks the protocol: stream aborted, nothing applied', async () => {
    for (const bad of [
      [{ type: 'haveQuery', queryId: 1, generation: 1, fileId: 0, blocks: [{ offset: 0, length: BS, hash: new Uint8Array(16) }] }],
      [(await generation('vm1', disk([1, 2, 3, 4, 5, 6]), 1, 0, [], [0]))[0], { type: 'haveQuery', queryId: 1, generation: 1, fileId: 0, blocks: [{ offset: N * BS, length: BS, hash: new Uint8Array(16) }] }],
      [(await generation('vm1', disk([1, 2, 3, 4, 5, 6]), 1, 0, [], [0]))[0], { type: 'haveQuery', queryId: 1, generation: 2, fileId: 0, blocks: [{ offset: 0, length: BS, hash: new Uint8Array(16) }] }]
    ] as ReplicationItem[][]) {
      const s = new FakeStream()
      const done = rx.accept(s, 'PEER-A')
      send(s, [hello('vm1'), ...bad])
      await done
      assert.ok(s.aborted !== undefined, 'aborted')
      assert.equal(s.items().some(i => i.type === 'haveAnswer'), false)
    }
    assert.equal((await replicas.open('hv-a', 'vm1')).state().appliedGeneration, 0)
  })
})
