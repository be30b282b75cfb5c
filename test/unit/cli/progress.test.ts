import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { Progress, RateMeter, followOperation, formatEta, progressMode, readOperation, type OperationView } from '../../../daemon/cli/progress.ts'
import { seedSample } from '../../../daemon/cli/commands/progress.ts'
import { plannedShip, shipSample } from '../../../daemon/cli/commands/failover.ts'
import type { OperationStatus } from '../../../daemon/status.ts'

function sink (): { out: Writable, lines: () => string[] } {
  let text = ''
  const out = new Writable({ write (chunk, _enc, cb) { text += String(chunk); cb() } })
  return { out, lines: () => text.split('\n').filter(l => l !== '') }
}

describe('daemon/cli/progress: bars, plain lines, JSON lines', () => {
  it('rate from the samples of the window; ETA from the rate', () => {
    const m = new RateMeter(10_000)
    m.add(0, 0)
    assert.equal(m.rate(), undefined)
    m.add(1000, 1_000_000); m.add(2000, 2_000_000)
    assert.equal(m.rate(), 1_000_000)
    m.add(30_000, 2_000_000) // a stall: the window forgets the fast part and the rate falls
    assert.ok((m.rate() ?? 1) < 100_000)
    assert.equal(formatEta(90), '1m30s')
    assert.equal(formatEta(undefined), '--')
  })

  it('mode: JSON with --json, lines when not a terminal', () => {
    assert.equal(progressMode({ json: true }), 'json')
    assert.equal(progressMode({}, { isTTY: false } as NodeJS.WriteStream), 'lines')
    assert.equal(progressMode({}, { isTTY: true } as NodeJS.WriteStream), 'bar')
  })

  it('plain lines: one per 10 % step or 5 s, with rate and ETA, and a done line', () => {
    let t = 0
    const s = sink()
    const p = new Progress('lines', s.out, () => t)
    const task = p.task('seed vm1 → b')
    for (let i = 0; i <= 40; i++) { t = i * 250; task.update({ doneBytes: i * 25 * 1024 * 1024, totalBytes: 1024 * 1024 * 1024 }) }
    task.finish('in sync')
    const lines = s.lines()
    assert.ok(lines.length >= 10 && lines.length <= 14, lines.join('\n'))
    assert.match(lines[lines.length - 2] as string, /^seed vm1 → b: \d+% .*\/s ETA \S+/)
    assert.equal(lines[lines.length - 1], 'seed vm1 → b: done (in sync)')
  })

  it('JSON lines carry bytes, rate and ETA', () => {
    let t = 0
    const s = sink()
    const task = new Progress('json', s.out, () => t).task('restore')
    task.update({ doneBytes: 0, totalBytes: 1000, rateBytesPerSec: 100 })
    t = 1000
    task.update({ doneBytes: 100, totalBytes: 1000, rateBytesPerSec: 100 })
    const last = JSON.parse(s.lines().at(-1) as string)
    assert.deepEqual(last, { progress: 'restore', doneBytes: 100, totalBytes: 1000, rateBytesPerSec: 100, etaSeconds: 9 })
  })

  it('a seeding target: done bytes from seedProgress against the VM\'s size', () => {
    assert.deepEqual(seedSample({ node: 'b', state: 'seeding', ackedGeneration: 0, lagMs: null, bytesPending: 0, seedProgress: 0.25, rateBytesPerSec: 5 }, 1000), { doneBytes: 250, totalBytes: 1000, phase: 'seeding', rateBytesPerSec: 5 })
    assert.equal(seedSample({ node: 'b', state: 'in-sync', ackedGeneration: 3, lagMs: 0, bytesPending: 0 }, 1000).doneBytes, 1000)
  })

  it('verify / restore: the bar follows the daemon\'s operation while the request runs, in JSON lines too', async () => {
    const s = sink()
    const task = new Progress('json', s.out, () => 0).task('verify vm1')
    const states: Array<OperationView | undefined> = [undefined, { state: 'running', phase: 'waiting for b to be in sync', doneBytes: 0, totalBytes: 2000, rateBytesPerSec: null }, { state: 'running', phase: 'comparing with b', doneBytes: 500, totalBytes: 2000, rateBytesPerSec: 250 }]
    let reads = 0
    let finish: (v: string) => void = () => {}
    const work = new Promise<string>(resolve => { finish = resolve })
    // a sleep that lets the test step the poll: the request ends after the third read
    const out = followOperation(task, async () => states[reads++], work, { sleep: async () => { if (reads === 3) finish('report') } })
    assert.equal(await out, 'report')
    task.finish('identical')
    const lines = s.lines().map(l => JSON.parse(l))
    assert.deepEqual(lines.map(l => [l.doneBytes, l.totalBytes, l.phase ?? null, l.rateBytesPerSec]), [[0, 2000, 'waiting for b to be in sync', null], [500, 2000, 'comparing with b', 250], [2000, 2000, 'identical', undefined]])
    assert.equal(lines[1].etaSeconds, 6)
  })

  it('a failed request rejects with its own error; an unreadable operation does not break the bar', async () => {
    const task = new Progress('json', sink().out, () => 0).task('restore vm1')
    const err = Object.assign(new Error('no recovery point "9"'), { name: 'ApiRequestError' })
    await assert.rejects(followOperation(task, async () => { throw new Error('socket hang up') }, Promise.reject(err), { sleep: async () => {} }), { name: 'ApiRequestError' })
  })

  it('readOperation asks for the one id and finds it', async () => {
    const asked: string[] = []
    const client = { call: async <T>(_m: 'GET', path: string): Promise<T> => { asked.push(path); return { operations: [{ id: 'cli-verify-1', state: 'done', phase: 'identical', doneBytes: 1, totalBytes: 1, rateBytesPerSec: null }] } as T } }
    assert.equal((await readOperation(client, 'cli-verify-1'))?.phase, 'identical')
    assert.equal(await readOperation(client, 'other'), undefined)
    assert.deepEqual(asked, ['/v1/operations?id=cli-verify-1', '/v1/operations?id=other'])
  })

  it('planned failover: the bar is the final ship begun after the request, then the start on the target', () => {
    const op = (o: Partial<OperationStatus>): OperationStatus => ({ id: 'x', kind: 'final-ship', vm: 'vm1', peer: 'b', state: 'running', phase: 'shipping the final generation 9', startedAtMs: 10, elapsedMs: 0, doneBytes: 300, totalBytes: 1200, rateBytesPerSec: 100, etaMs: 9000, ...o })
    const ops = [op({ id: 'old', startedAtMs: 1 }), op({ id: 'verify', kind: 'verify' }), op({ id: 'to-c', peer: 'c' }), op({ id: 'new' })]
    assert.equal(plannedShip(ops, 'vm1', 'b', new Set(['old']))?.id, 'new')
    assert.equal(plannedShip(ops.slice(0, 3), 'vm1', 'b', new Set(['old'])), undefined)
    assert.deepEqual(shipSample(op({}), false, 'b'), { doneBytes: 300, totalBytes: 1200, phase: 'shipping the final generation 9', rateBytesPerSec: 100 })
    assert.deepEqual(shipSample(op({ state: 'done', doneBytes: 1200 }), false, 'b'), { doneBytes: 1200, totalBytes: 1200, phase: 'final generation shipped; starting on b' })
    assert.equal(shipSample(op({ state: 'failed', error: 'no ack' }), false, 'b').phase, 'final ship failed: no ack')
    assert.equal(shipSample(op({ state: 'done' }), true, 'b').phase, 'started')
  })
})
