/**
 * Capacity, priority and start order under multiple host failures (test/helpers/election-sim.ts,
 * `runCapacity`): ≥ 10 000 seeded schedules of 3 hosts with random capacities + 2 witnesses,
 * up to 6 VMs (each fitting at home) with random demand, priorities and startAfter chains; two hosts (sometimes one) crash,
 * some return. The same real machine and SWIM detector, with the shipped LAN timings. Checked:
 * never two runners / leases / grants (as in the chaos sim), no host over capacity, no
 * higher-priority VM left waiting for room a lower one took, start order kept (or the timeout
 * announced), and at the end no VM off while a live holder of its data has room.
 *
 *   VMESH_CAP_SCHEDULES=N   number of schedules (default 10 000)
 *   VMESH_CAP_SEED=S        replay one seed with its trace printed
 */
import assert from 'node:assert/strict'
import { runSchedule } from '../../helpers/election-sim.ts'
import type { ScheduleResult } from '../../helpers/election-sim.ts'

const SCHEDULES = Number(process.env.VMESH_CAP_SCHEDULES ?? 10_000)
const CHUNK = 2500
const REPLAY = process.env.VMESH_CAP_SEED

function explain (r: ScheduleResult): string {
  const replay = runSchedule({ seed: r.seed, kind: 'capacity', trace: true })
  return [
    `seed ${r.seed}: ${r.summary}`,
    ...r.violations.map(v => `  violation: ${v}`),
    r.liveness === 'ok' ? '' : `  liveness: ${r.livenessDetail}`,
    `  replay: VMESH_CAP_SEED=${r.seed} npx mocha test/sim/ownership/capacity.sim.test.ts`,
    '  trace (last 120 lines):',
    ...replay.trace.slice(-120).map(l => `    ${l}`)
  ].join('\n')
}

describe('ownership simulation: capacity, priority, start order', function () {
  this.timeout(600_000)

  if (REPLAY !== undefined) {
    it(`replays seed ${REPLAY}`, () => {
      const r = runSchedule({ seed: Number(REPLAY), kind: 'capacity', trace: true })
      console.log(r.trace.join('\n'))
      console.log(r.summary, r.violations, r.liveness, r.livenessDetail, r.dr)
      assert.deepEqual(r.violations, [])
      assert.equal(r.liveness, 'ok', r.livenessDetail)
    })
    return
  }

  const totals = { schedules: 0, ms: 0, starts: 0, elections: 0, placements: 0, noRoom: 0, timeouts: 0, multi: 0 }

  for (let from = 1; from <= SCHEDULES; from += CHUNK) {
    const to = Math.min(SCHEDULES, from + CHUNK - 1)
    it(`schedules ${from}..${to}: no host over capacity, priority and start order kept, VMs run where there is room`, () => {
      const t0 = performance.now()
      const failures: string[] = []
      for (let seed = from; seed <= to; seed++) {
        const r = runSchedule({ seed, kind: 'capacity' })
        totals.schedules++
        totals.starts += r.counts.starts
        totals.elections += r.counts.elections
        totals.placements += r.dr?.placements ?? 0
        totals.noRoom += r.dr?.noRoom ?? 0
        totals.timeouts += r.dr?.startAfterTimeouts ?? 0
        if (!r.faults.includes('crash×1')) totals.multi++
        if ((r.violations.length > 0 || r.liveness !== 'ok') && failures.length < 3) failures.push(explain(r))
      }
      totals.ms += performance.now() - t0
      assert.equal(failures.length, 0, failures.join('\n\n'))
    })
  }

  it('exercised multiple host failures, full hosts and the startAfter timeout', () => {
    console.log(`      ${totals.schedules} schedules in ${(totals.ms / 1000).toFixed(1)} s: ${totals.multi} with ≥ 2 host crashes, ${totals.starts} VM starts, ${totals.elections} elections, ${totals.placements} placements judged, ${totals.noRoom} no-room, ${totals.timeouts} startAfter timeouts`)
    assert.equal(totals.schedules, SCHEDULES)
    if (SCHEDULES < 1000) return
    assert.ok(totals.multi >= SCHEDULES / 3, `multi-crash schedules: ${totals.multi}`)
    assert.ok(totals.noRoom >= SCHEDULES / 10, `no-room: ${totals.noRoom}`)
    assert.ok(totals.timeouts > 0 && totals.elections > SCHEDULES)
  })
})
