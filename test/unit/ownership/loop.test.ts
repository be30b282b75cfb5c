/**
 * The ownership event loop (daemon/ownership/loop.ts) on virtual time: real OwnershipMachines
 * and loops for a, b (hosts) and w (witness, or none), messages delivered through ManualClock
 * timers, a fake hypervisor whose start takes as long as the test says, and a fake watchdog
 * that turns the VM off when a deadline passes without a newer one.
 *
 * The regression: a start slower than the fence margin (6 s, 30 s against fenceMs 3.5 s) used
 * to hold the lease renewals behind it in the event queue; the watchdog fenced the VM it was
 * bringing up, every time, forever. And: --force on two hosts without a witness never started
 * the VM ("start refused: no live watchdog deadline").
 */
import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { SeededRandom } from '../../../common/random.ts'
import { silentLogger } from '../../../daemon/log.ts'
import { OwnershipMachine } from '../../../daemon/ownership/machine.ts'
import { OwnershipLoop } from '../../../daemon/ownership/loop.ts'
import type { FencingWatchdog, OwnershipHost } from '../../../daemon/ownership/service.ts'
import type { HypervisorDriver, OpOptions, VmStartFiles } from '../../../daemon/hypervisor/driver.ts'
import { type MemberState, type OwnershipInput, type VmSpec, type VoterSpec } from '../../../daemon/ownership/types.ts'
import { AbortedError } from '../../../common/errors.ts'
import { PROFILES } from '../../../config/profiles.ts'

const T = PROFILES.lan.ownership
const VM = 'web'
const SPEC: VmSpec = { name: VM, home: 'a', replicateTo: ['b'] }

/** A hypervisor: a start takes `startMs` of virtual time (abortable), a turn-off is instant. */
class FakeHypervisor implements HypervisorDriver {
  readonly kind = 'command' as const
  running = false
  epoch = -1
  startMs: number
  readonly calls: Array<{ at: number, op: string, epoch?: number, outcome?: string }> = []
  constructor (private readonly clock: ManualClock, startMs: number) { this.startMs = startMs }
  async list (): Promise<[]> { return [] }
  async start (_vm: string, _files: VmStartFiles, epoch: number, opts?: OpOptions): Promise<void> {
    const call: { at: number, op: string, epoch: number, outcome?: string } = { at: this.clock.now(), op: 'start', epoch }
    this.calls.push(call)
    try {
      await this.clock.sleep(this.startMs, opts?.signal)
    } catch (err) {
      call.outcome = 'aborted'
      throw new AbortedError('start aborted', { cause: err })
    }
    this.running = true
    this.epoch = epoch
    call.outcome = `up at ${this.clock.now()}`
  }

  async turnOff (): Promise<void> { this.calls.push({ at: this.clock.now(), op: 'turnOff' }); this.running = false }
  async isRunning (): Promise<boolean> { return this.running }
  async fenceAction (): Promise<never> { throw new Error('unused') }
}

/** A watchdog process: turns the VM off at the deadline unless re-armed or disarmed. */
class FakeWatchdog implements FencingWatchdog {
  readonly arms: Array<{ at: number, deadline: number }> = []
  readonly fences: number[] = []
  private timer?: ReturnType<ManualClock['setTimeout']>
  private readonly listeners = new Set<(r: { vm: string, at: number, ok: boolean }) => void>()
  constructor (private readonly clock: ManualClock, private readonly hv: FakeHypervisor) {}
  async arm (vm: string, deadline: number): Promise<void> {
    this.arms.push({ at: this.clock.now(), deadline })
    this.clock.clearTimeout(this.timer)
    this.timer = this.clock.setTimeout(() => { this.fence(vm) }, deadline - this.clock.now())
  }

  /** Turns the VM off now and reports it (a deadline passed). */
  fence (vm: string): void {
    this.clock.clearTimeout(this.timer)
    this.hv.running = false
    this.fences.push(this.clock.now())
    for (const fn of this.listeners) fn({ vm, at: this.clock.now(), ok: true })
  }

