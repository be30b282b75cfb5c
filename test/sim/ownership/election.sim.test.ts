/**
 * The ownership machine under seeded chaos (test/helpers/election-sim.ts): ≥ 10 000 schedules of
 * 2–4 hosts (+ a witness or not), 1–3 VMs, crashes, daemon restarts, pauses, one- and two-way
 * partitions, loss, duplication, delay and clock drift; safety invariants on every schedule and
 * liveness after a healed stable period. Then the RTO distribution of a plain owner-host crash,
 * for both shipped profiles. Every node runs the real detector and machine with the shipped
 * timings (config/profiles.ts; test/unit/config/profiles.test.ts checks that).
 *
 *   VMESH_SIM_SCHEDULES=N   number of chaos schedules (default 10 000)
 *   VMESH_SIM_SEED=S        replay one seed with its trace printed, nothing else
 */
import assert from 'node:assert/strict'
import { PROFILES } from '../../../config/profiles.ts'
import { runSchedule } from '../../helpers/election-sim.ts'
import type { ScheduleKind, ScheduleResult } from '../../helpers/election-sim.ts'

const SCHEDULES = Number(process.env.VMESH_SIM_SCHEDULES ?? 10_000)
const CHUNK = 2000
const RTO_SCHEDULES = 500
const WAN_RTO_SCHEDULES = 100
const REPLAY = process.env.VMESH_SIM_SEED

function explain (r: ScheduleResult, kind: ScheduleKind, profile: 'lan' | 'wan' = 'lan'): string {
  const replay = runSchedule({ seed: r.seed, kind, trace: true, profile })
  return [
    `seed ${r.seed} (${kind}): ${r.summary}`,
    ...r.violations.map(v => `  violation: ${v}`),
    r.liveness === 'ok' ? '' : `  liveness: ${r.livenessDetail}`,
    `  replay: VMESH_SIM_SEED=${r.seed} npx mocha test/sim/ownership/election.sim.test.ts`,
    '  trace (last 150 lines):',
    ...replay.trace.slice(-150).map(l => `    ${l}`)
  ].join('\n')
}

function quantile (sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number
}

