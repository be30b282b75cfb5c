/**
 * scan.budget: the host-wide read budget of hash scans, in virtual time. The property checked is
 * the promise in status: in any window of T ms the scans of the host read at most
 * budget × T/1000 + burst bytes, with a burst of 10 ms at the budget — never a second's worth.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { writeFile } from 'node:fs/promises'
import { ManualClock } from '../../../common/clock.ts'
import { ScanReadBudget } from '../../../daemon/bandwidth/scan-budget.ts'
import type { TokenBucket } from '../../../daemon/bandwidth/bucket.ts'
import { scanRpoBoundMs } from '../../../daemon/replication/logic.ts'
import { HashScanSource } from '../../../storage/changes/hash-scan.ts'
import { Manifest } from '../../../storage/manifest/manifest.ts'
import { binarySublevel } from '../../../storage/manifest/db.ts'
import { normalizeConfig, parseConfigText } from '../../../config/load.ts'
import { aheadClock, blockContent, countingIO, tempDb, tempDir, KiB, MiB } from '../changes/helpers.ts'

interface Grant { at: number, bytes: number, flow: string }

/** Records every grant of the budget's bucket (each piece, when it is granted) with its virtual time. */
function recording (budget: ScanReadBudget, clock: ManualClock, grants: Grant[]): ScanReadBudget {
  const bucket = (budget as unknown as { bucket: TokenBucket }).bucket
  const take = bucket.take.bind(bucket)
  bucket.take = async (bytes, opts = {}) => {
    await take(bytes, opts)
    grants.push({ at: clock.now(), bytes, flow: opts.flow ?? '' })
  }
  return budget
}

/** Largest number of bytes granted in any window [t, t + windowMs]. */
function maxInWindow (grants: Grant[], windowMs: number): number {
  const g = [...grants].sort((a, b) => a.at - b.at)
  let best = 0
  let sum = 0
  let j = 0
  for (let i = 0; i < g.length; i++) {
    sum += (g[i] as Grant).bytes
    while ((g[j] as Grant).at < (g[i] as Grant).at - windowMs) { sum -= (g[j] as Grant).bytes; j++ }
    best = Math.max(best, sum)
  }
  return best
}

async function drive (clock: ManualClock, done: () => boolean, stepMs = 1, limitMs = 600_000): Promise<void> {
  for (let t = 0; !done() && t < limitMs; t += stepMs) {
    await new Promise(resolve => setImmediate(resolve))
    clock.advance(stepMs)
  }
}