  disarm (): void { this.clock.clearTimeout(this.timer) }
  onFence (fn: (r: { vm: string, at: number, ok: boolean }) => void): () => void { this.listeners.add(fn); return () => this.listeners.delete(fn) }
  inherited (): [] { return [] }
}

interface Node { id: string, loop: OwnershipLoop, hv?: FakeHypervisor, wd?: FakeWatchdog, finalized: number[], finalizeFailures: number }

class Bed {
  readonly clock = new ManualClock(1000)
  readonly nodes = new Map<string, Node>()
  /** "from>to" links that drop messages; nodes that are down. */
  readonly cut = new Set<string>()
  readonly down = new Set<string>()

  constructor (voters: VoterSpec[], startMs: number) {
    for (const v of voters) {
      const machine = new OwnershipMachine({ self: v.id, voters, vms: v.id === 'a' ? [SPEC] : [], random: new SeededRandom(v.id.charCodeAt(0)), now: this.clock.now() })
      const hv = v.role === 'host' ? new FakeHypervisor(this.clock, startMs) : undefined
      const wd = hv !== undefined ? new FakeWatchdog(this.clock, hv) : undefined
      const node: Node = { id: v.id, loop: undefined as unknown as OwnershipLoop, finalized: [], finalizeFailures: 0, ...(hv !== undefined ? { hv } : {}), ...(wd !== undefined ? { wd } : {}) }
      const host: OwnershipHost = {
        filesForStart: async () => ({ disks: [], files: [], dir: '/vm' }),
        finalize: async () => {
          await this.clock.sleep(500)
          if (node.finalizeFailures > 0) { node.finalizeFailures--; throw new Error('replica busy') }
          node.finalized.push(this.clock.now())
        },
        shipFinal: async () => ({ epoch: 0, generation: 1 }),
        demoted: () => {}
      }
      node.loop = new OwnershipLoop({
        clock: this.clock,
        log: silentLogger(),
        machine,
        persist: async () => {},
        send: (to, msg) => {
          if (this.down.has(v.id) || this.cut.has(`${v.id}>${to}`)) return
          this.clock.setTimeout(() => {
            if (!this.down.has(to) && !this.cut.has(`${v.id}>${to}`)) this.nodes.get(to)?.loop.input({ type: 'message', from: v.id, msg })
          }, 2)
        },
        ...(hv !== undefined ? { driver: hv } : {}),
        ...(wd !== undefined ? { watchdog: wd } : {}),
        host
      }, { monitorMs: 2000 })
      this.nodes.set(v.id, node)
    }
  }

  node (id: string): Node { const n = this.nodes.get(id); assert.ok(n !== undefined); return n }
  input (id: string, i: OwnershipInput): void { this.node(id).loop.input(i) }
  view (id: string, of: string, state: MemberState): void { this.input(id, { type: 'member', id: of, state }) }

  async start (): Promise<void> {
    for (const n of this.nodes.values()) {
      for (const o of this.nodes.keys()) if (o !== n.id) n.loop.input({ type: 'member', id: o, state: 'alive' })
      await n.loop.start(n.id === 'a' ? [VM] : [])
    }
    this.input('b', { type: 'vm', spec: SPEC })
    this.input('b', { type: 'replicaApplied', vm: VM, generation: { epoch: 0, generation: 1 } })
  }

  async run (ms: number): Promise<void> { await this.clock.advanceAsync(ms) }

  isolate (id: string): void { for (const o of this.nodes.keys()) if (o !== id) { this.cut.add(`${id}>${o}`); this.cut.add(`${o}>${id}`) } }
  heal (): void { this.cut.clear() }
  async kill (id: string): Promise<void> {
    this.down.add(id)
    const n = this.node(id)
    if (n.hv !== undefined) n.hv.running = false
    n.wd?.disarm()
    await n.loop.stop()
  }

