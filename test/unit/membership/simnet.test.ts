import assert from 'node:assert/strict'
import { SimNet } from '../../helpers/simnet.ts'
import type { SimNodeContext, SimNodeHandler } from '../../helpers/simnet.ts'

interface Got { at: number, local: number, from: string, msg: string }

/** A node that records what it receives and, if asked, sends `msg` to `to` every `everyMs` of local time. */
class Recorder implements SimNodeHandler<string> {
  readonly got: Got[] = []
  readonly ticks: number[] = []
  readonly lost: string[] = []
  private next: number

  constructor (private readonly ctx: SimNodeContext<string>, private readonly net: SimNet<string>, private readonly plan?: { to: string, everyMs: number, count: number }) {
    this.next = plan !== undefined ? ctx.now() : Infinity
  }

  receive (now: number, from: string, msg: string): void { this.got.push({ at: this.net.now, local: now, from, msg }) }

  tick (now: number): void {
    this.ticks.push(now)
    if (this.plan === undefined || now < this.next) return
    this.ctx.send(this.plan.to, `${this.ctx.id}#${this.ctx.life}:${this.plan.count}`)
    this.plan.count--
    this.next = this.plan.count > 0 ? this.next + this.plan.everyMs : Infinity
  }

  nextWake (): number { return this.next }
  peerLost (_now: number, peer: string): void { this.lost.push(peer) }
}

function pair (seed: number, opts: { count?: number, everyMs?: number, drift?: number, link?: { drop?: number, delayMs?: number, jitterMs?: number, duplicate?: number } } = {}): { net: SimNet<string>, a: () => Recorder, b: () => Recorder } {
  const net = new SimNet<string>({ seed, ...(opts.link !== undefined ? { link: opts.link } : {}), drift: opts.drift ?? 0 })
  net.addNode('a', ctx => new Recorder(ctx, net, { to: 'b', everyMs: opts.everyMs ?? 10, count: opts.count ?? 100 }))
  net.addNode('b', ctx => new Recorder(ctx, net))
  return { net, a: () => net.handler('a') as Recorder, b: () => net.handler('b') as Recorder }
}

