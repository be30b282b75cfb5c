/**
 * Membership at scale on the seeded simulated network: 50 detectors running the shipped
 * profiles (config/profiles.ts), real codec, loss, delay, partitions, clock drift. Virtual time;
 * each test states its bounds.
 */
import assert from 'node:assert/strict'
import { PROFILES } from '../../../config/profiles.ts'
import type { LinkConfig } from '../../helpers/simnet.ts'
import { SwimCluster, percentile } from './swim-cluster.ts'

const LAN_LINK: Partial<LinkConfig> = { delayMs: 0.3, jitterMs: 0.6 }
const WAN_LINK: Partial<LinkConfig> = { delayMs: 30, jitterMs: 30 }

describe('membership simulation (50 nodes)', function () {
  this.timeout(120_000)

  it('converges: every node sees every other alive, also with staggered starts', () => {
    for (const seed of [1, 2]) {
      const c = new SwimCluster({ nodes: 50, seed, profile: 'lan', link: LAN_LINK, drift: 1e-4 })
      const at = c.net.runUntilTrue(() => c.allAlive(), 10_000, 10)
      assert.ok(at !== undefined && at <= 100, `seed ${seed}: converged at ${at}`)
    }
    // half the nodes come up over 20 s, in random order
    const c = new SwimCluster({ nodes: 50, seed: 3, profile: 'lan', link: LAN_LINK })
    const late = c.ids.filter((_, i) => i % 2 === 1)
    for (const id of late) c.net.kill(id)
    let lastStart = 0
    for (const id of late) {
      const t = c.net.random.next() * 20_000
      lastStart = Math.max(lastStart, t)
      c.net.at(t, () => { c.net.restart(id) })
    }
    c.net.runUntil(lastStart)
    const at = c.net.runUntilTrue(() => c.allAlive(), 10_000, 10)
    assert.ok(at !== undefined && at - lastStart <= 500, `converged ${at !== undefined ? at - lastStart : 'never'} ms after the last start`)
    assert.equal(c.memberEvents({ state: 'dead' }).length, 0)
  })

  it('a killed node is dead in every survivor\'s view, within bounds', () => {
    const times: number[] = []
    for (const seed of [1, 2, 3, 4, 5]) {
      const c = new SwimCluster({ nodes: 50, seed, profile: 'lan', link: LAN_LINK })
      c.net.runFor(5_000 + c.net.random.next() * 1_000)
      const victim = c.ids[c.net.random.int(50)] as string
      const killedAt = c.net.now
      c.net.kill(victim)
      c.net.runFor(15_000)
      assert.ok(c.allSee(victim, 'dead'), `seed ${seed}`)
      const d = c.detection(victim, killedAt)
      assert.ok(d?.all !== undefined)
      // dissemination: the last survivor learns within a fraction of a second of the first
      assert.ok(d.all - d.first <= 250, `seed ${seed}: spread took ${d.all - d.first} ms`)
      assert.ok(d.all <= 5_000, `seed ${seed}: ${d.all} ms`)
      assert.equal(c.memberEvents({ state: 'dead' }).filter(e => e.event.id !== victim).length, 0)
      times.push(d.all)
    }
    assert.ok(percentile(times, 50) <= 3_000, `p50 ${percentile(times, 50)}`)
  })

  it('no false deaths at 5 % message loss over 5 virtual minutes (3 seeds, clock drift)', () => {
    for (const seed of [11, 12, 13]) {
      const c = new SwimCluster({ nodes: 50, seed, profile: 'lan', link: { ...LAN_LINK, drop: 0.05, duplicate: 0.01 }, drift: 1e-4 })
      c.net.runFor(5 * 60_000)
      const suspicions = c.memberEvents({ state: 'suspect' }).length
      assert.ok(suspicions > 0, 'loss does cause (refuted) suspicions: the scenario is not trivial')
      assert.deepEqual(c.memberEvents({ state: 'dead' }).map(e => `${e.node} saw ${e.event.id} dead at ${e.at}`), [])
      assert.ok(c.allAlive())
    }
  })

  it('a two-way partition declares the other side dead, and everyone is alive again after it heals', () => {
    const c = new SwimCluster({ nodes: 50, seed: 21, profile: 'lan', link: LAN_LINK })
    c.net.runFor(3_000)
    const left = c.ids.slice(0, 30)
    const right = c.ids.slice(30)
    c.net.partition(left, right)
    c.net.runFor(20_000)
    for (const l of left) for (const r of right) {
      assert.equal(c.view(l, r)?.state, 'dead')
      assert.equal(c.view(r, l)?.state, 'dead')
    }
    assert.ok(c.allAlive(left) && c.allAlive(right), 'each side stays whole')
    c.net.heal()
    const healedAt = c.net.now
    const at = c.net.runUntilTrue(() => c.allAlive(), 60_000, 10)
    assert.ok(at !== undefined, 'healed')
    // the first member seen back from the dead makes its observers re-probe every dead member
    assert.ok(at - healedAt <= 4 * PROFILES.lan.detector.probeIntervalMs, `alive again after ${at - healedAt} ms`)
    c.net.runFor(30_000)
    assert.ok(c.allAlive(), 'and stays so')
  })

  it('a one-way partition (a node that cannot hear) heals too', () => {
    const c = new SwimCluster({ nodes: 50, seed: 22, profile: 'lan', link: LAN_LINK })
    c.net.runFor(3_000)
    const deaf = 'n07'
    c.net.partition(c.ids.filter(id => id !== deaf), [deaf], { oneWay: true })
    c.net.runFor(20_000)
    assert.ok(c.allSee(deaf, 'dead'), 'a node that hears nothing cannot answer probes')
    const others = c.ids.filter(id => id !== deaf)
    assert.ok(c.allAlive(others), 'its one-sided accusations were refuted')
    c.net.heal()
    const healedAt = c.net.now
    const at = c.net.runUntilTrue(() => c.allAlive(), 60_000, 10)
    assert.ok(at !== undefined && at - healedAt <= 4 * PROFILES.lan.detector.probeIntervalMs, `alive again after ${at !== undefined ? at - healedAt : 'never'} ms`)
  })

  it('detection time figures for 3, 10 and 50 nodes (LAN and WAN)', function () {
    const rows: Array<Record<string, string | number>> = []
    const measure = (n: number, profile: 'lan' | 'wan', trials: number): { p50: number, p99: number, max: number } => {
      const timings = PROFILES[profile].detector
      const all: number[] = []
      const first: number[] = []
      for (let seed = 1; seed <= trials; seed++) {
        const c = new SwimCluster({ nodes: n, seed: 1000 * n + seed, profile, link: profile === 'lan' ? LAN_LINK : WAN_LINK })
        c.net.runFor(timings.probeIntervalMs * 6 + c.net.random.next() * timings.probeIntervalMs * n)
        const victim = c.ids[c.net.random.int(n)] as string
        const killedAt = c.net.now
        c.net.kill(victim)
        c.net.runFor(timings.suspicionMaxMs * 3)
        const d = c.detection(victim, killedAt)
        assert.ok(d?.all !== undefined, `${n} ${profile} seed ${seed}: not detected by all`)
        all.push(d.all)
        first.push(d.first)
      }
      rows.push({ nodes: n, profile, trials, firstP50: Math.round(percentile(first, 50)), p50: Math.round(percentile(all, 50)), p99: Math.round(percentile(all, 99)), max: Math.round(Math.max(...all)) })
      return { p50: percentile(all, 50), p99: percentile(all, 99), max: Math.max(...all) }
    }
    for (const n of [3, 10, 50]) {
      const lan = measure(n, 'lan', n === 50 ? 40 : 100)
      // bound: the first probe of the victim (≈ exponential, mean one interval cluster-wide)
      // + one interval + the minimum suspicion timeout
      assert.ok(lan.p50 <= 2_500 && lan.p99 <= 4_000, `LAN ${n}: ${JSON.stringify(lan)}`)
      const wan = measure(n, 'wan', n === 50 ? 20 : 50)
      assert.ok(wan.p50 <= 11_000 && wan.p99 <= 20_000, `WAN ${n}: ${JSON.stringify(wan)}`)
    }
    // all survivors, ms after the kill
    console.table(rows)
  })
})
