/**
 * The one profile table (config/profiles.ts): what a daemon with `profile: lan|wan` runs is the
 * table, the simulations run exactly that, and an override that breaks a relation between the
 * timings is refused with a typed error naming the key and its line.
 */
import assert from 'node:assert/strict'
import { normalizeConfig, parseConfigText, type Config } from '../../../config/load.ts'
import { ConfigInvalidError } from '../../../config/errors.ts'
import { PROFILES, detectorTimingProblems, ownershipTiming, ownershipTimingProblems, type ProfileName } from '../../../config/profiles.ts'
import { runSchedule } from '../../helpers/election-sim.ts'
import { SwimCluster } from '../../sim/membership/swim-cluster.ts'

const yaml = (profile: ProfileName, extra = ''): string => `
node: { name: hv-a }
mesh: { profile: ${profile} }
${extra}`

/** What a daemon started with this profile and no overrides runs. */
function shipped (profile: ProfileName): Config {
  return normalizeConfig(parseConfigText(yaml(profile), '/x/vmesh.yaml').raw, '/x/vmesh.yaml')
}

function refused (text: string): ConfigInvalidError {
  try { parseConfigText(text, '/x/vmesh.yaml') } catch (err) {
    assert.ok(err instanceof ConfigInvalidError, String(err))
    assert.equal(err.name, 'ConfigInvalidError')
    return err
  }
  assert.fail(`accepted:\n${text}`)
}

const PROFILE_NAMES: ProfileName[] = ['lan', 'wan']

