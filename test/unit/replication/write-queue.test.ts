import assert from 'node:assert/strict'
import { WriteQueue } from '../../../daemon/replication/write-queue.ts'
import { flush } from './fake-stream.ts'

/** A task the test finishes by hand. */
function gate (): { promise: Promise<void>, open: () => void, fail: (err: Error) => void } {
  let open!: () => void
  let fail!: (err: Error) => void
  const promise = new Promise<void>((resolve, reject) => { open = resolve; fail = reject })
  return { promise, open, fail }
}

describe('replication write queue', () => {
  it('runs tasks one at a time, in order, while push returns at once under the budget', async () => {
    const q = new WriteQueue(100)
    const log: string[] = []
    const g1 = gate()
    await q.push(10, async () => { log.push('1 start'); await g1.promise; log.push('1 end') })
    await q.push(10, async () => { log.push('2') })
    await flush()
    assert.deepEqual(log, ['1 start'])
    assert.equal(q.bytes, 20)
    g1.open()
    await q.drain()
    assert.deepEqual(log, ['1 start', '1 end', '2'])
    assert.equal(q.bytes, 0)
  })

  it('makes push wait while more than the budget is outstanding', async () => {
    const q = new WriteQueue(15)
    const g = gate()
    await q.push(10, async () => { await g.promise })
    let second = false
    const p = q.push(10, async () => {}).then(() => { second = true })
    await flush()
    assert.equal(second, false, 'over budget: push waits for the oldest task')
    g.open()
    await p
    assert.equal(second, true)
    await q.drain()
  })

  it('a failure skips later tasks, still runs every done, and is reported until reset', async () => {
    const q = new WriteQueue(1000)
    const ran: number[] = []
    const done: number[] = []
    await q.push(1, async () => { ran.push(1) }, () => done.push(1))
    await q.push(1, async () => { throw Object.assign(new Error('disk full'), { code: 'ENOSPC' }) }, () => done.push(2))
    await q.push(1, async () => { ran.push(3) }, () => done.push(3))
    await assert.rejects(q.drain(), (err: Error & { code?: string }) => err.code === 'ENOSPC')
    assert.deepEqual(ran, [1])
    assert.deepEqual(done, [1, 2, 3])
    assert.equal(q.failed, true)
    assert.equal((q.error as { code?: string }).code, 'ENOSPC')
    await q.reset()
    assert.equal(q.failed, false)
    await q.push(1, async () => { ran.push(4) })
    await q.drain()
    assert.deepEqual(ran, [1, 4])
  })
})
