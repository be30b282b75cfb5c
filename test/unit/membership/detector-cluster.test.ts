/**
 * Small clusters of real detectors on the seeded simulated network (virtual time, real codec).
 */
import assert from 'node:assert/strict'
import { PROFILES } from '../../../config/profiles.ts'
import type { DetectorTimings } from '../../../daemon/membership/detector.ts'
import { decodeSwimMessage } from '../../../protocol/membership/codec.ts'
import type { SwimMessage } from '../../../protocol/membership/messages.ts'
import { SwimCluster, percentile } from '../../sim/membership/swim-cluster.ts'
import type { Wire } from '../../sim/membership/swim-cluster.ts'

const LAN_LINK = { delayMs: 0.3, jitterMs: 0.4 }

function msgOf (w: Wire): SwimMessage { return w instanceof Uint8Array ? decodeSwimMessage(w) : w }

const LAN_TIMINGS = PROFILES.lan.detector

function lan5 (seed: number, extra: { timingsFor?: (id: string) => DetectorTimings | undefined } = {}): SwimCluster {
  return new SwimCluster({ nodes: 5, seed, profile: 'lan', link: LAN_LINK, ...extra })
}

/** Makes `id` refute `times` suspicions so its peers remember a higher incarnation. */
function bumpIncarnation (c: SwimCluster, id: string, accuser: string, times: number): void {
  for (let i = 0; i < times; i++) {
    const inc = c.detector(id)?.self().incarnation ?? 0
    c.poke(id, (det, now) => det.step(now, accuser, { type: 'gossip', seq: 0, incarnation: 1, piggyback: [{ kind: 'suspect', id, incarnation: inc, from: accuser }] }))
    c.net.runFor(200)
  }
}

