import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { finalReadCounter, shipFinalGeneration } from '../../../daemon/replication/final.ts'
import type { GenerationProgress } from '../../../daemon/replication/sender.ts'
import type { VmSource } from '../../../daemon/replication/vm-source.ts'
import type { FileStat } from '../../../storage/changes/file-io.ts'

/** The slice of a VmSource the final shipment uses, with a target that acks what it is told to. */
function fakeSource (clock: ManualClock, o: { scanBusyUntil?: number, target?: string } = {}) {
  const metas = new Map<number, { consistent: boolean }>()
  const book = { acked: 0 }
  const src = {
    name: 'vm1',
    generation: 3,
    files: [] as Array<{ path: string }>,
    scans: 0,
    get scanBusy (): number { return clock.now() < (o.scanBusyUntil ?? 0) ? 1 : 0 },
    sender: (t: string) => t === (o.target ?? 'b') ? {} : undefined,
    scanAll: async () => { src.scans++ },
    notify: () => {},
    capturedThroughMs: () => clock.wallNow(),
    changed: async (ms: number) => { await clock.sleep(ms) },
    books: {
      meta: (g: number) => metas.get(g),
      target: () => book,
      bump: async (_at: number, consistent: boolean) => { src.generation++; metas.set(src.generation, { consistent }); return src.generation }
    }
  }
  return { src, book, metas, asSource: src as unknown as VmSource }
}

describe('shipFinalGeneration (planned failover, source side)', () => {
  it('refuses a node that is not a target of the VM', async () => {
    const clock = new ManualClock()
    const { asSource } = fakeSource(clock)
    await assert.rejects(shipFinalGeneration(asSource, 'c', { clock, timeoutMs: 1000 }), (e: Error) => e.name === 'NotAReplicationTargetError')
  })

  it('waits out running scans, makes a consistent generation of its own and resolves once it is acknowledged', async () => {
    const clock = new ManualClock()
    const f = fakeSource(clock, { scanBusyUntil: 1000 })
    let done: number | undefined
    const p = shipFinalGeneration(f.asSource, 'b', { clock, timeoutMs: 30_000, quietMs: 600 }).then(g => { done = g })
    await clock.advanceAsync(1200)
    // still inside the quiet spell that began when the last scan ended
    assert.equal(f.src.generation, 3)
    await clock.advanceAsync(600)
    assert.equal(f.src.generation, 4)
    assert.equal(f.metas.get(4)?.consistent, true)
    assert.equal(f.src.scans, 2)
    assert.equal(done, undefined, 'not before the target acknowledged it')
    f.book.acked = 4
    await clock.advanceAsync(200)
    await p
    assert.equal(done, 4)
  })

  it('scans only once the stopped VM\'s last write has settled (the hash scan re-reads an unsettled file on every pass)', async () => {
    const clock = new ManualClock()
    const f = fakeSource(clock)
    f.src.files.push({ path: '/vm/disk.img' })
    // the guest's last write: "now" on the clock's wall time
    const ns = BigInt(Math.round(clock.wallNow())) * 1_000_000n
    const stat = async (): Promise<FileStat> => ({ size: 4096, mtimeNs: ns, ctimeNs: ns, ino: 1n, dev: 1n })
    const p = shipFinalGeneration(f.asSource, 'b', { clock, timeoutMs: 30_000, quietMs: 100, settleMs: 2000, stat })
    await clock.advanceAsync(1900)
    assert.equal(f.src.scans, 0, 'scanned before the last write settled')
    await clock.advanceAsync(300)
    assert.equal(f.src.scans, 2, 'the scan, the quiet spell and the scan again once settled')
    f.book.acked = 99
    await clock.advanceAsync(500)
    await p
  })

  it('gives up with FinalGenerationTimeoutError when the target never acknowledges', async () => {
    const clock = new ManualClock()
    const f = fakeSource(clock)
    const p = shipFinalGeneration(f.asSource, 'b', { clock, timeoutMs: 5000, quietMs: 100 })
    const check = assert.rejects(p, (e: Error) => e.name === 'FinalGenerationTimeoutError')
    await clock.advanceAsync(6000)
    await check
  })
})

describe('shipFinalGeneration: progress of the final ship', () => {
  it('tells the bytes of the final change set read as its generations go (chunks included), then all of it once acknowledged', async () => {
    const clock = new ManualClock()
    const f = fakeSource(clock)
    // the sender's generation in flight: an old one (acked before the ship), then the final
    // change set as two chunks of 600 + 400 bytes
    let sending: GenerationProgress | undefined = { generation: 3, totalBytes: 50, readBytes: 50 }
    const src = f.src as unknown as Record<string, unknown>
    src.sender = (t: string) => t === 'b' ? { generationProgress: () => sending } : undefined
    src.dirty = { dirtyBytes: async () => 900, inFlightBytes: async () => 100 }
    const seen: Array<[number, number, string]> = []
    const p = shipFinalGeneration(f.asSource, 'b', { clock, timeoutMs: 30_000, quietMs: 100, pollMs: 100, onProgress: (d, t, phase) => { seen.push([d, t, phase]) } })
    await clock.advanceAsync(300)
    assert.deepEqual(seen[0], [0, 0, 'scanning the stopped VM'])
    assert.deepEqual(seen.at(-1), [0, 1000, 'shipping the final generation 4'])
    sending = { generation: 5, totalBytes: 600, readBytes: 250 }
    await clock.advanceAsync(100)
    assert.deepEqual(seen.at(-1)?.slice(0, 2), [250, 1000])
    sending.readBytes = 600
    await clock.advanceAsync(100)
    sending = { generation: 6, totalBytes: 400, readBytes: 100 }
    await clock.advanceAsync(100)
    assert.deepEqual(seen.at(-1)?.slice(0, 2), [700, 1000], 'the first chunk whole, 100 bytes of the second')
    f.book.acked = 6
    await clock.advanceAsync(200)
    assert.equal(await p, 4)
    assert.deepEqual(seen.at(-1), [1000, 1000, 'final generation 4 acknowledged'])
  })

  it('finalReadCounter does not count what was read of the generation in flight before the ship', () => {
    const g = { generation: 7, totalBytes: 1000, readBytes: 400 }
    let cur: GenerationProgress | undefined = g
    const read = finalReadCounter(() => cur)
    assert.equal(read(), 0)
    g.readBytes = 1000
    assert.equal(read(), 600)
    cur = { generation: 8, totalBytes: 300, readBytes: 0 }
    assert.equal(read(), 600)
    cur.readBytes = 300
    assert.equal(read(), 900)
  })
})
