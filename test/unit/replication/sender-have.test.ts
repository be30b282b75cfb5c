/**
 * The source's side of haveQuery: a seed over a 1.2.0 stream offers its blocks by hash and leaves
 * out what the target answers it holds; over 1.1.0 (an older target, whose decoder does not know
 * the frame types) it never sends one.
 */
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ManualClock } from '../../../common/clock.ts'
import { silentLogger } from '../../../daemon/log.ts'
import { VmSource } from '../../../daemon/replication/vm-source.ts'
import { defaultVmConfig, type VmConfig } from '../../../config/load.ts'
import { openBinaryLevel } from '../../../storage/manifest/db.ts'
import { REPLICATION_PROTOCOL, REPLICATION_PROTOCOL_1_1, encodeReplicationItem, type ReplicationItem } from '../../../protocol/replication/index.ts'
import { tempDir } from '../../helpers/tmp.ts'
import { FakeStream, until } from './fake-stream.ts'

const BS = 64 * 1024
const BLOCKS = 4

const sentOf = <T extends ReplicationItem['type']>(s: FakeStream, type: T): Array<Extract<ReplicationItem, { type: T }>> =>
  s.items().filter((i): i is Extract<ReplicationItem, { type: T }> => i.type === type)

async function seed (protocol: string, answer: (s: FakeStream) => void): Promise<FakeStream> {
  const t = await tempDir('vmesh-sender-have-')
  const file = join(t.dir, 'vm1.img')
  const bytes = Buffer.alloc(BLOCKS * BS)
  for (let i = 0; i < BLOCKS; i++) if (i !== 2) bytes.fill(0x10 + i, i * BS, (i + 1) * BS)
  await writeFile(file, bytes)
  const db = await openBinaryLevel(join(t.dir, 'db'))
  const s = new FakeStream()
  s.protocol = protocol
  const vm: VmConfig = { ...defaultVmConfig('vm1'), files: [file], replicateTo: ['h1'], blockSizeBytes: BS, scanIntervalMs: 3_600_000 }
  const src = new VmSource({ clock: new ManualClock(), log: silentLogger(), db, dial: async () => s }, { vm, nodeName: 'h2', watch: false })
  await src.start()
  try {
    await until('hello', () => sentOf(s, 'hello').length > 0)
    s.deliver(encodeReplicationItem({ type: 'targetState', vm: 'vm1', appliedGeneration: 0, appliedConsistentGeneration: 0, seeding: null, diskFree: 1e12 }))
    await src.scanAll()
    answer(s)
    await until('end of the seed generation', () => sentOf(s, 'end').length > 0)
    return s
  } finally { await src.stop(); await db.close(); await t.cleanup() }
}

describe('replication/TargetSender: blocks the target holds travel as their hash (1.2.0)', function () {
  this.timeout(30_000)

  it('a seed asks for its non-zero whole blocks and sends only those the target does not hold', async () => {
    const s = await seed(REPLICATION_PROTOCOL, (s) => {
      void until('haveQuery', () => sentOf(s, 'haveQuery').length > 0).then(() => {
        const q = sentOf(s, 'haveQuery')[0]
        assert.ok(q !== undefined)
        // the target holds block 0 and block 3
        s.deliver(encodeReplicationItem({ type: 'haveAnswer', queryId: q.queryId, held: q.blocks.map(b => b.offset === 0 || b.offset === 3 * BS) }))
      })
    })
    const q = sentOf(s, 'haveQuery')
    assert.equal(q.length, 1)
    assert.deepEqual(q[0]?.blocks.map(b => b.offset), [0, BS, 3 * BS], 'block 2 is zeros: not part of a fresh seed')
    assert.equal(q[0]?.generation, sentOf(s, 'begin')[0]?.generation)
    const sent = sentOf(s, 'blocks').flatMap(f => f.entries.map(e => e.offset))
    assert.deepEqual(sent, [BS])
    const end = sentOf(s, 'end')[0]
    assert.equal(end?.blockCount, 1)
  })

  it('an older (1.1.0) target is never sent a haveQuery: every block travels', async () => {
    const s = await seed(REPLICATION_PROTOCOL_1_1, () => {})
    assert.equal(sentOf(s, 'haveQuery').length, 0)
    assert.deepEqual(sentOf(s, 'blocks').flatMap(f => f.entries.map(e => e.offset)), [0, BS, 3 * BS])
  })
})