describe('scan read budget (scan.budget)', () => {
  it('three VMs scanning 8 MiB chunks, four in flight each, never read above the budget', async () => {
    const clock = new ManualClock()
    const RATE = 200e6
    const grants: Grant[] = []
    const budget = recording(new ScanReadBudget({ clock }, { rateBytesPerSec: RATE }), clock, grants)
    for (const vm of ['a', 'b', 'c']) budget.register(vm)
    assert.equal(budget.burstBytes, 2e6, '10 ms at the rate')
    const until = 3000
    const scanners = ['a', 'b', 'c'].map(async (vm) => {
      const lane = async (): Promise<void> => { while (clock.now() < until) await budget.take(8 * MiB, { flow: vm }) }
      await Promise.all([lane(), lane(), lane(), lane()])
    })
    let finished = false
    const all = Promise.all(scanners).then(() => { finished = true })
    await drive(clock, () => finished)
    await all
    // Grants are stamped when the test sees them, up to one 1 ms step after the bucket made
    // them: hence the +1 ms in the bound.
    for (const w of [10, 100, 1000, 2500]) {
      const most = maxInWindow(grants, w)
      assert.ok(most <= RATE * (w + 1) / 1000 + budget.burstBytes, `window ${w} ms: ${most} bytes > budget`)
    }
    // ...and it is a budget, not a brake: the scans got (nearly) all of it, shared fairly.
    const total = grants.reduce((n, g) => n + g.bytes, 0)
    assert.ok(total >= RATE * until / 1000 * 0.95, `only ${total} bytes in ${until} ms`)
    for (const vm of ['a', 'b', 'c']) {
      const mine = grants.filter(g => g.flow === vm).reduce((n, g) => n + g.bytes, 0)
      assert.ok(Math.abs(mine - total / 3) < total * 0.05, `${vm} got ${mine} of ${total}`)
    }
    assert.equal(budget.shareBytesPerSec(), RATE / 3)
  })

  it('an aborted take gives back what it had taken and rejects with AbortedError', async () => {
    const clock = new ManualClock()
    const budget = new ScanReadBudget({ clock }, { rateBytesPerSec: 1e6 }) // burst 64 KiB (the floor)
    const ac = new AbortController()
    const p = budget.take(1e6, { signal: ac.signal })
    clock.advance(200)
    ac.abort()
    await assert.rejects(p, { name: 'AbortedError' })
    const t0 = clock.now()
    let granted = -1
    void budget.take(64 * KiB).then(() => { granted = clock.now() })
    await drive(clock, () => granted >= 0)
    assert.ok(granted - t0 < 100, 'the refunded tokens were available again')
  })

  it('a hash scan takes every byte it reads from the budget, and is paced by it', async () => {
    const dir = await tempDir()
    const db = await tempDb(dir.path)
    try {
      const file = join(dir.path, 'disk.raw')
      const BS = 64 * KiB
      const parts: Buffer[] = []
      for (let i = 0; i < 64; i++) parts.push(blockContent(BS, i)) // 4 MiB
      await writeFile(file, Buffer.concat(parts))
      const clock = aheadClock()
      const grants: Grant[] = []
      const RATE = 1 * MiB
      const budget = recording(new ScanReadBudget({ clock }, { rateBytesPerSec: RATE }), clock, grants)
      const io = countingIO()
      const src = new HashScanSource({ manifest: new Manifest(binarySublevel(db, 'manifest')), clock, io, readBudget: budget },
        { blockSizeBytes: BS, chunkBytes: 8 * BS, maxInFlight: 3, budgetFlow: 'web01' })
      const start = clock.now()
      let set: Awaited<ReturnType<HashScanSource['changes']>> | undefined
      const run = src.changes(file, null).then(s => { set = s })
      await drive(clock, () => set !== undefined, 5)
      await run
      assert.ok(set !== undefined)
      assert.equal(set.scannedBytes, 4 * MiB)
      assert.equal(io.bytes, 4 * MiB)
      const taken = grants.reduce((n, g) => n + g.bytes, 0)
      assert.ok(taken >= io.bytes, `read ${io.bytes} bytes but took ${taken}`)
      assert.ok(grants.every(g => g.flow === 'web01'))
      const elapsed = clock.now() - start
      assert.ok(elapsed >= (4 * MiB - budget.burstBytes) * 1000 / RATE - 10, `4 MiB at 1 MiB/s took only ${elapsed} ms`)
      assert.ok(maxInWindow(grants, 1000) <= RATE * 1.005 + budget.burstBytes) // +5 ms: the drive step
    } finally {
      await db.close()
      await dir.cleanup()
    }
  })

  it('the RPO the budget allows: interval + two scans at the VM\'s share; none without a budget', () => {
    // 24 GiB at a 200 MB/s budget shared by two VMs, 1 s interval
    assert.equal(scanRpoBoundMs(24 * 1024 ** 3, 100e6, 1000), Math.round(1000 + 2 * 24 * 1024 ** 3 / 100e6 * 1000))
    assert.equal(scanRpoBoundMs(24 * 1024 ** 3, Infinity, 1000), null)
  })

  it('config: scan.budget takes a rate with units (default unbounded)', () => {
    const text = (extra: string): string => `node:\n  name: hv-a\n${extra}`
    assert.equal(normalizeConfig(parseConfigText(text('scan:\n  budget: 200MB/s\n'), '/x/vmesh.yaml').raw, '/x/vmesh.yaml').scan.budgetBytesPerSec, 200e6)
    assert.equal(normalizeConfig(parseConfigText(text(''), '/x/vmesh.yaml').raw, '/x/vmesh.yaml').scan.budgetBytesPerSec, Infinity)
    assert.throws(() => parseConfigText(text('scan:\n  budget: fast\n'), '/x/vmesh.yaml'), { name: 'ConfigInvalidError' })
  })
})
