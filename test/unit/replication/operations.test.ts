import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { OperationTracker } from '../../../daemon/replication/operations.ts'

describe('daemon/replication/operations: long operations with byte progress', () => {
  it('rate over the window of the injected clock, ETA from it; a stall lowers the rate', () => {
    const clock = new ManualClock(0, 1_700_000_000_000)
    const ops = new OperationTracker({ clock }, { rateWindowMs: 10_000, sampleEveryMs: 250 })
    const op = ops.begin('verify', 'vm1', { id: 'v1', totalBytes: 100_000_000, phase: 'waiting for b to be in sync' })
    assert.deepEqual(ops.get('v1'), { id: 'v1', kind: 'verify', vm: 'vm1', state: 'running', phase: 'waiting for b to be in sync', startedAtMs: 1_700_000_000_000, doneBytes: 0, totalBytes: 100_000_000, elapsedMs: 0, rateBytesPerSec: null, etaMs: null })
    for (let i = 1; i <= 40; i++) { clock.advance(100); op.update(i * 1_000_000, undefined, 'comparing with b') }
    const v = ops.get('v1')
    assert.equal(v?.doneBytes, 40_000_000)
    assert.equal(v?.rateBytesPerSec, 10_000_000)
    assert.equal(v?.etaMs, 6000)
    assert.equal(v?.phase, 'comparing with b')
    clock.advance(16_000) // nothing read for 16 s
    const stalled = ops.get('v1')
    assert.ok((stalled?.rateBytesPerSec ?? Infinity) < 10_000_000 / 4, `rate ${stalled?.rateBytesPerSec}`)
    assert.ok((stalled?.etaMs ?? 0) > 6000 * 4)
  })

  it('keeps a bounded number of rate samples however many updates come', () => {
    const clock = new ManualClock()
    const ops = new OperationTracker({ clock }, { rateWindowMs: 10_000, sampleEveryMs: 250 })
    const op = ops.begin('restore', 'vm1', { totalBytes: 1e12 })
    for (let i = 1; i <= 100_000; i++) { clock.advance(7); op.update(i * 4096) }
    const samples = ((ops as unknown as { running: Map<string, { samples: unknown[] }> }).running.get(op.id)?.samples ?? []).length
    assert.ok(samples <= 10_000 / 250 + 2, `${samples} samples`)
    assert.equal(ops.list()[0]?.rateBytesPerSec, Math.round(4096 / 7 * 1000))
  })

  it('finished operations: done fills the total, a failure keeps its error; only the last ones are kept', () => {
    const clock = new ManualClock()
    const ops = new OperationTracker({ clock }, { keepFinished: 2 })
    const t0 = clock.wallNow()
    const a = ops.begin('verify', 'vm1', { id: 'a', totalBytes: 10 })
    a.update(4)
    clock.advance(1500)
    a.finish('identical')
    a.update(5) // late updates are ignored
    assert.deepEqual(ops.get('a'), { id: 'a', kind: 'verify', vm: 'vm1', state: 'done', phase: 'identical', startedAtMs: t0, doneBytes: 10, totalBytes: 10, elapsedMs: 1500, rateBytesPerSec: null, etaMs: 0 })
    const b = ops.begin('restore', 'vm1', { id: 'b', peer: 'hv-a' })
    b.fail(Object.assign(new Error('disk full'), { name: 'ReplicaIoError' }))
    assert.deepEqual([ops.get('b')?.state, ops.get('b')?.error, ops.get('b')?.peer], ['failed', 'disk full', 'hv-a'])
    ops.begin('final-ship', 'vm1', { id: 'c' }).finish()
    assert.deepEqual(ops.list().map(o => o.id), ['b', 'c'])
  })

  it('a client-chosen id still running is refused with OperationIdInUseError; a finished one may be reused', () => {
    const ops = new OperationTracker({ clock: new ManualClock() })
    const a = ops.begin('verify', 'vm1', { id: 'x' })
    assert.throws(() => ops.begin('verify', 'vm1', { id: 'x' }), { name: 'OperationIdInUseError', code: 'ERR_OPERATION_ID_IN_USE' })
    a.finish()
    assert.doesNotThrow(() => ops.begin('verify', 'vm1', { id: 'x' }))
    // generated ids are unique
    assert.notEqual(ops.begin('verify', 'vm1').id, ops.begin('verify', 'vm1').id)
  })
})