  async stop (): Promise<void> { for (const n of this.nodes.values()) await n.loop.stop() }
}

const A_B_W: VoterSpec[] = [{ id: 'a', role: 'host' }, { id: 'b', role: 'host' }, { id: 'w', role: 'witness' }]
const A_B: VoterSpec[] = [{ id: 'a', role: 'host' }, { id: 'b', role: 'host' }]

/** The largest gap between consecutive watchdog arms in [from, to]: renewals kept flowing when it is about renewMs. */
function maxArmGap (wd: FakeWatchdog, from: number, to: number): number {
  const at = wd.arms.map(a => a.at).filter(t => t >= from && t <= to)
  let gap = 0
  for (let i = 1; i < at.length; i++) gap = Math.max(gap, (at[i] as number) - (at[i - 1] as number))
  return Math.max(gap, (at[0] ?? Infinity) - from, to - (at.at(-1) ?? -Infinity))
}

describe('OwnershipLoop: hypervisor calls never hold back lease renewals (virtual time)', function () {
  let bed: Bed | undefined
  afterEach(async () => { await bed?.stop(); bed = undefined })

  for (const startMs of [6000, 30_000]) {
    it(`a ${startMs / 1000} s start completes once: renewals and watchdog re-arms continue while it runs, nothing is fenced`, async () => {
      const b = bed = new Bed(A_B_W, startMs)
      await b.start()
      await b.run(startMs + 20_000)
      const a = b.node('a')
      const hv = a.hv as FakeHypervisor
      const wd = a.wd as FakeWatchdog
      const starts = hv.calls.filter(c => c.op === 'start')
      assert.equal(starts.length, 1, JSON.stringify(hv.calls))
      assert.deepEqual(wd.fences, [])
      assert.deepEqual(hv.calls.filter(c => c.op === 'turnOff'), [])
      assert.equal(hv.running, true)
      assert.equal(a.loop.isRunningHere(VM), true)
      const st = a.loop.machine.status().find(s => s.vm === VM)
      assert.equal(st?.run, 'running')
      assert.ok((st?.fenceUntil ?? 0) > b.clock.now())
      // while the hypervisor worked, the watchdog deadline moved on every renewal period
      const begun = starts[0]?.at as number
      assert.ok(maxArmGap(wd, begun, begun + startMs) <= T.renewMs + 50, `largest gap between re-arms during the start: ${maxArmGap(wd, begun, begun + startMs)} ms`)
      for (const arm of wd.arms) assert.ok(arm.deadline > arm.at && arm.deadline <= arm.at + T.fenceMs)
      assert.equal(a.loop.stats.starts, 1)
    })
  }

  it('a 30 s start that outlasts its lease is abandoned: aborted, turned off, reported stopped — and started again once the lease is back', async () => {
    const b = bed = new Bed(A_B_W, 30_000)
    await b.start()
    const a = b.node('a')
    const hv = a.hv as FakeHypervisor
    await b.run(3000)
    const first = hv.calls.find(c => c.op === 'start')
    assert.ok(first !== undefined && first.outcome === undefined, 'the start is under way')
    b.isolate('a')
    await b.run(10_000)
    assert.equal(first.outcome, 'aborted')
    assert.equal(hv.running, false)
    assert.ok(hv.calls.some(c => c.op === 'turnOff' && c.at >= first.at), JSON.stringify(hv.calls))
    assert.equal(a.loop.isRunningHere(VM), false)
    const st = a.loop.machine.status().find(s => s.vm === VM)
    assert.equal(st?.run, 'off')
    assert.equal(a.loop.stats.starts, 0)
    // the abandoned start never reported `started`: the machine did not count on that VM
    assert.ok(!a.loop.timeline.some(e => e.event === 'started here'))
    b.heal()
    await b.run(60_000)
    const starts = hv.calls.filter(c => c.op === 'start')
    assert.ok(starts.length >= 2)
    assert.equal(hv.running, true)
    assert.equal(a.loop.machine.status().find(s => s.vm === VM)?.run, 'running')
  })

  it('a fence during a start abandons it: the VM is turned off after the start settles, not brought up behind the fence', async () => {
    const b = bed = new Bed(A_B_W, 30_000)
    await b.start()
    const a = b.node('a')
    const hv = a.hv as FakeHypervisor
    const wd = a.wd as FakeWatchdog
    await b.run(3000)
    // the watchdog fires on its own (as if the deadline had been missed)
    wd.fence(VM)
    await b.run(100)
    assert.equal(wd.fences.length, 1)
    const start = hv.calls.find(c => c.op === 'start')
    assert.equal(start?.outcome, 'aborted')
    assert.ok(hv.calls.some(c => c.op === 'turnOff'))
    assert.equal(hv.running, false)
    assert.equal(a.loop.machine.status().find(s => s.vm === VM)?.run, 'off')
  })
})

