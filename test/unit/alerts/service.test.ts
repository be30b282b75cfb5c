import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { SeededRandom } from '../../../common/random.ts'
import { silentLogger } from '../../../daemon/log.ts'
import { AlertService, type AlertSettings } from '../../../daemon/alerts/service.ts'
import { EventJournal } from '../../../daemon/events/journal.ts'
import { timelineEvent, type TimelineLike } from '../../../daemon/events/feeder.ts'
import { alertsSchema } from '../../../config/schema.ts'
import type { AlertSink } from '../../../daemon/alerts/sink.ts'
import type { AlertNotice } from '../../../daemon/alerts/types.ts'
import type { MemberStatus, StatusDocument, TargetStatus } from '../../../daemon/status.ts'
import type { Handler } from '../../../daemon/api/server.ts'

const member = (name: string, state: MemberStatus['state'], role: MemberStatus['role'] = 'host'): MemberStatus => ({ name, peerId: name, role, state, incarnation: 0, sinceMs: 0, everSeen: true, connected: state !== 'dead' })

/** The service over fake views, a manual clock and a recording sink. */
function rig (self = 'a') {
  const clock = new ManualClock(0)
  const got: AlertNotice[] = []
  const sink: AlertSink = { name: 'rec', type: 'test', send: async (n) => { got.push(n) } }
  const doc: StatusDocument = { node: { name: self, peerId: self, role: 'host', uptimeMs: 100_000, profile: 'lan' }, members: [member('b', 'alive'), member('c', 'alive'), member('w', 'alive', 'witness')], vms: [] }
  // the ownership timeline reaches alerts as the feeder makes it: typed journal events
  const journal = new EventJournal({ clock }, { node: self })
  const disk = { freeBytes: 50 }
  const owners = [{ vm: 'vm1', owner: '', epoch: 0 }]
  const memberFns = new Set<() => void>()
  const fenceFns = new Set<(r: { vm: string, ok: boolean, final: boolean, by: string }) => void>()
  const routes = new Map<string, Handler>()
  const alerts = alertsSchema.parse({ sinks: [{ type: 'webhook', name: 'rec', url: 'http://127.0.0.1:1/' }], clearAfter: '5s', stalledAfter: '30s' })
  const settings: AlertSettings = { node: { name: self, role: 'host', dataDir: '/data' }, vms: [{ name: 'vm1', rpoMs: 60_000 }], alerts, secrets: {} }
  const svc = new AlertService({
    clock,
    random: new SeededRandom(3),
    log: silentLogger(),
    status: { status: () => structuredClone(doc) },
    membership: { onMember: (fn) => { memberFns.add(fn); return () => memberFns.delete(fn) } },
    ownership: { status: () => owners },
    journal,
    watchdog: { onFence: (fn) => { fenceFns.add(fn); return () => fenceFns.delete(fn) } },
    api: { route: (m, p, h) => { routes.set(`${m} ${p}`, h) } },
    diskSpace: async (path) => ({ path, freeBytes: disk.freeBytes, totalBytes: 100 }),
    makeSink: async () => sink
  }, settings)
  const memberChanged = (): void => { for (const f of memberFns) f() }
  // the entry's text is for people; alerts must go by its type and facts, so it says nothing here
  const note = (vm: string, type: TimelineLike['type'], f: Pick<TimelineLike, 'epoch' | 'detail' | 'owner' | 'forced'> = {}): void => { journal.append(timelineEvent({ atWallMs: clock.wallNow(), vm, type, event: '(text not read)', ...f })) }
  return { clock, got, doc, disk, owners, journal, svc, memberChanged, fenceFns, routes, note }
}