describe('ownership simulation', function () {
  this.timeout(600_000)

  if (REPLAY !== undefined) {
    it(`replays seed ${REPLAY}`, () => {
      const kind = (process.env.VMESH_SIM_KIND ?? 'chaos') as ScheduleKind
      const r = runSchedule({ seed: Number(REPLAY), kind, trace: true })
      console.log(r.trace.join('\n'))
      console.log(r.summary, r.violations, r.liveness, r.livenessDetail, r.counts)
      assert.deepEqual(r.violations, [])
      assert.equal(r.liveness, 'ok', r.livenessDetail)
    })
    return
  }

  const totals = { schedules: 0, faults: new Map<string, number>(), starts: 0, elections: 0, forced: 0, watchdogKills: 0, planned: 0, messages: 0, ms: 0 }

  for (let from = 1; from <= SCHEDULES; from += CHUNK) {
    const to = Math.min(SCHEDULES, from + CHUNK - 1)
    it(`chaos schedules ${from}..${to}: no overlap, epochs increase, one grant per (vm, epoch), VMs run after healing`, () => {
      const t0 = performance.now()
      const failures: string[] = []
      for (let seed = from; seed <= to; seed++) {
        const r = runSchedule({ seed })
        totals.schedules++
        for (const f of r.faults) totals.faults.set(f, (totals.faults.get(f) ?? 0) + 1)
        totals.starts += r.counts.starts
        totals.elections += r.counts.elections
        totals.forced += r.counts.forced
        totals.watchdogKills += r.counts.watchdogKills
        totals.planned += r.counts.planned
        totals.messages += r.counts.messages
        if ((r.violations.length > 0 || r.liveness !== 'ok') && failures.length < 3) failures.push(explain(r, 'chaos'))
      }
      totals.ms += performance.now() - t0
      assert.equal(failures.length, 0, failures.join('\n\n'))
    })
  }

  it('covered every kind of fault many times', () => {
    console.log(`      ${totals.schedules} schedules in ${(totals.ms / 1000).toFixed(1)} s: ${totals.starts} VM starts, ${totals.elections} elections won (${totals.forced} forced), ${totals.watchdogKills} watchdog kills, ${totals.planned} planned failovers, ${totals.messages} election messages`)
    console.log(`      faults: ${[...totals.faults].map(([k, n]) => `${k}=${n}`).join(' ')}`)
    assert.equal(totals.schedules, SCHEDULES)
    if (SCHEDULES < 1000) return
    for (const f of ['crash', 'daemon-restart', 'pause', 'partition', 'one-way', 'isolate', 'loss-burst', 'planned', 'operator', 'force']) {
      assert.ok((totals.faults.get(f) ?? 0) >= SCHEDULES / 100, `${f}: ${totals.faults.get(f) ?? 0}`)
    }
    assert.ok(totals.watchdogKills > 0 && totals.elections > SCHEDULES / 2)
  })

  it(`restarts a crashed owner's VM elsewhere within LAN timings (${RTO_SCHEDULES} schedules)`, () => {
    const rtos: number[] = []
    const failures: string[] = []
    for (let seed = 1; seed <= RTO_SCHEDULES; seed++) {
      const r = runSchedule({ seed, kind: 'rto' })
      if (r.rtoMs !== undefined) rtos.push(r.rtoMs)
      if ((r.violations.length > 0 || r.liveness !== 'ok') && failures.length < 3) failures.push(explain(r, 'rto'))
    }
    assert.equal(failures.length, 0, failures.join('\n\n'))
    rtos.sort((a, b) => a - b)
    const s = (x: number): string => (x / 1000).toFixed(2)
    console.log(`      RTO (owner host crash → VM running elsewhere), ${rtos.length} runs: min ${s(rtos[0] as number)} s, p50 ${s(quantile(rtos, 0.5))} s, p90 ${s(quantile(rtos, 0.9))} s, p99 ${s(quantile(rtos, 0.99))} s, max ${s(rtos[rtos.length - 1] as number)} s`)
    assert.equal(rtos.length, RTO_SCHEDULES)
    // Detection ≈ 3 s overlaps the voters' promises (5 s × (1 + drift) after the last ack).
    assert.ok((rtos[0] as number) >= 4000, 'no VM may restart before the old lease has surely ended')
    assert.ok(quantile(rtos, 0.5) < 6500)
    assert.ok(quantile(rtos, 0.99) < 10_000)
  })

  it(`restarts a crashed owner's VM elsewhere within WAN timings, over WAN links (${WAN_RTO_SCHEDULES} schedules)`, () => {
    const rtos: number[] = []
    const failures: string[] = []
    for (let seed = 1; seed <= WAN_RTO_SCHEDULES; seed++) {
      const r = runSchedule({ seed, kind: 'rto', profile: 'wan' })
      if (r.rtoMs !== undefined) rtos.push(r.rtoMs)
      if ((r.violations.length > 0 || r.liveness !== 'ok') && failures.length < 3) failures.push(explain(r, 'rto', 'wan'))
    }
    assert.equal(failures.length, 0, failures.join('\n\n'))
    rtos.sort((a, b) => a - b)
    const s = (x: number): string => (x / 1000).toFixed(2)
    console.log(`      WAN RTO, ${rtos.length} runs: min ${s(rtos[0] as number)} s, p50 ${s(quantile(rtos, 0.5))} s, p90 ${s(quantile(rtos, 0.9))} s, p99 ${s(quantile(rtos, 0.99))} s, max ${s(rtos[rtos.length - 1] as number)} s`)
    assert.equal(rtos.length, WAN_RTO_SCHEDULES)
    const t = PROFILES.wan.ownership
    // The last ack may be a renewal period old at the crash; the voters' promise runs a lease from it.
    assert.ok((rtos[0] as number) >= t.leaseMs - t.renewMs, 'no VM may restart before the old lease has surely ended')
    // Detection (≈ 10 s) hides inside the lease; then one election, a stagger per rank.
    assert.ok(quantile(rtos, 0.5) < 22_000)
    assert.ok(quantile(rtos, 0.99) < 25_000)
  })
})
