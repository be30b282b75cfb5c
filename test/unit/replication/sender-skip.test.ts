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
    manifest: { file: () => ({ entries: async function * (from: number, to: number) { for (const e of entries) if (e.index >= from && e.index < to) yield e } }) },
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
})