describe('daemon/alerts/service: the daemon\'s views to notices', () => {
  it('a host death: told at once by the reporter, once, and its recovery when it is back', async () => {
    const r = rig('a')
    await r.svc.start()
    r.doc.members[2] = member('c', 'dead')
    r.memberChanged()
    await r.clock.advanceAsync(1) // evaluated on the member event, not at the next tick
    assert.deepEqual(r.got.map(n => [n.type, n.kind, n.subject]), [['alert', 'host-dead', 'c']])
    await r.clock.advanceAsync(60_000)
    assert.equal(r.got.length, 1, 'no duplicate while it stays dead')
    r.doc.members[2] = member('c', 'alive')
    r.memberChanged()
    await r.clock.advanceAsync(10_000)
    assert.deepEqual(r.got.map(n => n.type), ['alert', 'recovery'])
    await r.svc.stop()
  })

  it('a survivor that is not the reporter stays silent; never-seen peers are not dead during startup', async () => {
    const r = rig('b') // a is alive and sorts first
    r.doc.members = [member('a', 'alive'), member('c', 'dead'), { ...member('d', 'dead'), everSeen: false }]
    r.doc.node.uptimeMs = 5000
    await r.svc.start()
    await r.clock.advanceAsync(5000)
    assert.equal(r.got.length, 0)
    r.doc.members[0] = member('a', 'dead') // the reporter died: b takes over and tells both
    r.memberChanged()
    await r.clock.advanceAsync(1)
    assert.deepEqual(r.got.map(n => n.subject), ['a'], 'c was already open (known, untold by b), a is new')
    await r.svc.stop()
  })

  it('RPO breach against the VM\'s target, a stalled target, a verify mismatch, a low disk', async () => {
    const r = rig('a')
    const t: TargetStatus = { node: 'b', state: 'behind', ackedGeneration: 3, lagMs: 1000, rpoMs: 90_000, bytesPending: 10, lastVerify: { atMs: 1, mismatchedBlocks: 2 } }
    r.doc.vms = [{ name: 'vm1', owner: 'a', epoch: 1, runningHere: true, generation: 5, targets: [t], replica: null }]
    r.disk.freeBytes = 5
    await r.svc.start()
    await r.clock.advanceAsync(1000)
    assert.deepEqual(r.got.map(n => n.kind).sort(), ['disk-low', 'rpo-breach', 'verify-mismatch'])
    assert.deepEqual(r.got.find(n => n.kind === 'rpo-breach')?.detail, { rpoMs: 90_000, targetMs: 60_000, state: 'behind' })
    await r.clock.advanceAsync(30_000)
    assert.deepEqual(r.got.map(n => n.kind).filter(k => k === 'replication-stalled'), ['replication-stalled'])
    r.doc.vms[0]!.targets[0] = { ...t, state: 'in-sync', ackedGeneration: 6, rpoMs: 2000, bytesPending: 0, lastVerify: { atMs: 2, mismatchedBlocks: 0 } }
    await r.clock.advanceAsync(7000)
    assert.deepEqual(r.got.filter(n => n.type === 'recovery').map(n => n.kind).sort(), ['replication-stalled', 'rpo-breach', 'verify-mismatch'])
    await r.svc.stop()
  })

  it('a failover won here: started when elected, done when started; not for the VM\'s first owner; refused and fence events', async () => {
    const r = rig('a')
    await r.svc.start()
    // the owner is learned from renewals after start (no timeline entry here), at epoch 0
    r.owners[0] = { vm: 'vm1', owner: 'c', epoch: 0 }
    await r.clock.advanceAsync(1000)
    r.note('vm1', 'owner', { epoch: 1, owner: 'a' }); r.note('vm1', 'elected', { epoch: 1, forced: false })
    await r.clock.advanceAsync(1000)
    assert.deepEqual(r.got.map(n => [n.type, n.kind, n.detail?.from]), [['alert', 'failover', 'c']])
    r.owners[0] = { vm: 'vm1', owner: 'a', epoch: 1 }
    r.note('vm1', 'finalized'); r.note('vm1', 'started', { epoch: 1 })
    await r.clock.advanceAsync(1000)
    assert.deepEqual(r.got.map(n => n.type), ['alert', 'recovery'])
    assert.match(r.got[1]!.summary, /failover of vm1 done: running on a/)
    r.note('vm2', 'owner', { epoch: 1, owner: 'a' }); r.note('vm2', 'elected', { epoch: 1, forced: false }); r.note('vm2', 'started', { epoch: 1 })
    r.note('vm1', 'failoverRefused', { detail: 'no-quorum' })
    for (const f of r.fenceFns) { f({ vm: 'vm1', ok: true, final: true, by: 'watchdog' }); f({ vm: 'vm1', ok: true, final: true, by: 'watchdog' }) }
    await r.clock.advanceAsync(1000)
    assert.deepEqual(r.got.slice(2).map(n => [n.type, n.kind]).sort(), [['event', 'failover-refused'], ['event', 'fence-fired']])
    await r.svc.stop()
  })

  it('a failover won here is told even when status shows our claim before its events reach the journal', async () => {
    const r = rig('a')
    await r.svc.start()
    r.owners[0] = { vm: 'vm1', owner: 'c', epoch: 0 }
    await r.clock.advanceAsync(1000)
    // the machine's state (status) moves at once; the timeline entries reach the journal a poll later
    r.owners[0] = { vm: 'vm1', owner: 'a', epoch: 1 }
    await r.clock.advanceAsync(1000)
    r.note('vm1', 'owner', { epoch: 1, owner: 'a' }); r.note('vm1', 'elected', { epoch: 1, forced: true })
    assert.deepEqual(r.got.map(n => [n.type, n.kind, n.detail?.from, n.detail?.forced]), [['alert', 'failover', 'c', true]])
    r.note('vm1', 'demoted', { epoch: 2, owner: 'c' })
    await r.clock.advanceAsync(6000)
    assert.match(r.got[1]?.summary ?? '', /failover of vm1 ended here: demoted; new owner c/)
    await r.svc.stop()
    r.note('vm1', 'failoverRefused', { detail: 'no-quorum' })
    assert.equal(r.got.length, 2, 'no longer listening once stopped')
  })

  it('POST /v1/alerts/test answers per sink', async () => {
    const r = rig('a')
    await r.svc.start()
    const res = await (r.routes.get('POST /v1/alerts/test') as Handler)({ body: {}, query: new URLSearchParams(), signal: new AbortController().signal })
    assert.deepEqual(res, { sinks: [{ sink: 'rec', type: 'webhook', ok: true }] })
    assert.equal(r.got[0]?.type, 'test')
    await r.svc.stop()
  })
})

