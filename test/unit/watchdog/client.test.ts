import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { Watchdog, type FenceReport, type WatchdogInit } from '../../../daemon/watchdog/client.ts'
import type { FenceAction } from '../../../daemon/hypervisor/fence.ts'
import { FakeWatchdogProcess, type FakeOptions } from './fake-process.ts'
import type { InheritedArm } from '../../../daemon/watchdog/messages.ts'

const ACTION: FenceAction = { kind: 'command', off: { kind: 'shell', command: './stop.sh web01' }, timeoutMs: 1000 }

function setup (fake: Partial<FakeOptions> = {}, init: WatchdogInit = {}, helloFor?: (n: number) => number, inheritedFor?: (n: number) => InheritedArm[]) {
  const clock = new ManualClock(10_000)
  const procs: FakeWatchdogProcess[] = []
  const local: Array<{ at: number, action: FenceAction }> = []
  const reports: FenceReport[] = []
  const wd = new Watchdog({
    clock,
    fenceAction: async (vm) => ({ ...ACTION, off: { kind: 'shell', command: `./stop.sh ${vm}` } }),
    spawn: (o) => {
      const inherited = inheritedFor?.(procs.length)
      const p = new FakeWatchdogProcess(clock, o, { offset: 123_456.5, upMs: 2, downMs: 3, helloMs: helloFor?.(procs.length) ?? 50, fenceMs: 20, ...fake, ...(inherited !== undefined ? { inherited } : {}) })
      procs.push(p)
      return p
    },
    fenceLocally: async (action) => { local.push({ at: clock.now(), action }); return 'off' }
  }, { pingIntervalMs: 1000, ackTimeoutMs: 500, restartMinMs: 100, restartMaxMs: 1000, startTimeoutMs: 2000, ...init })
  wd.onFence(r => reports.push(r))
  const run = async (p: Promise<unknown>): Promise<void> => {
    let done = false
    let failure: unknown
    p.then(() => { done = true }, (e) => { done = true; failure = e })
    for (let i = 0; i < 10_000 && !done; i++) await clock.advanceAsync(1)
    assert.ok(done, 'operation did not finish in virtual time')
    if (failure !== undefined) throw failure
  }
  return { clock, procs, local, reports, wd, run }
}

