import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { AlertEngine } from '../../../daemon/alerts/engine.ts'
import type { Condition } from '../../../daemon/alerts/types.ts'

const dead = (name: string): Condition => ({ key: `host-dead:${name}`, kind: 'host-dead', severity: 'critical', scope: 'mesh', subject: name, summary: `host ${name} is dead`, recoverySummary: `host ${name} is alive again` })
const rpo = (vm: string): Condition => ({ key: `rpo-breach:${vm}:b`, kind: 'rpo-breach', severity: 'warning', scope: 'local', vm, summary: `${vm} behind` })

describe('daemon/alerts/engine: incidents to notices, on virtual time', () => {
  it('one alert per incident however often the condition is seen, one recovery once it is gone for clearAfterMs', () => {
    const clock = new ManualClock(0)
    const e = new AlertEngine({ node: 'a', clearAfterMs: 10_000 })
    const out = []
    for (let i = 0; i < 50; i++) { out.push(...e.observe(clock.now(), clock.wallNow(), 'members', [dead('c')], true)); clock.advance(1000) }
    assert.deepEqual(out.map(n => [n.type, n.key]), [['alert', 'host-dead:c']])
    const opened = out[0]!.openedAtMs
    // gone for 9 s: nothing yet
    for (let i = 0; i < 10; i++) { assert.deepEqual(e.observe(clock.now(), clock.wallNow(), 'members', [], true), []); clock.advance(1000) }
    const rec = e.observe(clock.now(), clock.wallNow(), 'members', [], true)
    assert.equal(rec.length, 1)
    assert.equal(rec[0]!.type, 'recovery')
    assert.equal(rec[0]!.summary, 'host c is alive again')
    assert.equal(rec[0]!.incident, out[0]!.incident, 'the recovery names the incident of its alert')
    assert.equal(rec[0]!.durationMs, clock.wallNow() - opened)
    // and nothing more
    for (let i = 0; i < 20; i++) { assert.deepEqual(e.observe(clock.now(), clock.wallNow(), 'members', [], true), []); clock.advance(1000) }
  })

  it('a condition that blinks out for less than clearAfterMs stays the same incident (no flapping)', () => {
    const clock = new ManualClock(0)
    const e = new AlertEngine({ node: 'a', clearAfterMs: 5000 })
    const notices = []
    for (let i = 0; i < 40; i++) {
      const holding = i % 4 === 3 ? [] : [rpo('vm1')] // gone 1 s out of 4
      notices.push(...e.observe(clock.now(), clock.wallNow(), 'replication', holding, true))
      clock.advance(1000)
    }
    assert.deepEqual(notices.map(n => n.type), ['alert'])
  })

  it('a source clears only its own incidents', () => {
    const e = new AlertEngine({ node: 'a', clearAfterMs: 0 })
    e.observe(0, 0, 'members', [dead('c')], true)
    assert.deepEqual(e.observe(1, 1, 'replication', [], true), [])
    assert.deepEqual(e.observe(2, 2, 'members', [], true).map(n => n.type), ['recovery'])
  })

  it('mesh-scope incidents are tracked everywhere but told only by the reporter', () => {
    const e = new AlertEngine({ node: 'b', clearAfterMs: 0 })
    assert.deepEqual(e.observe(0, 0, 'members', [dead('c')], false), [], 'not the reporter: silent')
    assert.deepEqual(e.incidents().map(i => i.key), ['host-dead:c'], 'but the incident is known')
    assert.deepEqual(e.observe(1, 1, 'members', [dead('c')], true), [], 'becoming reporter does not re-alert an open incident')
    assert.deepEqual(e.observe(2, 2, 'members', [], true).map(n => n.type), ['recovery'], 'the reporter at the time tells the recovery')
    assert.deepEqual(e.observe(3, 3, 'replication', [rpo('v')], false).map(n => n.type), ['alert'], 'local scope is told whoever reports')
  })

  it('explicit incidents: open once, clear once with the given summary', () => {
    const e = new AlertEngine({ node: 'b' })
    const c: Condition = { key: 'failover:vm1', kind: 'failover', severity: 'critical', scope: 'local', vm: 'vm1', summary: 'failover started' }
    assert.equal(e.open(0, 100, c).length, 1)
    assert.equal(e.open(1, 101, c).length, 0)
    const done = e.clear(200, 'failover:vm1', 'failover done')
    assert.deepEqual(done.map(n => [n.type, n.summary, n.durationMs]), [['recovery', 'failover done', 100]])
    assert.deepEqual(e.clear(300, 'failover:vm1'), [])
  })

  it('one-shot events are deduplicated by key within eventDedupeMs', () => {
    const clock = new ManualClock(0)
    const e = new AlertEngine({ node: 'a', eventDedupeMs: 60_000 })
    const c: Condition = { key: 'fence-fired:vm1', kind: 'fence-fired', severity: 'critical', scope: 'local', vm: 'vm1', summary: 'fenced' }
    assert.deepEqual(e.event(clock.now(), clock.wallNow(), c).map(n => n.type), ['event'])
    clock.advance(59_999)
    assert.deepEqual(e.event(clock.now(), clock.wallNow(), c), [])
    clock.advance(1)
    assert.equal(e.event(clock.now(), clock.wallNow(), c).length, 1, 'a new fence a minute later is a new event')
  })
})
