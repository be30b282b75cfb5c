/**
 * The chaos soak (issue #14), 3 minutes of faults inside `npm test`: three hosts and a witness
 * (network namespaces when root, loopback otherwise), four VMs with a writer each, a seeded
 * nemesis every 10-30 s (kill -9 of a host, SIGSTOP past the lease, partitions, a full replica
 * disk, a daemon restart, a ±1 h wall-clock jump) — test/helpers/soak/engine.ts, the same engine
 * as `npm run bench -- soak`. The seed is printed; SOAK_SEED replays a schedule. On a broken
 * invariant the cluster folder (daemon logs, events log, writers' state logs) is kept and named.
 */
import assert from 'node:assert/strict'
import { runSoak, type SoakResult } from '../../helpers/soak/engine.ts'
import { requireQemu } from '../../helpers/qemu.ts'

const DURATION_MS = 180_000

describe('integration: chaos soak on real processes (3 minutes)', function () {
  // warm-up (4 daemon starts, seeds) + 180 s of faults + the last heal's measurements
  this.timeout(DURATION_MS + 420_000)

  before(function () { requireQemu(this) })

  it('no double start, no torn replica, no daemon dying by itself, every VM back within 15 s of each heal, replication in sync within 60 s, RSS growth ≤ 10 %', async () => {
    const seed = process.env.SOAK_SEED !== undefined ? Number(process.env.SOAK_SEED) : Math.floor(Math.random() * 2 ** 31)
    const lines: string[] = []
    let result: SoakResult | undefined
    try {
      result = await runSoak({ durationMs: DURATION_MS, seed, log: (l) => lines.push(`${new Date().toISOString()} ${l}`) })
    } finally {
      console.log(`      soak seed ${seed} (replay: SOAK_SEED=${seed})\n${lines.map(l => `        ${l}`).join('\n')}`)
    }
    const f = result.figures
    console.log(`      ${result.mode}: ${f.actions} faults, ${f.vmStarts} VM starts, ${f.replicaChecks} replica reads (${f.qemuCompares} qemu-img compares), max time to running ${f.maxTimeToRunningMs} ms, to in sync ${f.maxTimeToInSyncMs} ms, RSS growth ${f.rssGrowthPct} %${Object.keys(result.unavailable).length > 0 ? `; not injected here: ${JSON.stringify(result.unavailable)}` : ''}`)
    // the evidence behind the RSS figure: [age s, RSS MiB, V8 heap committed MiB, external MiB, LevelDB MiB, V8 malloced peak MiB]
    for (const r of result.rss) console.log(`      RSS ${r.node} pid ${r.pid}: ${r.growthPct} % (${Math.round(r.baselineKiB / 1024)} → ${Math.round(r.endKiB / 1024)} MiB) ${JSON.stringify(r.samples)}`)
    assert.ok(f.actions >= 4, `the nemesis acted ${f.actions} times in ${DURATION_MS} ms`)
    assert.ok(f.replicaChecks > 0, 'replicas were read at rest and checked')
    assert.ok(result.rss.length > 0, 'a daemon lived long enough past warm-up to measure its RSS')
    assert.equal(f.doubleStarts, 0)
    assert.equal(f.tornReplicas, 0)
    assert.equal(f.tornStarts, 0)
    assert.equal(f.unexpectedExits, 0)
    assert.deepEqual(result.violations, [], `kept: ${result.clusterDir ?? ''}`)
  })
})
