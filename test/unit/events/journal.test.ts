import assert from 'node:assert/strict'
import { appendFile, readFile, writeFile, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ManualClock } from '../../../common/clock.ts'
import { EventJournal } from '../../../daemon/events/journal.ts'
import { EventFeeder, timelineEvent, type TimelineLike } from '../../../daemon/events/feeder.ts'
import { ownershipFacts } from '../../../daemon/events/types.ts'
import type { MeshEvent } from '../../../daemon/events/types.ts'

describe('daemon/events: the event journal and its feeder', () => {
  let dir = ''
  beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'vmesh-events-')) })
  afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

  it('append stamps seq, time and node, emits, and since() pages after a seq', async () => {
    const clock = new ManualClock(0, 1_000)
    const j = new EventJournal({ clock }, { node: 'a' })
    await j.start()
    const seen: MeshEvent[] = []
    j.on('event', e => seen.push(e))
    const e1 = j.append({ kind: 'member', severity: 'critical', peer: 'b', text: 'b dead' })
    clock.advance(5)
    j.append({ kind: 'election', severity: 'info', vm: 'vm1', epoch: 2, text: 'vm1: owner c' })
    assert.deepEqual([e1.seq, e1.atWallMs, e1.node], [1, 1000, 'a'])
    assert.deepEqual(seen.map(e => e.seq), [1, 2])
    assert.deepEqual(j.since(1).map(e => e.text), ['vm1: owner c'])
    assert.deepEqual(j.since(0, 1).map(e => e.seq), [2], 'limit keeps the newest')
    assert.equal(j.lastSeq, 2)
  })

  it('is bounded in memory and on disk, survives a restart, and skips damaged lines', async () => {
    const path = join(dir, 'events.jsonl')
    const clock = new ManualClock(0)
    const j = new EventJournal({ clock }, { node: 'a', path, capacity: 5 })
    await j.start()
    for (let i = 1; i <= 23; i++) j.append({ kind: 'verify', severity: 'info', text: `e${i}` })
    await j.flushed()
    assert.equal(j.since(0).length, 5)
    const lines = (await readFile(path, 'utf8')).trim().split('\n')
    assert.ok(lines.length <= 10, `file compacted to the ring: ${lines.length} lines`)
    await appendFile(path, '{"seq": 99, "torn\n')
    await j.stop()
    const k = new EventJournal({ clock }, { node: 'a', path, capacity: 5 })
    await k.start()
    assert.deepEqual(k.since(0).map(e => e.text), ['e19', 'e20', 'e21', 'e22', 'e23'])
    assert.equal(k.append({ kind: 'fence', severity: 'warning', text: 'next' }).seq, 24, 'seq continues after a restart')
    await k.flushed()
    await writeFile(path, 'not json\n{"seq":1,"atWallMs":1,"node":"a","kind":"nonsense","severity":"info","text":"x"}\n')
    const m = new EventJournal({ clock }, { node: 'a', path })
    await m.start()
    assert.equal(m.since(0).length, 0)
  })

  it('timeline entries become election, failover and fence events', () => {
    const t = (type: TimelineLike['type'], event: string, detail?: string, facts: Pick<TimelineLike, 'owner' | 'forced'> = {}): TimelineLike => ({ atWallMs: 5, vm: 'vm1', type, event, epoch: 3, ...(detail !== undefined ? { detail } : {}), ...facts })
    assert.equal(timelineEvent(t('owner', 'owner b', undefined, { owner: 'b' })).kind, 'election')
    assert.equal(timelineEvent(t('elected', 'elected here (forced)', undefined, { forced: true })).severity, 'warning')
    assert.equal(timelineEvent(t('fenced', 'fenced by watchdog')).kind, 'fence')
    assert.equal(timelineEvent(t('fenceFailed', 'watchdog fence failed')).severity, 'critical')
    assert.deepEqual([timelineEvent(t('started', 'started here')).kind, timelineEvent(t('failoverRefused', 'failoverRefused', 'not-owner')).severity], ['failover', 'warning'])
    assert.equal(timelineEvent(t('finalized', 'replica finalized', 'latest')).text, 'vm1: replica finalized at epoch 3 (latest)')
  })

  it('the kind, severity and facts come from the typed fields, not from the text', () => {
    // a text that reads like another kind changes nothing: only `type` and the facts count
    const e = timelineEvent({ atWallMs: 5, vm: 'vm1', type: 'demoted', event: 'fenced by watchdog (forced)', epoch: 4, owner: 'c' })
    assert.deepEqual([e.kind, e.severity], ['election', 'info'])
    assert.deepEqual(ownershipFacts({ kind: e.kind, ...(e.data !== undefined ? { data: e.data } : {}) }), { type: 'demoted', owner: 'c' })
    assert.deepEqual(ownershipFacts({ kind: 'election', data: { type: 'elected', forced: true } }), { type: 'elected', forced: true })
    // entries persisted before the facts existed, and foreign values, give none
    assert.equal(ownershipFacts({ kind: 'election', data: { event: 'owner b' } }), undefined)
    assert.equal(ownershipFacts({ kind: 'election', data: { type: 'crowned' } }), undefined)
    assert.equal(ownershipFacts({ kind: 'member', data: { type: 'owner' } }), undefined)
  })

  it('the feeder turns member events, new timeline entries and new verify results into events', () => {
    const clock = new ManualClock(0)
    const j = new EventJournal({ clock }, { node: 'a' })
    let listener: ((e: { id: string, state: 'alive' | 'suspect' | 'dead', previous?: string }) => void) | undefined
    const timeline: TimelineLike[] = [{ atWallMs: 1, vm: 'vm1', type: 'started', event: 'started here', epoch: 0 }]
    const targets = [{ node: 'b', lastVerify: { atMs: 10, mismatchedBlocks: 0 } }]
    const f = new EventFeeder({
      clock,
      journal: j,
      membership: { onMember: (fn) => { listener = fn; return () => { listener = undefined } } },
      ownership: { timeline },
      replication: { vmStatus: () => [{ name: 'vm1', targets }] }
    }, { names: { P2: 'b' }, pollMs: 100, verifyPollMs: 100 })
    f.start()
    assert.equal(j.since(0).length, 0, 'history before start is not replayed')
    listener?.({ id: 'P2', state: 'dead', previous: 'suspect' })
    timeline.push({ atWallMs: 2, vm: 'vm1', type: 'owner', event: 'owner c', epoch: 1, owner: 'c' })
    timeline.shift() // the bounded timeline drops its oldest
    timeline.push({ atWallMs: 3, vm: 'vm1', type: 'demoted', event: 'demoted; new owner c', epoch: 1, owner: 'c' })
    targets[0] = { node: 'b', lastVerify: { atMs: 20, mismatchedBlocks: 3 } }
    clock.advance(100)
    assert.deepEqual(j.since(0).map(e => [e.kind, e.text]), [
      ['member', 'b dead (was suspect)'],
      ['election', 'vm1: owner c at epoch 1'],
      ['election', 'vm1: demoted; new owner c at epoch 1'],
      ['verify', 'verify vm1 on b: 3 block(s) differ']
    ])
    clock.advance(100)
    assert.equal(j.since(0).length, 4, 'nothing twice')
    f.stop()
    assert.equal(listener, undefined)
    assert.equal(clock.pendingTimers, 0)
  })
})