describe('SimNet', () => {
  it('replays exactly for a seed and differs across seeds', () => {
    const run = (seed: number): string => {
      const { net, b } = pair(seed, { link: { drop: 0.2, delayMs: 5, jitterMs: 20, duplicate: 0.1 } })
      net.runUntil(5_000)
      return JSON.stringify(b().got)
    }
    assert.equal(run(7), run(7))
    assert.notEqual(run(7), run(8))
  })

  it('applies loss, delay with jitter, and duplication per link', () => {
    const { net, b } = pair(1, { count: 10_000, everyMs: 1, link: { drop: 0.1, delayMs: 50, jitterMs: 30, duplicate: 0.05 } })
    net.runUntil(20_000)
    const got = b().got
    const lossRate = net.stats.dropped / net.stats.sent
    assert.ok(lossRate > 0.08 && lossRate < 0.12, `loss ${lossRate}`)
    const dupRate = net.stats.duplicated / (net.stats.sent - net.stats.dropped)
    assert.ok(dupRate > 0.04 && dupRate < 0.06, `dup ${dupRate}`)
    assert.equal(got.length, net.stats.sent - net.stats.dropped + net.stats.duplicated)
    // every message is delayed 50..80 ms after it was sent (sends happen at whole ms: the count tells when)
    const clockA = net.clock('a')
    for (const g of got) {
      const n = Number(g.msg.split(':')[1])
      const sentAt = net.simTimeOf('a', clockA.offset + (10_000 - n))
      const delay = g.at - sentAt
      assert.ok(delay >= 50 - 1e-6 && delay < 80 + 1e-6, `delay ${delay}`)
    }
    // jitter reorders
    const order = got.map(g => Number(g.msg.split(':')[1]))
    assert.ok(order.some((v, i) => i > 0 && v > (order[i - 1] as number)), 'expected some reordering')
  })

  it('partitions both ways or one way, and heals', () => {
    const net = new SimNet<string>({ seed: 3 })
    net.addNode('a', ctx => new Recorder(ctx, net, { to: 'b', everyMs: 10, count: 1000 }))
    net.addNode('b', ctx => new Recorder(ctx, net, { to: 'a', everyMs: 10, count: 1000 }))
    const a = (): Recorder => net.handler('a') as Recorder
    const b = (): Recorder => net.handler('b') as Recorder
    net.runUntil(100)
    net.partition(['a'], ['b'], { oneWay: true }) // a -> b cut only
    const [a0, b0] = [a().got.length, b().got.length]
    net.runUntil(1_000)
    assert.ok(b().got.length - b0 <= 1, 'a -> b must be cut (one in flight at most)')
    assert.ok(a().got.length - a0 > 80, 'b -> a must still flow')
    net.heal()
    net.partition(['b'], ['a'])
    const [a1, b1] = [a().got.length, b().got.length]
    net.runUntil(2_000)
    assert.ok(a().got.length - a1 <= 1 && b().got.length - b1 <= 1, 'two-way cut')
    net.heal()
    const b2 = b().got.length
    net.runUntil(3_000)
    assert.ok(b().got.length - b2 > 90, 'healed')
    assert.ok(net.stats.blocked > 100)
  })

  it('holds messages for a paused node and delivers them after its timers on resume', () => {
    const net = new SimNet<string>({ seed: 4, link: { delayMs: 1, jitterMs: 0 } })
    const calls: string[] = []
    let wakeAt = 0
    net.addNode('a', ctx => new Recorder(ctx, net, { to: 'b', everyMs: 10, count: 50 }))
    net.addNode('b', ctx => {
      wakeAt = ctx.now() + 100
      return {
        receive: (now, _from, msg) => { calls.push(`recv ${msg} @${Math.round(now - wakeAt)}`) },
        tick: now => { calls.push(`tick @${Math.round(now - wakeAt)}`); wakeAt = Infinity },
        nextWake: () => wakeAt
      }
    })
    net.runUntil(50)
    const before = calls.length
    net.pause('b')
    net.runUntil(400)
    assert.equal(calls.length, before, 'a paused node runs nothing')
    net.resume('b')
    assert.equal(calls[before], 'tick @300', 'timers first, seeing the time jump')
    assert.ok(calls.length - before > 30, 'held messages delivered on resume')
    net.pause('b', { drop: true })
    net.runUntil(450)
    net.resume('b')
    net.runUntil(600)
    // message N was sent at local (50 - N) × 10 ms: those sent at 400..440 arrived while paused
    const received = calls.filter(c => c.startsWith('recv')).map(c => Number(c.split(':')[1]?.split(' ')[0]))
    for (const n of [10, 9, 8, 7, 6]) assert.ok(!received.includes(n), `message ${n} should have been lost`)
    for (const n of [11, 5, 1]) assert.ok(received.includes(n), `message ${n} should have arrived`)
  })

  it('kills (in-flight messages lost, peers optionally told) and restarts with fresh state', () => {
    const { net, a, b } = pair(5, { count: 1000, link: { delayMs: 20, jitterMs: 0 } })
    net.runUntil(100)
    const oldB = b()
    const offsetBefore = net.clock('b').offset
    net.kill('b', { notifyPeers: true })
    assert.equal(net.isUp('b'), false)
    assert.equal(net.handler('b'), undefined)
    net.runUntil(200)
    assert.deepEqual(a().lost, ['b'])
    net.restart('b')
    assert.equal(net.life('b'), 1)
    assert.notEqual(b(), oldB)
    assert.notEqual(net.clock('b').offset, offsetBefore, 'a new process has a new clock origin')
    net.runUntil(300)
    // nothing sent before the restart reaches the new life
    assert.ok(b().got.length > 0)
    assert.ok(b().got.every(g => g.at >= 200 + 20 - 1e-9))
    assert.ok(net.stats.undeliverable > 0)
  })

  it('gives each node a drifting local clock and wakes it on its own time', () => {
    const net = new SimNet<string>({ seed: 6, drift: 0.01 })
    const wakes: Array<{ asked: number, got: number }> = []
    for (const id of ['x', 'y', 'z']) {
      net.addNode(id, ctx => {
        let next = ctx.now() + 7
        return {
          receive: () => {},
          tick: now => { wakes.push({ asked: next, got: now }); next += 7 },
          nextWake: () => next
        }
      })
    }
    net.runUntil(10_000)
    const rates = ['x', 'y', 'z'].map(id => net.clock(id).rate)
    for (const r of rates) assert.ok(r >= 0.99 && r <= 1.01)
    assert.ok(new Set(rates).size === 3)
    for (const w of wakes) assert.ok(w.got >= w.asked && w.got - w.asked < 1e-6, `woken at ${w.got} for ${w.asked}`)
    const x = net.clock('x')
    assert.equal(net.localNow('x'), x.offset + x.rate * 10_000)
  })

  it('is bounded: a node that never makes progress is reported, and the event budget holds', () => {
    const net = new SimNet<string>({ seed: 7 })
    net.addNode('spin', ctx => ({ receive: () => {}, tick: () => {}, nextWake: () => ctx.now() }))
    assert.throws(() => net.runUntil(10), /keeps asking to wake/)
    const small = new SimNet<string>({ seed: 7, maxEvents: 100 })
    small.addNode('a', ctx => new Recorder(ctx, small, { to: 'a', everyMs: 1, count: 10_000 }))
    assert.throws(() => small.runUntil(10_000), /budget/)
  })
})
