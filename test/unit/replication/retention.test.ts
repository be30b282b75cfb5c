/**
 * The receiver side of retention: the source's `recoveryPoints` in hello become the replica
 * store's policy (pruned by it), an older source's hello (none) leaves the store's policy or
 * takes this node's own config of the VM, and a `<vm>.seed` copy goes once the replica is whole.
 */
import assert from 'node:assert/strict'
import { mkdir, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { ManualClock } from '../../../common/clock.ts'
import { silentLogger } from '../../../daemon/log.ts'
import { ReplicationReceiver } from '../../../daemon/replication/receiver.ts'
import { ReplicaRegistry } from '../../../daemon/replication/replicas.ts'
import { encodeReplicationItem, CONTROL_PROTOCOL_VERSION, SeedMode, type ReplicationItem, type HelloMessage } from '../../../protocol/replication/index.ts'
import { encodeGeneration, FileKind, type Frame } from '../../../protocol/delta/index.ts'
import type { RetentionPolicy } from '../../../storage/replica/index.ts'
import { tempDir } from '../../helpers/tmp.ts'
import { FakeStream, until } from './fake-stream.ts'

const BS = 4096
const base: HelloMessage = { type: 'hello', protocolVersion: CONTROL_PROTOCOL_VERSION, vm: 'vm1', sourceNode: 'hv-a', files: [{ fileId: 0, path: '/src/disk.img', kind: FileKind.Disk, size: 3 * BS, blockSize: BS }], seedMode: SeedMode.Full }

async function frames (data: Uint8Array, generation: number, baseGeneration: number, only?: number[]): Promise<Frame[]> {
  const out: Frame[] = []
  for await (const f of encodeGeneration({
    vm: 'vm1', generation, baseGeneration, consistent: true, createdAtMs: 1000 + generation,
    files: [{ fileId: 0, path: '/src/disk.img', size: data.length, blockSize: BS, kind: FileKind.Disk }],
    readBlocks: function * () {
      for (let o = 0, i = 0; o < data.length; o += BS, i++) if (only === undefined || only.includes(i)) yield { offset: o, data: data.subarray(o, o + BS) }
    }
  })) out.push(f)
  return out
}

describe('replication receiver: retention and seed copies', () => {
  let tmp: { dir: string, cleanup: () => Promise<void> }
  let replicas: ReplicaRegistry
  let rx: ReplicationReceiver
  let local: RetentionPolicy | undefined
  const clock = new ManualClock()

  beforeEach(async () => {
    tmp = await tempDir('vmesh-rx-ret-')
    local = undefined
    replicas = new ReplicaRegistry({ clock, log: silentLogger() }, { dir: tmp.dir, fsync: false })
    await replicas.start()
    rx = new ReplicationReceiver({ clock, log: silentLogger(), replicas, peerName: (id) => id === 'PEER-A' ? 'hv-a' : undefined, retentionOf: () => local })
    await rx.start()
  })
  afterEach(async () => { await rx.stop(); await replicas.stop(); await tmp.cleanup() })

  const send = (s: FakeStream, items: ReplicationItem[]): void => { for (const i of items) s.deliver(encodeReplicationItem(i)) }

  /** One session: hello, then generations from..to (1 is the seed), each acked. */
  async function session (hello: HelloMessage, from: number, to: number): Promise<void> {
    const s = new FakeStream()
    const done = rx.accept(s, 'PEER-A')
    send(s, [hello])
    await until('targetState', () => s.items().some(i => i.type === 'targetState'))
    const data = new Uint8Array(3 * BS)
    for (let g = from; g <= to; g++) {
      data.fill(g, (g % 3) * BS, (g % 3 + 1) * BS)
      send(s, await frames(data, g, g - 1, g === 1 ? undefined : [g % 3]))
      await until(`ack ${g}`, () => s.items().some(i => i.type === 'ack' && i.generation === g))
    }
    s.end()
    await done
  }

  it('hello\'s retention becomes the store\'s policy and bounds its points and undo logs', async () => {
    await session({ ...base, retention: { count: 2, keepAllWithinMs: 0, hourlyBeyond: false } }, 1, 12)
    const store = await replicas.open('hv-a', 'vm1')
    assert.deepEqual(store.retention(), { maxPoints: 2, keepAllWithinMs: 0, hourlyBeyond: false })
    await until('pruned', () => store.points().length === 3)
    assert.deepEqual(store.points().map(p => p.generation), [10, 11, 12])
    const { readdir } = await import('node:fs/promises')
    assert.equal((await readdir(join(replicas.dirOf('hv-a', 'vm1'), 'undo'))).length, 2)
  })

  it('an older source (no retention in hello): the store keeps the policy it has, or takes this node\'s own config of the VM', async () => {
    await session({ ...base, retention: { count: 1, keepAllWithinMs: 0, hourlyBeyond: false } }, 1, 3)
    const store = await replicas.open('hv-a', 'vm1')
    await session(base, 4, 8)
    assert.deepEqual(store.retention(), { maxPoints: 1, keepAllWithinMs: 0, hourlyBeyond: false })
    assert.deepEqual(store.points().map(p => p.generation), [7, 8])
    local = { maxPoints: 4, keepAllWithinMs: 0, hourlyBeyond: false }
    await session(base, 9, 14)
    assert.deepEqual(store.retention(), local)
    assert.deepEqual(store.points().map(p => p.generation), [10, 11, 12, 13, 14])
  })

  it('removes the <vm>.seed copy once the seed it served is complete', async () => {
    const seedDir = replicas.seedDirOf('hv-a', 'vm1')
    await mkdir(seedDir, { recursive: true })
    await writeFile(join(seedDir, 'disk.img'), new Uint8Array(3 * BS).fill(1))
    const s = new FakeStream()
    const done = rx.accept(s, 'PEER-A')
    send(s, [{ ...base, seedMode: SeedMode.Existing }])
    await until('targetState', () => s.items().some(i => i.type === 'targetState'))
    const ts = s.items().find(i => i.type === 'targetState')
    assert.ok(ts?.type === 'targetState' && ts.seeding !== null, 'the copy was loaded as seed progress')
    assert.equal(existsSync(seedDir), true, 'kept while the seed is not complete')
    send(s, await frames(new Uint8Array(3 * BS).fill(1), 1, 0))
    await until('ack', () => s.items().some(i => i.type === 'ack'))
    await until('seed copy removed', () => !existsSync(seedDir))
    s.end()
    await done
  })
})