describe('Detector in a 5-node LAN cluster (simulated network)', function () {
  this.timeout(60_000)

  it('every survivor sees a silently killed node dead within the 3 s LAN goal', () => {
    const all: number[] = []
    for (let seed = 1; seed <= 40; seed++) {
      const c = lan5(seed)
      c.net.runFor(3_000 + c.net.random.next() * 2_000)
      assert.ok(c.allAlive(), 'converged before the kill')
      const victim = c.ids[c.net.random.int(c.ids.length)] as string
      const killedAt = c.net.now
      let firstPing = Infinity
      c.net.trace(r => { if (r.to === victim && r.at < firstPing && msgOf(r.msg).type === 'ping') firstPing = r.at })
      c.net.kill(victim)
      c.net.runFor(10_000)
      const d = c.detection(victim, killedAt)
      assert.ok(d?.all !== undefined, `seed ${seed}: not every survivor saw ${victim} dead`)
      // Once anyone probes the victim, everyone knows within one interval plus the minimum suspicion
      // (all three other survivors confirm at once), whatever the probe schedule did before that.
      assert.ok(d.all <= firstPing - killedAt + LAN_TIMINGS.probeIntervalMs + LAN_TIMINGS.suspicionMinMs + 50, `seed ${seed}: ${d.all} ms after the first probe at ${firstPing - killedAt}`)
      assert.equal(c.memberEvents({ state: 'dead' }).filter(e => e.event.id !== victim).length, 0, 'no false deaths')
      all.push(d.all)
    }
    assert.ok(percentile(all, 50) <= 2_200, `p50 ${percentile(all, 50)}`)
    assert.ok(percentile(all, 95) <= 3_000, `p95 ${percentile(all, 95)}`)
  })

  it('transportLost (connection reset by a crashed process) makes every survivor probe at once', () => {
    for (let seed = 1; seed <= 10; seed++) {
      const c = lan5(seed)
      c.net.runFor(3_000 + c.net.random.next() * 2_000)
      const victim = 'n03'
      const killedAt = c.net.now
      const pingedBy = new Map<string, number>()
      c.net.trace(r => { if (r.to === victim && !pingedBy.has(r.from) && msgOf(r.msg).type === 'ping') pingedBy.set(r.from, r.at - killedAt) })
      c.net.kill(victim, { notifyPeers: true })
      c.net.runFor(10_000)
      for (const s of c.ids.filter(id => id !== victim)) {
        const at = pingedBy.get(s)
        assert.ok(at !== undefined && at <= LAN_LINK.delayMs + 1e-6, `seed ${seed}: ${s} pinged at ${at}`)
      }
      const d = c.detection(victim, killedAt)
      assert.ok(d?.all !== undefined && d.all <= LAN_TIMINGS.probeIntervalMs + LAN_TIMINGS.suspicionMinMs + 50, `seed ${seed}: ${d?.all}`)
    }
  })

  it('a suspected but alive member refutes with a higher incarnation and stays alive', () => {
    const c = lan5(2)
    c.net.runFor(3_000)
    const t0 = c.net.now
    // n00 hears (falsely) that n02 is suspect; everyone else learns it by gossip
    c.poke('n00', (det, now) => det.step(now, 'n01', { type: 'gossip', seq: 0, incarnation: 1, piggyback: [{ kind: 'suspect', id: 'n02', incarnation: 1, from: 'n01' }] }))
    assert.equal(c.view('n00', 'n02')?.state, 'suspect')
    c.net.runFor(10_000)
    assert.equal(c.detector('n02')?.self().incarnation, 2)
    assert.equal(c.log.filter(e => e.node === 'n02' && e.event.type === 'refuted').length, 1)
    assert.equal(c.memberEvents({ state: 'dead', since: t0 }).length, 0)
    for (const o of ['n00', 'n01', 'n03', 'n04']) assert.deepEqual([c.view(o, 'n02')?.state, c.view(o, 'n02')?.incarnation], ['alive', 2])
    const cleared = c.memberEvents({ id: 'n02', state: 'alive', since: t0 }).map(e => e.at - t0)
    assert.ok(cleared.length > 0 && Math.max(...cleared) < 50, `refutation took ${Math.max(...cleared)} ms`)
  })

  it('indirect probes keep a member alive behind a broken direct link (A<->C dropped both ways)', () => {
    for (const seed of [1, 2, 3]) {
      const c = lan5(seed)
      c.net.runFor(2_000)
      c.net.setLinks('n00', 'n02', { drop: 1 })
      let indirect = 0
      c.net.trace(r => { const m = msgOf(r.msg); if (r.from === 'n00' && m.type === 'pingReq' && m.target === 'n02') indirect++ })
      const t0 = c.net.now
      c.net.runFor(5 * 60_000)
      assert.ok(indirect > 100, `the indirect path was used (${indirect})`)
      assert.equal(c.memberEvents({ state: 'dead', since: t0 }).length, 0, 'nobody declared dead')
      assert.equal(c.memberEvents({ node: 'n00', id: 'n02', since: t0 }).length, 0, 'A never even suspected C')
      assert.equal(c.detector('n00')?.self().awareness, 0, 'nacks tell A the fault is not its own')
      assert.ok(c.allAlive())
    }
  })

  it('awareness: a node with slow outbound messages accuses healthy peers far less often', () => {
    const run = (awarenessMax: number): { accusations: number, maxScore: number, healthyDeaths: number } => {
      const c = lan5(3, { timingsFor: id => id === 'n04' ? { ...LAN_TIMINGS, awarenessMax } : undefined })
      c.net.runFor(2_000)
      // n04's own messages take 600 ms: longer than a whole probe interval
      for (const o of c.ids) if (o !== 'n04') c.net.setLink('n04', o, { delayMs: 600, jitterMs: 20 })
      const t0 = c.net.now
      let maxScore = 0
      c.net.runUntilTrue(() => { maxScore = Math.max(maxScore, c.detector('n04')?.self().awareness ?? 0); return false }, 120_000, 100)
      return {
        accusations: c.memberEvents({ node: 'n04', state: 'suspect', since: t0 }).length,
        maxScore,
        healthyDeaths: c.memberEvents({ state: 'dead', since: t0 }).filter(e => e.event.id !== 'n04').length
      }
    }
    const aware = run(LAN_TIMINGS.awarenessMax)
    const unaware = run(1)
    assert.equal(unaware.maxScore, 0)
    assert.ok(unaware.accusations >= 100, `without awareness n04 accuses constantly (${unaware.accusations})`)
    assert.ok(aware.maxScore >= 3, `missing nacks raised n04's score (${aware.maxScore})`)
    assert.ok(aware.accusations * 20 <= unaware.accusations, `aware ${aware.accusations} vs unaware ${unaware.accusations}`)
    assert.equal(aware.healthyDeaths, 0)
  })

  it('awareness: a node that stalls (GC-like pauses) does not blame its peers for it', () => {
    for (const pauseMs of [400, 700]) {
      const c = lan5(1)
      c.net.runFor(2_000)
      const t0 = c.net.now
      let maxScore = 0
      for (let k = 0; k < 40; k++) {
        const at = t0 + k * 2_000 + c.net.random.next() * 500
        c.net.at(at, () => { c.net.pause('n04') })
        c.net.at(at + pauseMs, () => { c.net.resume('n04'); maxScore = Math.max(maxScore, c.detector('n04')?.self().awareness ?? 0) })
      }
      c.net.runFor(85_000)
      assert.equal(c.memberEvents({ node: 'n04', state: 'suspect', since: t0 }).length, 0, `pause ${pauseMs}: n04 accused a peer`)
      assert.equal(c.memberEvents({ state: 'dead', since: t0 }).length, 0)
      assert.ok(maxScore > 0, 'the stalls counted as local lag')
      assert.ok(c.allAlive())
    }
  })

  it('observeLag from the driver stretches the node\'s own probing', () => {
    const c = lan5(4)
    c.net.runFor(2_000)
    const pings: number[] = []
    c.net.trace(r => { if (r.from === 'n01' && msgOf(r.msg).type === 'ping') pings.push(r.at) })
    c.net.runFor(5_000)
    const healthyRate = pings.length
    c.poke('n01', (det, now) => det.observeLag(now, 1_000))
    assert.equal(c.detector('n01')?.self().awareness, 4)
    pings.length = 0
    c.net.runFor(5_000)
    assert.ok(pings.length * 2 <= healthyRate, `${pings.length} pings while lagging vs ${healthyRate} healthy`)
  })

  it('a restarted member with a lower incarnation is alive again everywhere within one probe round', () => {
    for (const seed of [1, 2, 3, 4]) {
      const c = lan5(seed)
      c.net.runFor(2_000)
      bumpIncarnation(c, 'n01', 'n02', 3)
      assert.equal(c.view('n00', 'n01')?.incarnation, 4)
      c.net.kill('n01')
      c.net.runFor(6_000)
      assert.ok(c.allSee('n01', 'dead'))
      // restart while cut off, so its start-up hellos are lost: only the regular probes remain
      c.net.isolate('n01')
      c.net.restart('n01')
      c.net.runFor(1_000)
      assert.equal(c.detector('n01')?.self().incarnation, 1)
      c.net.heal()
      const healedAt = c.net.now
      const survivors = c.ids.filter(id => id !== 'n01')
      const back = c.net.runUntilTrue(() => survivors.every(s => c.view(s, 'n01')?.state === 'alive'), 10_000, 5)
      const round = (c.ids.length - 1) * LAN_TIMINGS.probeIntervalMs
      assert.ok(back !== undefined && back - healedAt <= round, `seed ${seed}: alive again after ${back !== undefined ? back - healedAt : 'never'} ms (round ${round})`)
      // The restarted node itself learns its never-seen peers from its own round-robin probes
      // (the re-probe of dead members is for members seen before): a member drawn late in a
      // reshuffled round is reached within two rounds.
      const all = c.net.runUntilTrue(() => c.allAlive(), 10_000, 5)
      assert.ok(all !== undefined && all - healedAt <= 2 * round, `seed ${seed}: every view whole after ${all !== undefined ? all - healedAt : 'never'} ms (two rounds ${2 * round})`)
      assert.ok((c.detector('n01')?.self().incarnation ?? 0) > 4, 'refuted above the remembered incarnation')
      assert.equal(c.memberEvents({ state: 'dead' }).filter(e => e.event.id !== 'n01').length, 0)
    }
  })

  it('a member restarted before anyone noticed jumps above the incarnation its peers remember', () => {
    const c = lan5(5)
    c.net.runFor(2_000)
    bumpIncarnation(c, 'n03', 'n00', 2)
    c.net.kill('n03')
    c.net.runFor(100)
    c.net.restart('n03')
    c.net.runFor(5_000)
    assert.ok((c.detector('n03')?.self().incarnation ?? 0) > 3)
    assert.ok(c.allAlive())
    assert.equal(c.memberEvents({ state: 'dead' }).length, 0)
  })
})