describe('config: the profile table', () => {
  it('lan and wan define every detector and every ownership timing, and keep their relations', () => {
    const ownershipKeys = ['renewMs', 'leaseMs', 'fenceMs', 'driftRatio', 'electionStaggerMs', 'electionTimeoutMs', 'electionRetryMs', 'electionJitterMs', 'startRetryMs', 'startCoalesceMs', 'reportIntervalMs', 'plannedGraceMs', 'operatorTimeoutMs']
    const detectorKeys = ['probeIntervalMs', 'probeTimeoutMs', 'indirectProbes', 'suspicionMinMs', 'suspicionMaxMs', 'awarenessMax', 'retransmitMult', 'gossipPerMessage', 'suspicionConfirmations', 'pushFanout']
    for (const p of PROFILE_NAMES) {
      assert.deepEqual(Object.keys(PROFILES[p].ownership).sort(), [...ownershipKeys].sort(), p)
      assert.deepEqual(Object.keys(PROFILES[p].detector).sort(), [...detectorKeys].sort(), p)
      for (const v of [...Object.values(PROFILES[p].ownership), ...Object.values(PROFILES[p].detector)]) assert.ok(Number.isFinite(v), p)
      assert.deepEqual(ownershipTimingProblems(PROFILES[p].ownership), [], p)
      assert.deepEqual(detectorTimingProblems(PROFILES[p].detector), [], p)
      assert.ok(Object.isFrozen(PROFILES[p].ownership) && Object.isFrozen(PROFILES[p].detector))
    }
    // the figures the README's profile table states
    assert.deepEqual([PROFILES.lan.detector.probeIntervalMs, PROFILES.lan.detector.probeTimeoutMs], [400, 160])
    assert.deepEqual([PROFILES.wan.ownership.leaseMs, PROFILES.wan.ownership.renewMs, PROFILES.wan.ownership.fenceMs], [20_000, 3000, 14_000])
  })

  it('a daemon with profile: lan|wan and no overrides runs exactly the table (all 13 ownership timings)', () => {
    for (const p of PROFILE_NAMES) {
      const c = shipped(p)
      assert.deepEqual(c.mesh.detector, PROFILES[p].detector, p)
      assert.deepEqual(ownershipTiming(c.ownership), PROFILES[p].ownership, p)
    }
  })

  it('the simulations run exactly what such a daemon runs', function () {
    this.timeout(120_000)
    for (const p of PROFILE_NAMES) {
      const c = shipped(p)
      // membership simulation (test/sim/membership): every node's detector timings
      const swim = new SwimCluster({ nodes: 3, seed: 1, profile: p })
      for (const id of swim.ids) assert.deepEqual(swim.timingsOf(id), c.mesh.detector, `swim ${p} ${id}`)
      // ownership simulation (test/sim/ownership): the machine's and the detector's timings
      const rto = runSchedule({ seed: 1, kind: 'rto', profile: p })
      assert.deepEqual(rto.timing, ownershipTiming(c.ownership), `rto ${p}`)
      assert.deepEqual(rto.detector, c.mesh.detector, `rto ${p}`)
    }
    // chaos schedules set only the drift bound to the simulated clocks' drift (the bound under test)
    const lan = shipped('lan')
    for (const seed of [1, 2, 3]) {
      const chaos = runSchedule({ seed })
      assert.deepEqual({ ...chaos.timing, driftRatio: lan.ownership.driftRatio }, ownershipTiming(lan.ownership), `chaos ${seed}`)
      assert.deepEqual(chaos.detector, lan.mesh.detector, `chaos ${seed}`)
    }
  })

  it('an override is checked against the profile it overrides: a broken relation is a ConfigInvalidError with key and line', () => {
    const cases: Array<{ profile: ProfileName, extra: string, path: string }> = [
      { profile: 'lan', extra: 'ownership: { leaseMs: 3000 }', path: 'ownership.fenceMs' },
      { profile: 'wan', extra: 'ownership: { leaseMs: 5000 }', path: 'ownership.fenceMs' }, // lan's lease under wan's fence
      { profile: 'lan', extra: 'ownership: { fenceMs: 4950 }', path: 'ownership.fenceMs' }, // inside the lease, not inside it less drift
      { profile: 'lan', extra: 'ownership: { renewMs: 4000 }', path: 'ownership.renewMs' },
      { profile: 'wan', extra: 'ownership: { operatorTimeoutMs: 20000 }', path: 'ownership.operatorTimeoutMs' },
      { profile: 'lan', extra: 'ownership: { plannedGraceMs: 500 }', path: 'ownership.plannedGraceMs' },
      { profile: 'lan', extra: 'ownership: { electionTimeoutMs: 0 }', path: 'ownership.electionTimeoutMs' },
      { profile: 'lan', extra: 'ownership: { driftRatio: 0.3 }', path: 'ownership.driftRatio' },
      { profile: 'lan', extra: 'mesh: { profile: lan, detector: { probeTimeoutMs: 400 } }', path: 'mesh.detector.probeTimeoutMs' },
      { profile: 'wan', extra: 'mesh: { profile: wan, detector: { suspicionMaxMs: 5000 } }', path: 'mesh.detector.suspicionMinMs' }
    ]
    for (const { profile, extra, path } of cases) {
      const text = extra.startsWith('mesh:') ? `node: { name: hv-a }\n${extra}\n` : yaml(profile, extra)
      const err = refused(text)
      const issue = err.issues.find(i => i.path === path)
      assert.ok(issue !== undefined, `${extra}: ${err.message}`)
      assert.ok(issue.line !== undefined, `${extra}: no line in ${JSON.stringify(issue)}`)
    }
    // a consistent override of several keys passes and is what runs
    const c = normalizeConfig(parseConfigText(yaml('wan', 'ownership: { leaseMs: 30000, fenceMs: 21000, electionTimeoutMs: 3000 }'), '/x/vmesh.yaml').raw, '/x/vmesh.yaml')
    // the lease-bound timings not set follow the longer lease at the profile's ratio
    assert.deepEqual(ownershipTiming(c.ownership), { ...PROFILES.wan.ownership, leaseMs: 30_000, fenceMs: 21_000, electionTimeoutMs: 3000, plannedGraceMs: 30_000, operatorTimeoutMs: 180_000 })
  })

  it('a config valid in 0.2 that only lengthens the lease stays valid: the lease-bound timings follow it', () => {
    // 0.2 let a config set renew/lease/fence only; its operatorTimeoutMs (30 s on LAN) would be
    // shorter than the voters' promise of a 60 s lease
    const c = normalizeConfig(parseConfigText(yaml('lan', 'ownership: { renewMs: 1000, leaseMs: 60000, fenceMs: 45000 }'), '/x/vmesh.yaml').raw, '/x/vmesh.yaml')
    assert.equal(c.ownership.operatorTimeoutMs, 360_000)
    assert.equal(c.ownership.plannedGraceMs, 60_000)
    assert.deepEqual(ownershipTimingProblems(ownershipTiming(c.ownership)), [])
    // a shorter lease keeps the profile's values (never below them), and an explicit value is kept and checked
    const short = normalizeConfig(parseConfigText(yaml('lan', 'ownership: { renewMs: 500, leaseMs: 4000, fenceMs: 2500 }'), '/x/vmesh.yaml').raw, '/x/vmesh.yaml')
    assert.equal(short.ownership.operatorTimeoutMs, PROFILES.lan.ownership.operatorTimeoutMs)
    const err = refused(yaml('lan', 'ownership: { renewMs: 1000, leaseMs: 60000, fenceMs: 45000, operatorTimeoutMs: 30000 }'))
    assert.ok(err.issues.some(i => i.path === 'ownership.operatorTimeoutMs'), err.message)
  })
})
