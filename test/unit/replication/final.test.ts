import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { shipFinalGeneration } from '../../../daemon/replication/final.ts'
import type { VmSource } from '../../../daemon/replication/vm-source.ts'

/** The slice of a VmSource the final shipment uses, with a target that acks what it is told to. */
function fakeSource (clock: ManualClock, o: { scanBusyUntil?: number, target?: string } = {}) {
  const metas = new Map<number, { consistent: boolean }>()
  const book = { acked: 0 }
  const src = {
    name: 'vm1',
    generation: 3,
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

  it('gives up with FinalGenerationTimeoutError when the target never acknowledges', async () => {
    const clock = new ManualClock()
    const f = fakeSource(clock)
    const p = shipFinalGeneration(f.asSource, 'b', { clock, timeoutMs: 5000, quietMs: 100 })
    const check = assert.rejects(p, (e: Error) => e.name === 'FinalGenerationTimeoutError')
    await clock.advanceAsync(6000)
    await check
  })
})