describe('watchdog/client (fake process, virtual time)', () => {
  it('handshakes, translates deadlines conservatively, and the watchdog fences at (not after) the deadline', async () => {
    const { clock, procs, reports, wd, run } = setup()
    await run(wd.start())
    const st = wd.status()
    assert.equal(st.state, 'up')
    assert.ok((st.offsetMs as number) <= 123_456.5 && (st.offsetMs as number) >= 123_456.5 - 5, `offset ${st.offsetMs}`)
    const deadline = clock.now() + 300
    await assert.rejects(wd.arm('web01', Number.NaN), { name: 'WatchdogDeadlineError', code: 'ERR_WATCHDOG_DEADLINE' })
    await run(wd.arm('web01', deadline))
    const p = procs[0] as FakeWatchdogProcess
    const armReq = p.received.find(r => r.type === 'arm')
    assert.ok(armReq !== undefined && armReq.type === 'arm')
    assert.ok(armReq.deadlineMonoMs <= deadline + 123_456.5, 'never later than the daemon deadline')
    assert.equal(armReq.action.kind === 'command' && armReq.action.off.kind === 'shell' ? armReq.action.off.command : '', './stop.sh web01')
    await clock.advanceAsync(400)
    assert.equal(p.fences.length, 1)
    const f = p.fences[0] as { at: number }
    assert.ok(f.at <= deadline && f.at >= deadline - 5, `fenced at ${f.at - deadline} ms from the deadline`)
    assert.equal(reports.length, 1)
    assert.deepEqual({ ...reports[0], at: 0 }, { vm: 'web01', at: 0, ok: true, by: 'watchdog', outcome: 'off', attempt: 1, final: true, lateMs: (reports[0] as FenceReport).lateMs })
    assert.deepEqual(wd.status().armed, [])
    await run(wd.stop())
  })

  it('re-arming keeps the VM alive; when re-arms stop it is fenced at the last deadline; disarm cancels', async () => {
    const { clock, procs, wd, run } = setup()
    await run(wd.start())
    let last = 0
    for (let i = 0; i < 10; i++) {
      last = clock.now() + 3500
      await run(wd.arm('web01', last))
      await clock.advanceAsync(1000 - 10)
    }
    const p = procs[0] as FakeWatchdogProcess
    assert.equal(p.fences.length, 0)
    await clock.advanceAsync(3500)
    assert.equal(p.fences.length, 1)
    assert.ok((p.fences[0]?.at as number) <= last)
    await run(wd.arm('db01', clock.now() + 500))
    await run(wd.disarm('db01'))
    await clock.advanceAsync(2000)
    assert.equal(p.fences.length, 1)
    await run(wd.stop())
  })

  it('a crashed watchdog is restarted and re-armed with the original deadline', async () => {
    const { clock, procs, local, wd, run } = setup()
    await run(wd.start())
    const deadline = clock.now() + 3500
    await run(wd.arm('web01', deadline))
    await clock.advanceAsync(1000)
    ;(procs[0] as FakeWatchdogProcess).die(null, 'SIGSEGV')
    await clock.advanceAsync(500)
    assert.equal(procs.length, 2)
    assert.equal(wd.status().state, 'up')
    assert.equal(wd.status().restarts, 1)
    const rearm = (procs[1] as FakeWatchdogProcess).received.find(r => r.type === 'arm')
    assert.ok(rearm?.type === 'arm' && Math.abs(rearm.deadlineMonoMs - (deadline + 123_456.5)) <= 5)
    await clock.advanceAsync(3000)
    assert.equal((procs[1] as FakeWatchdogProcess).fences.length, 1)
    assert.ok(((procs[1] as FakeWatchdogProcess).fences[0]?.at as number) <= deadline)
    assert.deepEqual(local, [], 'the new watchdog fenced, not the daemon')
    await run(wd.stop())
  })

  it('while the watchdog cannot be restarted the daemon enforces the deadline itself; arm() refuses', async () => {
    const { clock, procs, local, reports, wd, run } = setup({}, {}, n => n === 0 ? 50 : Infinity)
    await run(wd.start())
    const deadline = clock.now() + 1500
    await run(wd.arm('web01', deadline))
    ;(procs[0] as FakeWatchdogProcess).die(1, null)
    await clock.advanceAsync(10)
    assert.equal(wd.status().state === 'down' || wd.status().state === 'starting', true)
    await assert.rejects(wd.arm('db01', clock.now() + 100_000), { name: 'WatchdogUnavailableError', code: 'ERR_WATCHDOG_UNAVAILABLE' })
    await clock.advanceAsync(deadline - clock.now() - 1)
    assert.equal(local.length, 0)
    await clock.advanceAsync(1)
    assert.equal(local.length, 1)
    assert.equal(local[0]?.at, deadline)
    assert.deepEqual(reports.map(r => [r.vm, r.by, r.ok]), [['web01', 'daemon', true]])
    assert.ok(procs.length >= 2, 'it keeps trying to restart')
    await run(wd.stop()) // down: fences what is still armed (db01) at once
    assert.deepEqual(local.map(l => l.action.kind === 'command' && l.action.off.kind === 'shell' ? l.action.off.command : ''), ['./stop.sh web01', './stop.sh db01'])
  })

  it('a deadline that passed while the watchdog was down is fenced immediately', async () => {
    const { clock, procs, local, wd, run } = setup({}, { restartMinMs: 1000 })
    await run(wd.start())
    const deadline = clock.now() + 200
    await run(wd.arm('web01', deadline))
    ;(procs[0] as FakeWatchdogProcess).die(null, 'SIGKILL')
    await clock.advanceAsync(250)
    assert.equal(local.length, 1)
    assert.equal(local[0]?.at, deadline)
    await clock.advanceAsync(2000)
    assert.equal(wd.status().state, 'up')
    assert.equal((procs[1] as FakeWatchdogProcess).received.some(r => r.type === 'arm'), false, 'fenced VMs are not re-armed')
    await run(wd.stop())
  })

  it('a hung watchdog (no pong) is killed and replaced', async () => {
    const { clock, procs, wd, run } = setup()
    await run(wd.start())
    const deadline = clock.now() + 10_000
    await run(wd.arm('web01', deadline))
    ;(procs[0] as FakeWatchdogProcess).hung = true
    await clock.advanceAsync(2500)
    assert.equal((procs[0] as FakeWatchdogProcess).alive, false)
    assert.equal(procs.length, 2)
    assert.equal(wd.status().state, 'up')
    assert.ok((procs[1] as FakeWatchdogProcess).received.some(r => r.type === 'arm' && r.vm === 'web01'))
    await run(wd.stop())
  })

  it('a watchdog slow to answer past a fence deadline is not killed (that would take its fence down): the daemon fences too', async () => {
    const { clock, procs, local, wd, run } = setup({ fenceMs: 4000 })
    await run(wd.start())
    const deadline = clock.now() + 300
    await run(wd.arm('web01', deadline))
    // the deadline passes, the watchdog's fence runs (4 s) and it stops answering meanwhile
    await clock.advanceAsync(300)
    ;(procs[0] as FakeWatchdogProcess).hung = true
    await clock.advanceAsync(2500)
    assert.equal((procs[0] as FakeWatchdogProcess).alive, true, 'kept alive')
    assert.equal(procs.length, 1, 'not replaced')
    assert.equal(local.filter(l => l.action.kind === 'command' && l.action.off.kind === 'shell' && l.action.off.command === './stop.sh web01').length, 1, 'the daemon fenced web01 once, however many pings went unanswered')
    assert.ok((local[0]?.at ?? Infinity) >= deadline)
    // it answers again: pings resume, nothing is killed
    ;(procs[0] as FakeWatchdogProcess).hung = false
    await clock.advanceAsync(3000)
    assert.equal((procs[0] as FakeWatchdogProcess).alive, true)
    assert.equal(wd.status().state, 'up')
    await run(wd.stop())
  })

  it('stop() with armed VMs says bye and lets the process keep the deadlines; with none it waits for the exit', async () => {
    const { clock, procs, wd, run } = setup()
    await run(wd.start())
    const deadline = clock.now() + 800
    await run(wd.arm('web01', deadline))
    await run(wd.stop())
    const p = procs[0] as FakeWatchdogProcess
    assert.equal(p.released, true)
    assert.equal(p.alive, true)
    await clock.advanceAsync(1000)
    assert.ok(p.received.some(r => r.type === 'bye'))
    assert.equal(p.fences.length, 1)
    assert.ok((p.fences[0]?.at as number) <= deadline)
    await clock.advanceAsync(100)
    assert.equal(p.alive, false, 'exits after its last fence')

    const b = setup()
    await b.run(b.wd.start())
    await b.run(b.wd.stop())
    assert.equal((b.procs[0] as FakeWatchdogProcess).alive, false)
    assert.equal(b.wd.status().state, 'stopped')
  })

  it('failed fences are reported, the last one as final', async () => {
    const { clock, reports, wd, run } = setup({ fenceOk: () => false }, { maxAttempts: 2, retryMs: 100 })
    await run(wd.start())
    await run(wd.arm('web01', clock.now() + 100))
    await clock.advanceAsync(1000)
    assert.deepEqual(reports.map(r => [r.ok, r.attempt, r.final, r.error?.code]), [[false, 1, false, 'ERR_HYPERVISOR_COMMAND_FAILED'], [false, 2, true, 'ERR_HYPERVISOR_COMMAND_FAILED']])
    assert.deepEqual(wd.status().armed, [])
    await run(wd.stop())
  })

  it('a new daemon inherits what the previous watchdog held: listed, armed, fenced at that deadline unless re-armed', async () => {
    const base = new ManualClock(10_000).now()
    const inherited = [
      { vm: 'web01', seq: 41, deadlineMonoMs: base + 123_456.5 + 2000, action: ACTION },
      { vm: 'db01', seq: 42, deadlineMonoMs: base + 123_456.5 + 2000, action: ACTION }
    ]
    const { clock, procs, wd, run } = setup({ inherited })
    await run(wd.start())
    const got = wd.inherited()
    assert.deepEqual(got.map(i => i.vm), ['web01', 'db01'])
    for (const i of got) assert.ok(i.deadline >= base + 2000 && i.deadline <= base + 2000 + 5, `deadline ${i.deadline - base}`)
    assert.deepEqual(wd.status().armed.map(a => [a.vm, a.acked]), [['web01', true], ['db01', true]])
    await run(wd.arm('web01', clock.now() + 10_000)) // renewed by the new daemon
    await clock.advanceAsync(base + 2100 - clock.now())
    const p = procs[0] as FakeWatchdogProcess
    assert.deepEqual(p.fences.map(f => f.vm), ['db01'])
    assert.ok((p.fences[0]?.at as number) <= base + 2000)
    assert.deepEqual(wd.status().armed.map(a => a.vm), ['web01'])
    await run(wd.stop())
  })

  it('after its own restart the client disarms adopted deadlines it no longer holds', async () => {
    // the replacement process claims to have adopted ghost (which this client disarmed meanwhile)
    const ghost = [{ vm: 'ghost', seq: 1, deadlineMonoMs: 10_000 + 123_456.5 + 3000, action: ACTION }]
    const { clock, procs, wd, run } = setup({}, {}, undefined, n => n === 0 ? [] : ghost)
    await run(wd.start())
    await run(wd.arm('web01', clock.now() + 5000))
    ;(procs[0] as FakeWatchdogProcess).die(null, 'SIGKILL')
    await clock.advanceAsync(1000)
    const p2 = procs[1] as FakeWatchdogProcess
    assert.ok(p2.received.some(r => r.type === 'disarm' && r.vm === 'ghost'))
    assert.ok(p2.received.some(r => r.type === 'arm' && r.vm === 'web01'))
    assert.deepEqual(wd.inherited(), [])
    await clock.advanceAsync(5000)
    assert.deepEqual(p2.fences.map(f => f.vm), ['web01'])
    await run(wd.stop())
  })

  it('start() fails with WatchdogStartError when the process never says hello', async () => {
    const { wd, run, procs } = setup({ helloMs: Infinity })
    await assert.rejects(run(wd.start()), { name: 'WatchdogStartError', code: 'ERR_WATCHDOG_START' })
    assert.equal(wd.status().state, 'stopped')
    assert.equal((procs[0] as FakeWatchdogProcess).alive, false)
    await assert.rejects(wd.arm('x', 1), { name: 'WatchdogUnavailableError' })
  })
})
