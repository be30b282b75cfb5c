/**
 * The honest RPO (status targets[].rpoMs, vmesh_replication_rpo_seconds): the age of the newest
 * capture point durable on the target, counted from when that capture *began* — not from when
 * its generation was created, which is what lagMs counts and which hides a slow scan.
 */
import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { lagMs, rpoMs } from '../../../daemon/replication/logic.ts'
import { Books } from '../../../daemon/replication/books.ts'
import { binarySublevel } from '../../../storage/manifest/db.ts'
import { tempDb, tempDir } from '../changes/helpers.ts'
import type { TempDir } from '../changes/helpers.ts'

describe('replication: honest RPO', () => {
  it('is null until something is durable, then counts from the acked capture\'s start', () => {
    const starts = new Map<number, number>([[1, 1000], [2, 5000]])
    assert.equal(rpoMs(9000, 0, 2, g => starts.get(g), 8000), null)
    // target behind at 1: everything written since the start of capture 1 is at risk
    assert.equal(rpoMs(9000, 1, 2, g => starts.get(g), 8000), 8000)
    // in sync: the live capture point (a later scan found nothing new) is durable too
    assert.equal(rpoMs(9000, 2, 2, g => starts.get(g), 8000), 1000)
    // in sync with no live point known: the acked generation's own start
    assert.equal(rpoMs(9000, 2, 2, g => starts.get(g), undefined), 4000)
    // a generation from books without capture times: unknown, not 0
    assert.equal(rpoMs(9000, 3, 4, g => starts.get(g), 8000), null)
  })

  it('a slow full scan: lag looks tiny while the RPO shows the scan (virtual time)', () => {
    // A 24 GiB disk, one hash scan every ~10 s: a write lands just after a scan began, so it is
    // found by the next scan, 10 s later; its generation is sent in 50 ms.
    const clock = new ManualClock(0, 1_000_000)
    const starts = new Map<number, number>()
    const created = new Map<number, number>()
    let current = 0
    let acked = 0
    let live: number | undefined
    let maxLag = 0
    let maxRpo = 0
    let writeAt = -1
    let rpoWhenWriteDurable = -1
    for (let round = 0; round < 6; round++) {
      const scanStart = clock.wallNow()
      if (round === 2) { clock.advance(1); writeAt = clock.wallNow() } // during the scan, after its start
      clock.advance(10_000 - (round === 2 ? 1 : 0)) // the scan reads the whole disk
      current++
      starts.set(current, scanStart)
      created.set(current, clock.wallNow())
      live = scanStart
      for (let t = 0; t < 50; t += 10) {
        clock.advance(10)
        maxLag = Math.max(maxLag, lagMs(clock.wallNow(), acked, current, g => created.get(g)))
        maxRpo = Math.max(maxRpo, rpoMs(clock.wallNow(), acked, current, g => starts.get(g), live) ?? 0)
      }
      acked = current // durable
      if (writeAt >= 0 && rpoWhenWriteDurable < 0 && (starts.get(acked) as number) > writeAt) {
        rpoWhenWriteDurable = clock.wallNow() - writeAt
      }
    }
    assert.ok(maxLag <= 50, `lagMs stays near 0 (${maxLag})`)
    assert.ok(maxRpo >= 10_000, `rpoMs shows the scan period (${maxRpo})`)
    // the write waited for the next scan: ~20 s to durability; the RPO reported bounds it
    assert.ok(rpoWhenWriteDurable > 10_000)
    assert.ok(maxRpo >= rpoWhenWriteDurable - 10_050, 'the reported RPO is never far below the real loss window')
  })

  describe('books keep the capture start of the acknowledged generation', () => {
    let dir: TempDir
    beforeEach(async () => { dir = await tempDir('vmesh-rpo-') })
    afterEach(async () => { await dir.cleanup() })

    it('persists captureStartMs and does not prune the lowest acked generation\'s metadata', async () => {
      const db = await tempDb(dir.path)
      try {
        const books = new Books(binarySublevel(db, 'books'))
        await books.load()
        await books.bump(2000, true, undefined, 1000)
        await books.bump(4000, false, undefined, 3000)
        await books.bump(6000, true, undefined, 5000)
        await books.setTarget('hv-b', { acked: 2, inFlight: null })
        assert.equal(books.meta(1), undefined, 'below every acked generation: pruned')
        assert.equal(books.meta(2)?.captureStartMs, 3000, 'the acked one stays: it is the RPO')
        const again = new Books(binarySublevel(db, 'books'))
        await again.load()
        assert.equal(again.meta(3)?.captureStartMs, 5000)
        assert.equal(rpoMs(10_000, again.target('hv-b').acked, again.generation, g => again.meta(g)?.captureStartMs, undefined), 7000)
      } finally {
        await db.close()
      }
    })
  })
})
