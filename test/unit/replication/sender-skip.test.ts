/**
 * `seed: existing` (adopt-seed) compares the target's block hashes with the source's manifest.
 * The soak (seed 24188408, rerun) left h1's replica of vm1 with 33 blocks of zeros where h3's
 * file held data: h3 had just adopted vm1 from its finalized replica, its session compared
 * before the first scan had filled the manifest, and an absent entry reads as a zero block — so
 * every zero block of h1's stale seed copy was "already held" and never sent.
 */
import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { silentLogger } from '../../../daemon/log.ts'
import { TargetSender } from '../../../daemon/replication/sender.ts'
import type { SenderSource } from '../../../daemon/replication/source-view.ts'
import { encodeReplicationItem } from '../../../protocol/replication/index.ts'
import { FileKind, zeroChecksum } from '../../../protocol/delta/index.ts'
import { FakeStream, flush, until } from './fake-stream.ts'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { tempDir } from '../../helpers/tmp.ts'

const BS = 4096
const PATH = '/nonexistent/vmesh-test/vm1.img'

/** A source whose first scan has not run yet; `scan()` records it (block 0 holds data, block 1 zeros). */
function unscanned (): { source: SenderSource, scan: () => void } {
  let ready = false
  const entries: Array<{ index: number, hash: Uint8Array | null, generation: number }> = []
  const waiters: Array<() => void> = []
  const source = {
    name: 'vm1',
    files: [{ fileId: 1, path: PATH, kind: FileKind.Disk }],
    blockSize: BS,
    vm: { seed: 'existing' },
    books: { target: () => ({ acked: 0, inFlight: null }), setTarget: async () => {}, bump: async () => {} },
    dirty: { dirtyBytes: async () => 0, inFlightBytes: async () => 0, requeue: async () => {}, acknowledge: async () => {} },
    manifest: { file: () => ({ meta: async () => ({ generation: ready ? 1 : 0, scanning: false, stat: null }), entries: async function * (from: number, to: number) { for (const e of entries) if (e.index >= from && e.index < to) yield e } }) },
    generation: 0,
    get ready () { return ready },
    scanBusy: 0,
    scanSeq: 0,
    changed: async (_ms: number, signal?: AbortSignal) => { await new Promise<void>(resolve => { waiters.push(resolve); signal?.addEventListener('abort', () => { resolve() }, { once: true }) }) },
    capturedThroughMs: () => undefined,
    notify: () => { for (const w of waiters.splice(0)) w() },
    resetTarget: async () => {}
  }
  const scan = (): void => {
    entries.push({ index: 0, hash: new Uint8Array(16).fill(7), generation: 1 })
    ready = true
    source.notify()
  }
  return { source: source as unknown as SenderSource, scan }
}