describe('daemon/alerts/service: without sinks', () => {
  it('does no work at all (no status reads, no timers), and starts when a reload adds a sink', async () => {
    const clock = new ManualClock(0)
    let reads = 0
    const doc: StatusDocument = { node: { name: 'a', peerId: 'a', role: 'host', uptimeMs: 100_000, profile: 'lan' }, members: [member('b', 'dead')], vms: [] }
    const got: AlertNotice[] = []
    const none: AlertSettings = { node: { name: 'a', role: 'host', dataDir: '/d' }, vms: [], alerts: alertsSchema.parse({}), secrets: {} }
    const svc = new AlertService({
      clock,
      random: new SeededRandom(1),
      log: silentLogger(),
      status: { status: () => { reads++; return doc } },
      membership: { onMember: () => () => {} },
      ownership: { status: () => [] },
      journal: new EventJournal({ clock }, { node: 'a' }),
      api: { route: () => {} },
      diskSpace: async (path) => ({ path, freeBytes: 50, totalBytes: 100 }),
      makeSink: async () => ({ name: 'rec', type: 'test', send: async (n) => { got.push(n) } })
    }, none)
    await svc.start()
    await clock.advanceAsync(10_000)
    assert.equal(reads, 0)
    assert.equal(clock.pendingTimers, 0)
    const one: AlertSettings = { ...none, alerts: alertsSchema.parse({ sinks: [{ type: 'webhook', name: 'rec', url: 'http://127.0.0.1:1/' }] }) }
    assert.deepEqual(await svc.reload(one, none), ['alerts'])
    await clock.advanceAsync(1000)
    assert.ok(reads > 0)
    assert.deepEqual(got.map(n => n.key), ['host-dead:b'])
    await svc.stop()
  })
})
