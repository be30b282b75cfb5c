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
import { VmSource } from '../../../daemon/replication/vm-source.ts'
import { encodeReplicationItem } from '../../../protocol/replication/index.ts'
import { flush, until, type FakeStream } from './fake-stream.ts'
import { BED_BLOCK, nthBegin, sentOf, sourceBed, type SourceBed } from './source-bed.ts'

const BS = BED_BLOCK

describe('replication/TargetSender: a consistency point after a fuzzy generation of unchanged files', function () {
  this.timeout(30_000)

  // an mtime 30 s ahead: racy for longer than a scan waits, so the seed is fuzzy. (The tracker's
  // first scan used to start at the test's first advance, in the middle of a step: with a racy
  // file it slept on the virtual clock and ended at an unplanned moment - this test's failures
  // under load. The bed fires it before handing over.)
  const setup = async (): Promise<SourceBed> => await sourceBed('vmesh-consistency-point-', {
    wallStartMs: Date.now(),
    prepare: async (file) => { const future = Date.now() / 1000 + 30; await utimes(file, future, future) }
  })

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
      // an incremental generation may first ask the target for the changed block's 4 KiB hashes
      const { begin, hashRequest } = await nthBegin(s, 2)
      if (hashRequest !== undefined) assert.deepEqual([hashRequest.offset, hashRequest.length], [BS, BS])
      assert.equal(begin.consistent, true)
      await until('its end', () => sentOf(s, 'end').length > 1)
      const seedBlocks = 4
      const entries = sentOf(s, 'blocks').flatMap(f => f.entries).slice(seedBlocks)
      let covered = 0
      for (const e of entries) { assert.ok(e.offset >= BS && e.offset + e.length <= 2 * BS, `entry at ${e.offset} is outside the changed block`); covered += e.length }
      assert.equal(covered, BS, 'the changed block travels, and only it')
    } finally { await close() }
  })
})
