import assert from 'node:assert/strict'
import { WatchdogCore, type CoreOutput } from '../../../daemon/watchdog/core.ts'
import type { FenceAction } from '../../../daemon/hypervisor/fence.ts'

const ACTION: FenceAction = { kind: 'command', off: { kind: 'shell', command: './stop.sh web01' }, timeoutMs: 1000 }
const arm = (vm: string, seq: number, deadline: number) => ({ type: 'request' as const, req: { type: 'arm' as const, seq, vm, deadlineMonoMs: deadline, action: ACTION } })
const fences = (o: CoreOutput): string[] => o.events.flatMap(e => e.type === 'fence' ? [`${e.vm}#${e.attempt}`] : [])
const exits = (o: CoreOutput): boolean => o.events.some(e => e.type === 'exit')

describe('watchdog/core (deadline logic)', () => {
  it('fences exactly at the deadline, not a millisecond before', () => {
    const c = new WatchdogCore()
    const o = c.step(1000, arm('web01', 1, 1300))
    assert.deepEqual(o.send, [{ type: 'armed', seq: 1, vm: 'web01', deadlineMonoMs: 1300, monoMs: 1000 }])
    assert.equal(c.nextDeadline(), 1300)
    assert.deepEqual(fences(c.tick(1299.999)), [])
    const f = c.tick(1300)
    assert.deepEqual(f.events, [{ type: 'fence', vm: 'web01', action: ACTION, attempt: 1, dueAt: 1300 }])
    assert.equal(c.nextDeadline(), undefined, 'no timer while the fence runs')
    const done = c.step(1310, { type: 'fence-done', vm: 'web01', attempt: 1, ok: true, outcome: 'off' })
    assert.deepEqual(done.send, [{ type: 'fenced', vm: 'web01', seq: 1, monoMs: 1310, outcome: 'off', attempt: 1, lateMs: 10 }])
    assert.deepEqual(c.armed(), [])
  })

  it('a newer arm replaces the deadline; disarm cancels it', () => {
    const c = new WatchdogCore()
    c.step(0, arm('web01', 1, 300))
    for (let t = 100; t <= 1000; t += 100) {
      assert.deepEqual(fences(c.tick(t - 1)), [])
      c.step(t, arm('web01', t, t + 300))
    }
    assert.deepEqual(fences(c.tick(1299)), [])
    assert.deepEqual(fences(c.tick(1300)), ['web01#1'])
    const d = new WatchdogCore()
    d.step(0, arm('db01', 1, 300))
    assert.deepEqual(d.step(100, { type: 'request', req: { type: 'disarm', seq: 2, vm: 'db01' } }).send, [{ type: 'disarmed', seq: 2, vm: 'db01' }])
    assert.deepEqual(fences(d.tick(10_000)), [])
  })

  it('an arm whose deadline has already passed fences at once', () => {
    const c = new WatchdogCore()
    assert.deepEqual(fences(c.step(500, arm('web01', 1, 499))), ['web01#1'])
  })

  it('VMs are independent', () => {
    const c = new WatchdogCore()
    c.step(0, arm('a', 1, 100)); c.step(0, arm('b', 2, 200))
    assert.equal(c.nextDeadline(), 100)
    assert.deepEqual(fences(c.tick(150)), ['a#1'])
    assert.equal(c.nextDeadline(), 200)
    assert.deepEqual(fences(c.tick(200)), ['b#1'])
  })

  it('a failed fence is retried every retryMs and given up after maxAttempts, each reported', () => {
    const c = new WatchdogCore({ retryMs: 50, maxAttempts: 3 })
    c.step(0, arm('web01', 7, 100))
    let t = 100
    for (let attempt = 1; attempt <= 3; attempt++) {
      assert.deepEqual(fences(c.tick(t)), [`web01#${attempt}`])
      const o = c.step(t + 5, { type: 'fence-done', vm: 'web01', attempt, ok: false, code: 'ERR_HYPERVISOR_TIMEOUT', message: 'x' })
      assert.deepEqual(o.send, [{ type: 'fence-failed', vm: 'web01', seq: 7, monoMs: t + 5, attempt, final: attempt === 3, code: 'ERR_HYPERVISOR_TIMEOUT', message: 'x' }])
      if (attempt < 3) {
        assert.equal(c.nextDeadline(), t + 55)
        assert.deepEqual(fences(c.tick(t + 54)), [])
      }
      t += 55
    }
    assert.deepEqual(c.armed(), [])
  })

  it('an arm during a fence takes over afterwards; a stale fence-done is ignored', () => {
    const c = new WatchdogCore()
    c.step(0, arm('web01', 1, 100))
    assert.deepEqual(fences(c.tick(100)), ['web01#1'])
    c.step(105, arm('web01', 2, 400))
    assert.deepEqual(c.step(106, { type: 'fence-done', vm: 'web01', attempt: 9, ok: true, outcome: 'off' }).send, [])
    const done = c.step(110, { type: 'fence-done', vm: 'web01', attempt: 1, ok: true, outcome: 'already-off' })
    assert.equal(done.send[0]?.type, 'fenced')
    assert.deepEqual(c.armed(), [{ vm: 'web01', deadline: 400, fencing: false }])
    assert.deepEqual(fences(c.tick(399)), [])
    assert.deepEqual(fences(c.tick(400)), ['web01#1'])
  })

  it('a disarm during a fence lets it finish and then forgets the VM', () => {
    const c = new WatchdogCore()
    c.step(0, arm('web01', 1, 100))
    c.tick(100)
    c.step(101, { type: 'request', req: { type: 'disarm', seq: 2, vm: 'web01' } })
    c.step(102, { type: 'fence-done', vm: 'web01', attempt: 1, ok: true, outcome: 'off' })
    assert.deepEqual(c.armed(), [])
  })

  it('when the daemon is gone the deadlines stand: no early fence, fence on time, then exit', () => {
    const c = new WatchdogCore()
    c.step(0, arm('a', 1, 3500)); c.step(0, arm('b', 2, 5000))
    const gone = c.step(100, { type: 'parent-gone' })
    assert.deepEqual(fences(gone), [])
    assert.equal(exits(gone), false)
    assert.equal(c.isOrphaned, true)
    assert.deepEqual(fences(c.tick(3499)), [])
    assert.deepEqual(fences(c.tick(3500)), ['a#1'])
    assert.equal(exits(c.step(3510, { type: 'fence-done', vm: 'a', attempt: 1, ok: true, outcome: 'off' })), false)
    assert.deepEqual(fences(c.tick(5000)), ['b#1'])
    const last = c.step(5010, { type: 'fence-done', vm: 'b', attempt: 1, ok: true, outcome: 'off' })
    assert.equal(last.send[0]?.type, 'fenced')
    assert.equal(exits(last), true)
    assert.equal(exits(c.tick(6000)), false, 'exit is asked once')
  })

  it('bye with nothing armed exits at once; ping answers with the watchdog clock', () => {
    const c = new WatchdogCore()
    assert.deepEqual(c.step(42.5, { type: 'request', req: { type: 'ping', id: 3 } }).send, [{ type: 'pong', id: 3, monoMs: 42.5 }])
    assert.equal(exits(c.step(50, { type: 'request', req: { type: 'bye' } })), true)
  })
})
