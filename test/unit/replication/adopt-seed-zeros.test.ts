/**
 * A target that already holds data (adopt-seed: a pre-loaded seed copy; rebase: a replica of
 * unknown history) must be offered every block, the source's zero blocks included — its copy may
 * hold data where the source holds zeros. The soak (seed 24188408, after the 0.4.0 fixes) left
 * h1's replica of vm4 from h2 with one 4 KiB page of h1's own, pre-failover writes in a block
 * that was all zeros on h2: h2 had just adopted vm4 from its finalized replica, its session
 * reset the target's dirty map before the first scan had told the dirty maps about the file
 * (so "every block" marked nothing), and the first scan then marked only the non-zero blocks —
 * what a fresh, empty target needs.
 *
 * A real VmSource (LevelDB in a temp folder, virtual time, no watcher) over a 4-block file whose
 * blocks 1 and 3 are zeros; the target is a FakeStream the test answers.
 */
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ManualClock } from '../../../common/clock.ts'
import { silentLogger } from '../../../daemon/log.ts'
import { VmSource } from '../../../daemon/replication/vm-source.ts'
import { defaultVmConfig, type VmConfig } from '../../../config/load.ts'
import { openBinaryLevel } from '../../../storage/manifest/db.ts'
import { encodeReplicationItem, type ReplicationItem } from '../../../protocol/replication/index.ts'
import { tempDir } from '../../helpers/tmp.ts'
import { FakeStream, flush, until } from './fake-stream.ts'

const BS = 64 * 1024
const BLOCKS = 4

async function setup (): Promise<{ src: VmSource, s: FakeStream, file: string, close: () => Promise<void> }> {
  const t = await tempDir('vmesh-adopt-zeros-')
  const file = join(t.dir, 'vm4.img')
  const bytes = Buffer.alloc(BLOCKS * BS)
  bytes.fill(0x11, 0, BS)
  bytes.fill(0x22, 2 * BS, 3 * BS)
  await writeFile(file, bytes)
  const db = await openBinaryLevel(join(t.dir, 'db'))
  const s = new FakeStream()
  s.answerHaveQueries = true
  const vm: VmConfig = { ...defaultVmConfig('vm4'), files: [file], replicateTo: ['h1'], blockSizeBytes: BS, scanIntervalMs: 3_600_000, seed: 'existing' }
  const src = new VmSource({ clock: new ManualClock(), log: silentLogger(), db, dial: async () => s }, { vm, nodeName: 'h2', watch: false })
  await src.start()
  return { src, s, file, close: async () => { await src.stop(); await db.close(); await t.cleanup() } }
}

const sentOf = <T extends ReplicationItem['type']>(s: FakeStream, type: T): Array<Extract<ReplicationItem, { type: T }>> =>
  s.items().filter((i): i is Extract<ReplicationItem, { type: T }> => i.type === type)

describe('replication/VmSource: a target holding data gets every block, even before the first scan', function () {
  this.timeout(30_000)

  it('adopt-seed: a zero block of the source that the target\'s seed holds as data is sent', async () => {
    const { src, s, close } = await setup()
    try {
      await until('hello', () => sentOf(s, 'hello').length > 0)
      // h1 pre-loaded its own (stale) copy: every block holds data there
      s.deliver(encodeReplicationItem({ type: 'targetState', vm: 'vm4', appliedGeneration: 0, appliedConsistentGeneration: 0, seeding: { generation: 1, durableRanges: [{ fileId: 0, offset: 0, length: BLOCKS * BS }] }, diskFree: 1e12 }))
      await flush(50)
      // the first scan of the just-adopted VM runs only now
      await src.scanAll()
      await until('hashRequest', () => sentOf(s, 'hashRequest').length > 0)
      const req = sentOf(s, 'hashRequest')[0]
      assert.ok(req !== undefined)
      s.deliver(encodeReplicationItem({ type: 'hashResponse', requestId: req.requestId, fileId: 0, offset: 0, blockSize: BS, hashes: Array.from({ length: BLOCKS }, () => new Uint8Array(16).fill(9)), last: true }))
      await until('end of the seed generation', () => sentOf(s, 'end').length > 0)
      const offsets = sentOf(s, 'blocks').flatMap(f => f.entries.map(e => e.offset)).sort((a, b) => a - b)
      assert.deepEqual(offsets, [0, BS, 2 * BS, 3 * BS], 'blocks 1 and 3 (zeros here, data on the target) are sent too')
    } finally { await close() }
  })

  it('rebase: the sub-block comparison covers the zero blocks too', async () => {
    const { src, s, file, close } = await setup()
    try {
      await until('hello', () => sentOf(s, 'hello').length > 0)
      // a replica of a history our books do not know: rebase, every block on top of what it holds
      s.deliver(encodeReplicationItem({ type: 'targetState', vm: 'vm4', appliedGeneration: 7, appliedConsistentGeneration: 7, seeding: null, diskFree: 1e12 }))
      await flush(50)
      await src.scanAll()
      await until('sub-block hash requests', () => sentOf(s, 'hashRequest').length > 0)
      await flush(50)
      let covered = 0
      for (const r of sentOf(s, 'hashRequest')) covered += r.length
      assert.equal(covered, BLOCKS * BS, `every block of ${file} is compared with the target (not only the non-zero ones)`)
    } finally { await close() }
  })
})