describe('replication/TargetSender: adopt-seed compares against a scanned manifest only', function () {
  this.timeout(30_000)

  it('waits for the first scan before comparing; a target block of zeros where the file holds data is sent', async () => {
    const { source, scan } = unscanned()
    const s = new FakeStream()
    const sender = new TargetSender({ clock: new ManualClock(), log: silentLogger(), source, dial: async () => s }, { target: 'h1', nodeName: 'h3' })
    sender.start()
    try {
      await until('hello', () => s.items().some(i => i.type === 'hello'))
      // the target pre-loaded a stale copy: both blocks are zeros there
      s.deliver(encodeReplicationItem({ type: 'targetState', vm: 'vm1', appliedGeneration: 0, appliedConsistentGeneration: 0, seeding: { generation: 1, durableRanges: [{ fileId: 1, offset: 0, length: 2 * BS }] }, diskFree: 1e12 }))
      await flush(50)
      assert.ok(!s.items().some(i => i.type === 'hashRequest'), 'no comparison against a manifest no scan has filled')
      scan()
      await until('hashRequest', () => s.items().some(i => i.type === 'hashRequest'))
      const req = s.items().find(i => i.type === 'hashRequest')
      assert.ok(req?.type === 'hashRequest')
      s.deliver(encodeReplicationItem({ type: 'hashResponse', requestId: req.requestId, fileId: 1, offset: 0, blockSize: BS, hashes: [zeroChecksum(BS), zeroChecksum(BS)], last: true }))
      const skip = (sender as unknown as { skip: Map<string, Set<number>> }).skip
      await until('skip set', () => skip.get(PATH) !== undefined)
      assert.deepEqual([...(skip.get(PATH) ?? [])], [1], 'block 0 (data here, zeros there) is sent; block 1 (zeros on both sides) is skipped')
    } finally { await sender.stop() }
  })

  it('a block a scan rehashed after the comparison but marked before inFlight is sent after all (its pending bit would be cleared by the ack)', async () => {
    const t = await tempDir('vmesh-skip-race-')
    const path = join(t.dir, 'vm1.img')
    await writeFile(path, Buffer.alloc(2 * BS, 0x11))
    const A = new Uint8Array(16).fill(1)
    const B = new Uint8Array(16).fill(2)
    const meta = { generation: 1, scanning: false, stat: null }
    const entries = [{ index: 0, hash: A, generation: 1 }, { index: 1, hash: B, generation: 1 }]
    let inFlight = 0
    const source = {
      name: 'vm1',
      files: [{ fileId: 1, path, kind: FileKind.Disk }],
      blockSize: BS,
      vm: { seed: 'existing' },
      books: { target: () => ({ acked: 0, inFlight: null }), setTarget: async () => {}, bump: async () => 1, meta: () => undefined },
      dirty: {
        files: () => [{ file: path, fileSize: 2 * BS }],
        // the scan the guest's write triggered commits its manifest (block 1 rehashed) and marks
        // the block dirty after the comparison and before inFlight: here, while pending is read
        pending: async function * () { entries[1] = { index: 1, hash: new Uint8Array(16).fill(3), generation: 2 }; meta.generation = 2; yield { offset: 0, length: 2 * BS } },
        inFlight: async () => { inFlight++ },
        dirtyBytes: async () => 0,
        inFlightBytes: async () => 0,
        requeue: async () => {},
        acknowledge: async () => {}
      },
      manifest: { file: () => ({ meta: async () => ({ ...meta }), entries: async function * (from: number, to: number) { for (const e of entries) if (e.index >= from && e.index < to) yield e } }) },
      generation: 1,
      ready: true,
      scanBusy: 0,
      scanSeq: 0,
      changed: async () => {},
      capturedThroughMs: () => undefined,
      notify: () => {},
      resetTarget: async () => {}
    }
    const s = new FakeStream()
    s.protocol = '/vmesh/replication/1.1.0' // no content-index offers: every block it sends is in a blocks frame
    const sender = new TargetSender({ clock: new ManualClock(), log: silentLogger(), source: source as unknown as SenderSource, dial: async () => s }, { target: 'h1', nodeName: 'h3' })
    sender.start()
    try {
      await until('hello', () => s.items().some(i => i.type === 'hello'))
      s.deliver(encodeReplicationItem({ type: 'targetState', vm: 'vm1', appliedGeneration: 0, appliedConsistentGeneration: 0, seeding: { generation: 1, durableRanges: [{ fileId: 1, offset: 0, length: 2 * BS }] }, diskFree: 1e12 }))
      await until('hashRequest', () => s.items().some(i => i.type === 'hashRequest'))
      const req = s.items().find(i => i.type === 'hashRequest')
      assert.ok(req?.type === 'hashRequest')
      // the target holds both blocks as the manifest had them at the comparison
      s.deliver(encodeReplicationItem({ type: 'hashResponse', requestId: req.requestId, fileId: 1, offset: 0, blockSize: BS, hashes: [A, B], last: true }))
      await until('the seed generation\'s end', () => s.items().some(i => i.type === 'end'))
      assert.equal(inFlight, 1)
      const sent = s.items().flatMap(i => i.type === 'blocks' ? i.entries.map(e => e.offset) : [])
      assert.deepEqual(sent, [BS], 'block 1 (rehashed since the comparison) is sent; block 0 (unchanged) is not')
    } finally { await sender.stop(); await t.cleanup() }
  })
})
