/**
 * A generation that starts while a scan is still running: that scan may have committed its
 * manifest (the stat it vouches for) without having marked the dirty maps yet, so the capture
 * cannot vouch for the generation while it runs. When the scan is all that stands in the way
 * (every file's manifest stat settled and still the file's: a stat check, the tail of a scan
 * that just committed), the sender waits for it, bounded; otherwise it sends at once, fuzzy.
 * Before the wait, a scan merely overlapping the start cost the target a recovery point (found
 * as a flaky consistency-point.test.ts under load).
 *
 * A real VmSource (LevelDB in a temp folder, virtual time, no watcher); a scan "running" is
 * stood for by the VM's scanBusy count, which is what the sender reads.
 */
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { VmSource } from '../../../daemon/replication/vm-source.ts'
import { encodeReplicationItem, type ReplicationItem } from '../../../protocol/replication/index.ts'
import { flush, until, type FakeStream } from './fake-stream.ts'
import { BED_BLOCK, nthBegin, sentOf, sourceBed, type SourceBed } from './source-bed.ts'

const BS = BED_BLOCK

describe('replication/TargetSender: a generation starting while a scan runs', function () {
  this.timeout(30_000)

  // the virtual wall clock a minute ahead of the file's mtime: every scan's stat is settled
  const setup = async (): Promise<SourceBed> => await sourceBed('vmesh-generation-start-', { wallStartMs: Date.now() + 60_000 })

  /** Seeds (consistent), then records a change of block 1 as generation 2 while the seed is still unacknowledged. */
  async function changeWhileSeedInFlight ({ src, s, clock, file }: SourceBed): Promise<void> {
    await src.scanAll()
    await until('hello', () => sentOf(s, 'hello').length > 0)
    s.deliver(encodeReplicationItem({ type: 'targetState', vm: 'vm1', appliedGeneration: 0, appliedConsistentGeneration: 0, seeding: null, diskFree: 1e12 }))
    await until('the seed', () => sentOf(s, 'end').length > 0)
    assert.equal(sentOf(s, 'begin')[0]?.consistent, true)
    const buf = Buffer.alloc(4 * BS, 0x5a); buf.fill(0x01, BS, 2 * BS)
    await writeFile(file, buf)
    clock.advance(1_000)
    await src.scanAll()
    assert.equal(src.generation, 2)
  }

  /** Acknowledges `generation` and waits until the sender has recorded it (it then starts the next at once). */
  async function ack (src: VmSource, s: FakeStream, generation: number): Promise<void> {
    s.deliver(encodeReplicationItem({ type: 'ack', generation, durable: true, appliedAtMs: Date.now() }))
    await until(`ack ${generation} recorded`, () => src.books.target('b').acked >= generation)
    await flush(100)
  }

  it('a scan that is only checking settled files: waited for, and the generation is a recovery point', async () => {
    const bed = await setup()
    const { src, s, clock, file, close } = bed
    try {
      await changeWhileSeedInFlight(bed)
      src.scanBusy++ // a stat check of the settled files begins
      await ack(src, s, 1)
      assert.equal(sentOf(s, 'hashRequest').length + sentOf(s, 'begin').length, 1, 'the generation waits for the scan (no hash request, no begin)')
      src.scanBusy--
      src.notify()
      assert.equal((await nthBegin(s, 2)).begin.consistent, true)
    } finally { await close() }
  })

  it('a file that changed since its last scan: no wait, the generation goes at once and is fuzzy', async () => {
    const bed = await setup()
    const { src, s, clock, file, close } = bed
    try {
      await changeWhileSeedInFlight(bed)
      // written again after the scan: the manifest's stat is not the file's, the scan that
      // runs now will find a change — nothing a wait could make consistent
      const buf = Buffer.alloc(4 * BS, 0x5a); buf.fill(0x02, 2 * BS, 3 * BS)
      await writeFile(file, buf)
      src.scanBusy++
      await ack(src, s, 1)
      assert.equal((await nthBegin(s, 2)).begin.consistent, false)
      src.scanBusy--
    } finally { await close() }
  })

  it('the wait is bounded: a scan that does not end within 2 s leaves the generation fuzzy', async () => {
    const bed = await setup()
    const { src, s, clock, file, close } = bed
    try {
      await changeWhileSeedInFlight(bed)
      src.scanBusy++
      await ack(src, s, 1)
      const started = (): boolean => sentOf(s, 'hashRequest').length > 0 || sentOf(s, 'begin').length > 1
      assert.equal(started(), false, 'waiting for the scan')
      const acked = clock.now()
      // bounded: 200 steps of 100 ms of virtual time (the wait ends after 20). Time moves only
      // while the sender waits in changed(): stepped while it read the file and its books (real
      // I/O), its 2 s could pass in a single read under load, and the bound measured the disk
      for (let i = 0; i < 200 && !started(); i++) {
        await until('the sender waits for the scan or starts', () => started() || src.waiting > 0)
        if (started()) break
        clock.advance(100)
        await flush(20)
      }
      const waited = clock.now() - acked
      assert.ok(waited >= 2_000 && waited < 20_000, `went after ${waited} ms of virtual time`)
      assert.equal((await nthBegin(s, 2)).begin.consistent, false)
      src.scanBusy--
    } finally { await close() }
  })
})