describe('OwnershipLoop: --force on two hosts without a witness (virtual time)', function () {
  let bed: Bed | undefined
  afterEach(async () => { await bed?.stop(); bed = undefined })

  it('the forced owner starts the VM under a self-renewed watchdog deadline and keeps it running while the other host stays away', async () => {
    const b = bed = new Bed(A_B, 2000)
    await b.start()
    await b.run(10_000)
    assert.equal(b.node('a').hv?.running, true)
    await b.kill('a')
    b.view('b', 'a', 'dead')
    const forcedAt = b.clock.now()
    await b.node('b').loop.request(VM, { type: 'operatorFailover', vm: VM, force: true })
    const hvB = b.node('b').hv as FakeHypervisor
    const wdB = b.node('b').wd as FakeWatchdog
    let upAt: number | undefined
    for (let i = 0; i < 200 && upAt === undefined; i++) { await b.run(50); if (hvB.running) upAt = b.clock.now() }
    assert.ok(upAt !== undefined, JSON.stringify(b.node('b').loop.timeline))
    // promise to a (≤ leaseMs·(1+d)) + finalize (0.5 s) + coalesce + the 2 s start
    assert.ok(upAt - forcedAt <= 10_000, `running ${upAt - forcedAt} ms after --force`)
    assert.equal(hvB.epoch, 1)
    // the other host stays away for a minute: the VM keeps running, its deadline renewed by b alone
    await b.run(60_000)
    assert.equal(hvB.running, true)
    assert.deepEqual(wdB.fences, [])
    assert.ok(maxArmGap(wdB, upAt, b.clock.now()) <= T.renewMs + 50)
    assert.equal(b.node('b').loop.machine.status().find(s => s.vm === VM)?.forced, true)
    assert.equal(hvB.calls.filter(c => c.op === 'start').length, 1)
    // the replica was finalized (once) before the start began
    const finalized = b.node('b').finalized
    assert.equal(finalized.length, 1)
    assert.ok((finalized[0] as number) <= (hvB.calls[0]?.at as number))
  })

  it('a finalize that failed is retried before the next start, never skipped', async () => {
    const b = bed = new Bed(A_B, 2000)
    await b.start()
    await b.run(10_000)
    await b.kill('a')
    b.view('b', 'a', 'dead')
    b.node('b').finalizeFailures = 1
    await b.node('b').loop.request(VM, { type: 'operatorFailover', vm: VM, force: true })
    await b.run(30_000)
    const hvB = b.node('b').hv as FakeHypervisor
    const starts = hvB.calls.filter(c => c.op === 'start')
    assert.equal(starts.length, 1, JSON.stringify(hvB.calls))
    assert.equal(hvB.running, true)
    const finalized = b.node('b').finalized
    assert.equal(finalized.length, 1)
    assert.ok((finalized[0] as number) <= (starts[0]?.at as number))
  })
})
