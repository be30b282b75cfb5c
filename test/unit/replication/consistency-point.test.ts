/**
 * A target whose newest generation is fuzzy while the source's files have not changed since
 * (here: a file whose mtime lies ahead of the clock, so the seed's scan could not wait it out
 * and could not vouch for the stat; in the field, a scan beginning during the end check, or
 * a stat that moved without a change) gets a generation without changes once the files are settled: a recovery
 * point at the state it already holds. Before, nothing changed, so no generation followed and
 * the replica had no recovery point until the disk was written again — a failover finalized at
 * the fuzzy generation, and `vmesh failover --site` reported no RPO for such VMs.
 *
 * A real VmSource (LevelDB in a temp folder, virtual time, no watcher); the target is a
 * FakeStream the test answers.
 */
import assert from 'node:assert/strict'
import { utimes, writeFile } from 'node:fs/promises'
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

const sentOf = <T extends ReplicationItem['type']>(s: FakeStream, type: T): Array<Extract<ReplicationItem, { type: T }>> =>
  s.items().filter((i): i is Extract<ReplicationItem, { type: T }> => i.type === type)

describe('replication/TargetSender: a consistency point after a fuzzy generation of unchanged files', function () {
  this.timeout(30_000)

  async function setup (): Promise<{ src: VmSource, s: FakeStream, clock: ManualClock, file: string, close: () => Promise<void> }> {
    const t = await tempDir('vmesh-consistency-point-')
    const file = join(t.dir, 'vm1.img')
    await writeFile(file, Buffer.alloc(4 * BS, 0x5a))
    // an mtime 30 s ahead: racy for longer than a scan waits, so the seed is fuzzy
    const future = Date.now() / 1000 + 30
    await utimes(file, future, future)
    const clock = new ManualClock(0, Date.now())
    const db = await openBinaryLevel(join(t.dir, 'db'))
    const s = new FakeStream()
    // the default: no content index, so a 1.1.0 stream (no haveQuery)
    s.protocol = '/vmesh/replication/1.1.0'
    const vm: VmConfig = { ...defaultVmConfig('vm1'), files: [file], replicateTo: ['b'], blockSizeBytes: BS, scanIntervalMs: 3_600_000 }
    const src = new VmSource({ clock, log: silentLogger(), db, dial: async () => s }, { vm, nodeName: 'a', watch: false })
    await src.start()
    // the tracker's first scan is a timer due now: fire it here, or the test's first advance
    // would start it in the middle of a step (with a racy file it then sleeps on the virtual
    // clock and ends at an unplanned moment: the cause of this test's failures under load)
    clock.advance(0)
    return { src, s, clock, file, close: async () => { await src.stop(); await db.close(); await t.cleanup() } }
  }

  async function seedFuzzy (src: VmSource, s: FakeStream): Promise<void> {
    await until('hello', () => sentOf(s, 'hello').length > 0)
    s.deliver(encodeReplicationItem({ type: 'targetState', vm: 'vm1', appliedGeneration: 0, appliedConsistentGeneration: 0, seeding: null, diskFree: 1e12 }))
    await src.scanAll()
    await until('the seed', () => sentOf(s, 'end').length > 0)
    const begin = sentOf(s, 'begin')[0]
    assert.ok(begin !== undefined)
    assert.equal(begin.consistent, false, 'the seed of a file written just now is fuzzy')
    s.deliver(encodeReplicationItem({ type: 'ack', generation: begin.generation, durable: true, appliedAtMs: Date.now() }))
    await flush(50)
  }

  it('once the files are settled, an empty consistent generation follows; it carries no data', async () => {
    const { src, s, clock, close } = await setup()
    try {
      await seedFuzzy(src, s)
      const dataBefore = sentOf(s, 'blocks').reduce((n, f) => n + f.entries.length, 0)
      // past the mtime and the settle margin: the next scan vouches for the unchanged stat
      clock.advance(35_000)
      await src.scanAll()
      clock.advance(1_000)
      await until('a second generation', () => sentOf(s, 'begin').length > 1)
      const second = sentOf(s, 'begin')[1]
      assert.ok(second !== undefined)
      assert.equal(second.consistent, true)
      assert.equal(second.baseGeneration, sentOf(s, 'begin')[0]?.generation)
      await until('its end', () => sentOf(s, 'end').length > 1)
      assert.equal(sentOf(s, 'blocks').reduce((n, f) => n + f.entries.length, 0), dataBefore, 'no block travels again')
      s.deliver(encodeReplicationItem({ type: 'ack', generation: second.generation, durable: true, appliedAtMs: Date.now() }))
      await flush(50)
      // consistent now: no further point, however long the VM stays idle
      for (let i = 0; i < 5; i++) { clock.advance(6_000); await src.scanAll(); await flush(50) }
      assert.equal(sentOf(s, 'begin').length, 2)
    } finally { await close() }
  })

  it('not while the file is unsettled or has changed: the next generation carries the change instead', async () => {
    const { src, s, clock, file, close } = await setup()
    try {
      await seedFuzzy(src, s)
      // the stat is not vouched for (no quiet scan since): no point, however often the sender looks
      for (let i = 0; i < 8; i++) { clock.advance(5_000); await flush(50) }
      assert.equal(sentOf(s, 'begin').length, 1, 'no consistency point without a vouched-for stat')
      // a real change (the clock is past the old mtime now): a generation with the data, not an empty point
      const buf = Buffer.alloc(4 * BS, 0x5a); buf.fill(0x01, BS, 2 * BS)
      await writeFile(file, buf)
      await src.scanAll()
      // an incremental generation first asks the target for the changed block's 4 KiB hashes
      await until('the sub-block hash request', () => sentOf(s, 'hashRequest').length > 0)
      const req = sentOf(s, 'hashRequest')[0]
      assert.ok(req !== undefined)
      assert.deepEqual([req.offset, req.length], [BS, BS])
      s.deliver(encodeReplicationItem({ type: 'hashResponse', requestId: req.requestId, fileId: req.fileId, offset: req.offset, blockSize: req.blockSize, hashes: Array.from({ length: req.length / req.blockSize }, () => new Uint8Array(16).fill(9)), last: true }))
      await until('a second generation', () => sentOf(s, 'begin').length > 1)
      await until('its end', () => sentOf(s, 'end').length > 1)
      assert.equal(sentOf(s, 'begin')[1]?.consistent, true)
      const seedBlocks = 4
      const entries = sentOf(s, 'blocks').flatMap(f => f.entries).slice(seedBlocks)
      let covered = 0
      for (const e of entries) { assert.ok(e.offset >= BS && e.offset + e.length <= 2 * BS, `entry at ${e.offset} is outside the changed block`); covered += e.length }
      assert.equal(covered, BS, 'the changed block travels, and only it')
    } finally { await close() }
  })
})
