import assert from 'node:assert/strict'
import { SeededRandom } from '../../../common/random.ts'
import { OwnershipMachine } from '../../../daemon/ownership/machine.ts'
import { fenceDeadline, ownerLeaseEnd, voterPromiseEnd } from '../../../daemon/ownership/lease.ts'
import { PROFILES } from '../../../config/profiles.ts'
import type { OwnershipEvent, OwnershipOutput, PersistRecord, VmSpec, VoterSpec } from '../../../daemon/ownership/types.ts'
import type { Vote } from '../../../protocol/election/messages.ts'
import { MiniCluster } from './mini-cluster.ts'

const T = PROFILES.lan.ownership
const A_B_W: VoterSpec[] = [{ id: 'a', role: 'host' }, { id: 'b', role: 'host' }, { id: 'w', role: 'witness' }]
const A_B: VoterSpec[] = [{ id: 'a', role: 'host' }, { id: 'b', role: 'host' }]
const A_B_C: VoterSpec[] = [{ id: 'a', role: 'host' }, { id: 'b', role: 'host' }, { id: 'c', role: 'host' }]
const WEB: VmSpec = { name: 'web', home: 'a', replicateTo: ['b'] }
const GEN0 = { epoch: 0, generation: 0 }

function types (c: MiniCluster, id: string): string[] { return c.events(id).map(e => e.ev.type) }

/** A cluster where `a` owns and runs web and the replica holders have reported generation 0. */
function running (voters: VoterSpec[], vms: VmSpec[] = [WEB], extra: Partial<ConstructorParameters<typeof MiniCluster>[0]> = {}): MiniCluster {
  const c = new MiniCluster({ voters, vms, ...extra })
  for (const vm of vms) for (const r of vm.replicateTo) c.input(r, { type: 'replicaApplied', vm: vm.name, generation: GEN0 })
  c.advance(3000)
  for (const vm of vms) assert.deepEqual(c.runners(vm.name), [vm.home])
  return c
}

describe('OwnershipMachine: leases', () => {
  it('starts the home owner\'s VM once a majority acked, watchdog first, fence before lease end', () => {
    const c = running(A_B_W)
    const evs = c.events('a')
    assert.equal(evs[0]?.ev.type, 'watchdog')
    assert.equal(evs[1]?.ev.type, 'start')
    const s = c.status('a', 'web')
    assert.ok(s.fenceUntil < s.leaseUntil)
    for (const e of c.events('a', 'watchdog')) {
      const ev = e.ev as Extract<OwnershipEvent, { type: 'watchdog' }>
      assert.ok(ev.deadline !== null && ev.deadline <= e.at + T.fenceMs)
    }
  })

  it('computes lease and fence from the round\'s send time, not from when the acks came back', () => {
    const c = running(A_B_W, [WEB], { latencyMs: 400 })
    const s = c.status('a', 'web')
    // rounds go out every renewMs; the newest majority round was sent ≥ 800 ms ago (400 each way)
    const lastSend = s.fenceUntil - T.fenceMs
    assert.equal(s.leaseUntil, ownerLeaseEnd(lastSend, T))
    assert.equal(s.fenceUntil, fenceDeadline(lastSend, T))
    assert.ok(lastSend <= c.local('a') - 800)
  })

  it('stops the VM at the fence deadline when the owner is cut off from the majority', () => {
    const c = running(A_B_W)
    c.isolate('a')
    const fence = c.status('a', 'web').fenceUntil
    c.advance(10_000)
    const stop = c.events('a', 'stop')
    assert.equal(stop.length, 1)
    assert.deepEqual(stop[0]?.ev, { type: 'stop', vm: 'web', reason: 'lease-lost' })
    assert.equal(stop[0]?.at, fence)
    assert.deepEqual(c.runners('web'), [])
  })

  it('keeps running when only the witness is lost', () => {
    const c = running(A_B_W)
    c.kill('w')
    c.setViewOfAll('w', 'dead')
    c.advance(60_000)
    assert.deepEqual(c.events('a', 'stop'), [])
    assert.deepEqual(c.runners('web'), ['a'])
    assert.deepEqual(c.events('b', 'elected'), [])
  })

  it('renewals refused by a voter that knows a higher epoch stop the old owner at once', () => {
    const c = running(A_B_W)
    // b and w learned of epoch 5 (owner b) while a was not listening
    c.cut('a', 'b'); c.cut('a', 'w')
    c.input('w', { type: 'message', from: 'b', msg: { type: 'owner', vm: 'web', epoch: 5, owner: 'b' } })
    c.heal()
    const t0 = c.time
    c.advance(1500)
    const stop = c.events('a', 'stop')
    assert.equal(stop.length, 1)
    assert.deepEqual(stop[0]?.ev, { type: 'stop', vm: 'web', reason: 'superseded' })
    assert.ok((stop[0]?.at ?? Infinity) - t0 <= T.renewMs + 2)
    assert.ok(types(c, 'a').includes('demoted'))
    assert.equal(c.status('a', 'web').epoch, 5)
  })

  it('a node that hears of a higher epoch for a VM it runs stops it immediately', () => {
    const c = running(A_B_W)
    c.input('a', { type: 'message', from: 'b', msg: { type: 'owner', vm: 'web', epoch: 1, owner: 'b' } })
    const last = c.events('a').slice(-4).map(e => e.ev)
    assert.deepEqual(last.filter(e => e.type !== 'watchdog'), [
      { type: 'owner', vm: 'web', owner: 'b', epoch: 1 },
      { type: 'demoted', vm: 'web', owner: 'b', epoch: 1 },
      { type: 'stop', vm: 'web', reason: 'superseded' }
    ])
  })

  it('a daemon restarted under a running VM keeps it only until the old watchdog deadline unless it renews', () => {
    const c = running(A_B_W)
    const a = c.node('a')
    const fence = c.status('a', 'web').fenceUntil
    c.isolate('a')
    a.machine = OwnershipMachine.restore({ self: 'a', voters: A_B_W, vms: [WEB], random: new SeededRandom(1), now: c.local('a') }, [...a.persisted.values()])
    const first = a.machine.step(c.local('a'), { type: 'vmState', vm: 'web', running: true, fenceDeadline: fence })
    assert.deepEqual(first.events, [])
    assert.ok(first.send.some(s => s.msg.type === 'renew'))
    const next = a.machine.nextDeadline()
    assert.ok(next !== undefined && next <= fence)
    const out = a.machine.tick(fence)
    assert.deepEqual(out.events.filter(e => e.type === 'stop'), [{ type: 'stop', vm: 'web', reason: 'lease-lost' }])
  })
})

describe('OwnershipMachine: elections', () => {
  it('fails over to the replica once the owner is dead and the voters\' promises ran out', () => {
    const c = running(A_B_W)
    const lastAck = c.time // a renewed every second until now
    c.kill('a')
    c.advance(3000)
    c.setViewOfAll('a', 'dead')
    c.advance(10_000)
    assert.deepEqual(c.runners('web'), ['b'])
    const evs = c.events('b').map(e => e.ev.type)
    const iFinal = evs.indexOf('finalize')
    const iStart = evs.indexOf('start')
    assert.ok(evs.indexOf('elected') >= 0 && iFinal >= 0 && iFinal < iStart)
    assert.equal(evs[iStart - 1], 'watchdog')
    const start = c.events('b', 'start')[0]
    assert.deepEqual(start?.ev, { type: 'start', vm: 'web', epoch: 1 })
    assert.ok((start?.at ?? 0) >= voterPromiseEnd(lastAck - T.renewMs, T), 'no grant before the old promises ended')
    assert.deepEqual(c.events('b', 'finalize')[0]?.ev, { type: 'finalize', vm: 'web', generation: GEN0 })
    // everyone adopted the new owner
    for (const id of ['b', 'w']) assert.deepEqual([c.status(id, 'web').owner, c.status(id, 'web').epoch], ['b', 1])
  })

  it('the returning old owner stops nothing twice, adopts the new epoch and is demoted', () => {
    const c = running(A_B_W)
    c.kill('a')
    c.setViewOfAll('a', 'dead')
    c.advance(10_000)
    assert.deepEqual(c.runners('web'), ['b'])
    c.restart('a')
    c.setViewOfAll('a', 'alive')
    c.advance(5000)
    assert.deepEqual(c.runners('web'), ['b'])
    assert.deepEqual(c.events('a', 'start').length, 1) // only the start before the crash
    assert.deepEqual(c.events('a', 'demoted').map(e => e.ev), [{ type: 'demoted', vm: 'web', owner: 'b', epoch: 1 }])
  })

  it('two hosts without a witness never fail over on their own', () => {
    const c = running(A_B)
    c.kill('a')
    c.setViewOfAll('a', 'dead')
    c.advance(120_000)
    assert.deepEqual(c.runners('web'), [])
    assert.deepEqual(c.events('b', 'elected'), [])
    assert.deepEqual(c.events('b', 'start'), [])
  })

  it('two hosts without a witness: --force takes over, after this node\'s own promise ran out', () => {
    const c = running(A_B)
    const lastAck = c.time
    c.kill('a')
    c.setViewOfAll('a', 'dead')
    c.input('b', { type: 'operatorFailover', vm: 'web', force: true })
    c.advance(10_000)
    assert.deepEqual(c.runners('web'), ['b'])
    const elected = c.events('b', 'elected')
    assert.deepEqual(elected.map(e => e.ev), [{ type: 'elected', vm: 'web', epoch: 1, forced: true }])
    assert.ok((elected[0]?.at ?? 0) >= voterPromiseEnd(lastAck - T.renewMs, T))
    // no lease, but a fence: the daemon moves the watchdog deadline fenceMs ahead every renewal
    // period by itself, armed before the start it protects
    const arms = c.events('b', 'watchdog')
    assert.ok(arms.length >= 5, JSON.stringify(arms))
    const start = c.events('b', 'start')[0]
    assert.ok(start !== undefined && (arms[0]?.at ?? Infinity) <= start.at)
    for (const a of arms) {
      const d = (a.ev as { deadline: number | null }).deadline
      assert.ok(d !== null && d > a.at && d <= a.at + T.fenceMs, `deadline ${d} armed at ${a.at}`)
    }
    for (let i = 1; i < arms.length; i++) assert.ok((arms[i]?.at ?? 0) - (arms[i - 1]?.at ?? 0) <= T.renewMs)
    assert.equal(c.status('b', 'web').forced, true)
    assert.ok(c.status('b', 'web').fenceUntil > c.local('b'))
    // the old owner comes back: it is told, stops nothing (it crashed), and b's lease becomes normal
    c.restart('a')
    c.advance(3000)
    assert.equal(c.status('a', 'web').owner, 'b')
    assert.equal(c.status('b', 'web').forced, false)
    assert.ok(c.events('b', 'watchdog').some(e => (e.ev as { deadline: number | null }).deadline !== null))
    assert.deepEqual(c.runners('web'), ['b'])
  })

  it('--force: a forced owner whose daemon hangs past its fence deadline stops, then starts again under a fresh one', () => {
    const c = running(A_B)
    c.kill('a')
    c.setViewOfAll('a', 'dead')
    c.input('b', { type: 'operatorFailover', vm: 'web', force: true })
    c.advance(10_000)
    assert.deepEqual(c.runners('web'), ['b'])
    const fence = c.status('b', 'web').fenceUntil
    c.pause('b')
    c.advance(T.fenceMs + 1000)
    const resumedAt = c.time
    c.resume('b')
    c.advance(3000)
    const stops = c.events('b', 'stop').filter(e => e.at >= resumedAt)
    assert.deepEqual(stops.map(e => e.ev), [{ type: 'stop', vm: 'web', reason: 'lease-lost' }])
    assert.ok(fence < c.local('b'))
    const restarts = c.events('b', 'start').filter(e => e.at >= resumedAt)
    assert.equal(restarts.length, 1)
    const rearm = c.events('b', 'watchdog').filter(e => e.at >= resumedAt && (e.ev as { deadline: number | null }).deadline !== null)
    assert.ok(rearm.length > 0 && (rearm[0]?.at ?? Infinity) <= (restarts[0]?.at ?? 0))
    assert.deepEqual(c.runners('web'), ['b'])
  })

  it('--force against an owner that still had a lease (the operator was wrong): it turns its VM off as soon as it hears the higher epoch', () => {
    const c = running(A_B_W)
    // b is cut off from a and w; a keeps its lease through w
    c.cut('b', 'a'); c.cut('b', 'w')
    c.setView('b', 'a', 'dead'); c.setView('b', 'w', 'dead')
    c.input('b', { type: 'operatorFailover', vm: 'web', force: true })
    c.advance(10_000)
    assert.deepEqual(c.runners('web').sort(), ['a', 'b'])
    assert.deepEqual(c.events('a', 'stop'), [])
    const healedAt = c.time
    c.heal()
    c.advance(2000)
    const stops = c.events('a', 'stop')
    assert.deepEqual(stops.map(e => e.ev), [{ type: 'stop', vm: 'web', reason: 'superseded' }])
    // the first frame from b (its renewal, at most renewMs away) carries the higher epoch
    assert.ok((stops[0]?.at ?? Infinity) <= healedAt + T.renewMs + 2)
    assert.deepEqual(c.runners('web'), ['b'])
    assert.equal(c.status('a', 'web').owner, 'b')
    assert.equal(c.status('b', 'web').forced, false)
  })

  it('two hosts without a witness: losing the other host stops the owner\'s VMs (no majority)', () => {
    const c = running(A_B)
    c.kill('b')
    c.advance(10_000)
    assert.deepEqual(c.events('a', 'stop').map(e => e.ev), [{ type: 'stop', vm: 'web', reason: 'lease-lost' }])
  })

  it('manual policy waits for the operator', () => {
    const manual: VmSpec = { ...WEB, failover: 'manual' }
    const c = running(A_B_W, [manual])
    c.kill('a')
    c.setViewOfAll('a', 'dead')
    c.advance(60_000)
    assert.deepEqual(c.runners('web'), [])
    assert.deepEqual(c.events('b', 'elected'), [])
    // asked on the witness's API, forwarded to b
    c.input('w', { type: 'operatorFailover', vm: 'web', to: 'b' })
    c.advance(3000)
    assert.deepEqual(c.runners('web'), ['b'])
    assert.deepEqual(c.events('b', 'elected').map(e => e.ev), [{ type: 'elected', vm: 'web', epoch: 1, forced: false }])
  })

  it('refuses operator requests that cannot work', () => {
    const c = running(A_B_W)
    c.input('a', { type: 'operatorFailover', vm: 'web' })
    c.input('a', { type: 'operatorFailover', vm: 'nope' })
    c.input('a', { type: 'operatorFailover', vm: 'web', to: 'w' })
    c.input('w', { type: 'operatorFailover', vm: 'web', to: 'zz' })
    c.input('b', { type: 'plannedFailover', vm: 'web', to: 'a' })
    assert.deepEqual(c.events('a', 'failoverRefused').map(e => e.ev), [
      { type: 'failoverRefused', vm: 'web', reason: 'already-owner' },
      { type: 'failoverRefused', vm: 'nope', reason: 'unknown-vm' },
      { type: 'failoverRefused', vm: 'web', reason: 'witness' }
    ])
    assert.deepEqual(c.events('w', 'failoverRefused').map(e => e.ev), [{ type: 'failoverRefused', vm: 'web', reason: 'unknown-node' }])
    assert.deepEqual(c.events('b', 'failoverRefused').map(e => e.ev), [{ type: 'failoverRefused', vm: 'web', reason: 'not-owner' }])
  })

  it('an operator failover while the owner is alive gives up after operatorTimeoutMs', () => {
    const c = running(A_B_W)
    c.input('b', { type: 'operatorFailover', vm: 'web' })
    c.advance(T.operatorTimeoutMs + 2000)
    assert.deepEqual(c.runners('web'), ['a'])
    assert.deepEqual(c.events('b', 'failoverAbandoned').map(e => e.ev), [{ type: 'failoverAbandoned', vm: 'web', reason: 'timeout' }])
  })

  it('ranks candidates: the freshest replica wins even when configured second', () => {
    const vm: VmSpec = { name: 'web', home: 'a', replicateTo: ['b', 'c'] }
    const c = new MiniCluster({ voters: A_B_C, vms: [vm] })
    c.input('b', { type: 'replicaApplied', vm: 'web', generation: { epoch: 0, generation: 4 } })
    c.input('c', { type: 'replicaApplied', vm: 'web', generation: { epoch: 0, generation: 5 } })
    c.advance(3000)
    c.kill('a')
    c.setViewOfAll('a', 'dead')
    c.advance(12_000)
    assert.deepEqual(c.runners('web'), ['c'])
    assert.deepEqual(c.events('b', 'elected'), [])
  })

  it('a stale candidate is refused while a fresher replica is alive, and accepted once it is dead', () => {
    const vm: VmSpec = { name: 'web', home: 'a', replicateTo: ['b', 'c'] }
    const c = new MiniCluster({ voters: A_B_C, vms: [vm] })
    c.input('b', { type: 'replicaApplied', vm: 'web', generation: { epoch: 0, generation: 4 } })
    c.input('c', { type: 'replicaApplied', vm: 'web', generation: { epoch: 0, generation: 5 } })
    c.advance(3000)
    // a is dead; c is alive but cannot stand (its own view of a says alive)
    c.kill('a')
    c.setView('b', 'a', 'dead')
    c.advance(12_000)
    assert.deepEqual(c.runners('web'), [])
    const votes = c.events('b', 'elected')
    assert.deepEqual(votes, [])
    // now c dies too: b is the freshest live replica and a majority (b, c?) is gone: b alone cannot win
    c.kill('c')
    c.setView('b', 'c', 'dead')
    c.advance(12_000)
    assert.deepEqual(c.runners('web'), [])
    // c returns with its view of a corrected, and b may not win against c's fresher data while c is alive
    c.restart('c')
    c.input('c', { type: 'replicaApplied', vm: 'web', generation: { epoch: 0, generation: 5 } })
    c.setView('c', 'a', 'dead')
    c.setView('b', 'c', 'alive')
    c.advance(12_000)
    assert.deepEqual(c.runners('web'), ['c'])
  })
})

describe('OwnershipMachine: specs learned from the home node', () => {
  /** Only `a` lists web; b holds its replica and learns the policy from a's announcement. */
  function learned (): MiniCluster {
    const c = new MiniCluster({ voters: A_B_W, vms: [WEB], vmsOf: { b: [], w: [] } })
    // the replica is reported before the spec arrives (the poll and the announcement race)
    c.input('b', { type: 'replicaApplied', vm: 'web', generation: GEN0 })
    c.input('b', { type: 'vm', spec: WEB })
    c.advance(3000)
    assert.deepEqual(c.runners('web'), ['a'])
    return c
  }

  it('a replica reported before the VM\'s spec still makes the holder a candidate', () => {
    const c = learned()
    c.kill('a')
    c.setViewOfAll('a', 'dead')
    c.advance(10_000)
    assert.deepEqual(c.runners('web'), ['b'])
  })

  it('a replica holder restarted while the home node is down keeps the announced policy', () => {
    const c = learned()
    c.kill('a')
    c.setViewOfAll('a', 'dead')
    c.restart('b')
    c.setView('b', 'a', 'dead')
    c.input('b', { type: 'replicaApplied', vm: 'web', generation: GEN0 })
    c.advance(15_000)
    assert.deepEqual(c.runners('web'), ['b'])
    assert.equal(c.status('b', 'web').owner, 'b')
  })
})

describe('OwnershipMachine: durable votes', () => {
  function vote (out: OwnershipOutput): Vote {
    const v = out.send.find(s => s.msg.type === 'vote')?.msg
    assert.ok(v !== undefined && v.type === 'vote')
    return v
  }
  const init = { self: 'w', voters: A_B_C.concat([{ id: 'w', role: 'witness' }]), vms: [{ name: 'web', home: 'a', replicateTo: ['b', 'c'] }], random: new SeededRandom(3) }
  const ask = (from: string, epoch: number): { type: 'message', from: string, msg: { type: 'requestVote', vm: string, epoch: number, seq: number, candidate: string, generation: { epoch: number, generation: number } } } =>
    ({ type: 'message', from, msg: { type: 'requestVote', vm: 'web', epoch, seq: 1, candidate: from, generation: GEN0 } })

  it('persists the grant in the same output as the vote, and a restarted voter never grants that epoch to another', () => {
    let now = 100_000
    let m = new OwnershipMachine({ ...init, now })
    const dead = (x: OwnershipMachine): void => { x.step(now, { type: 'member', id: 'a', state: 'dead' }) }
    dead(m)
    now += 6000 // past the quiet period
    const out = m.step(now, ask('b', 1))
    assert.equal(vote(out).granted, true)
    const rec = out.persist.find((r): r is Extract<PersistRecord, { kind: 'vm' }> => r.kind === 'vm')
    assert.deepEqual([rec?.votedEpoch, rec?.votedFor], [1, 'b'])
    // restart (volatile state lost), long after every promise ended
    now += 60_000
    m = OwnershipMachine.restore({ ...init, now }, out.persist)
    dead(m)
    // during the quiet period nothing is granted
    const early = vote(m.step(now + 10, ask('b', 2)))
    assert.deepEqual([early.granted, early.reason], [false, 'recovering'])
    now += 6000
    const second = vote(m.step(now, ask('c', 1)))
    assert.deepEqual([second.granted, second.reason], [false, 'alreadyVoted'])
    // the same candidate gets the same answer again
    assert.equal(vote(m.step(now, ask('b', 1))).granted, true)
  })

  it('a witness whose config lists no VMs votes on them and keeps its grants across a restart', () => {
    const cfg = { self: 'w', voters: A_B_C.concat([{ id: 'w', role: 'witness' }]), vms: [], random: new SeededRandom(5) }
    let now = 0
    let m = new OwnershipMachine({ ...cfg, now })
    const renew = m.step(now, { type: 'message', from: 'a', msg: { type: 'renew', vm: 'web', epoch: 0, seq: 7 } })
    assert.deepEqual(renew.send.map(s => s.msg.type), ['renewAck'])
    m.step(now, { type: 'member', id: 'a', state: 'dead' })
    now += 6000
    const out = m.step(now, ask('b', 1))
    assert.equal(vote(out).granted, true)
    now += 1000
    m = OwnershipMachine.restore({ ...cfg, now }, out.persist)
    m.step(now, { type: 'member', id: 'a', state: 'dead' })
    now += 6000
    const second = vote(m.step(now, ask('c', 1)))
    assert.deepEqual([second.granted, second.reason], [false, 'alreadyVoted'])
    assert.deepEqual(m.status().map(s => [s.vm, s.votedEpoch, s.votedFor]), [['web', 1, 'b']])
  })

  it('never reuses a round number after a restart', () => {
    let now = 0
    const records: PersistRecord[] = []
    const seqs = new Set<number>()
    for (let life = 0; life < 3; life++) {
      const m = OwnershipMachine.restore({ self: 'a', voters: A_B_W, vms: [WEB], random: new SeededRandom(life), now }, records)
      for (let i = 0; i < 50; i++) {
        const out = m.tick(now)
        records.push(...out.persist)
        for (const s of out.send) {
          if (s.msg.type !== 'renew' || s.to !== 'b') continue
          assert.ok(!seqs.has(s.msg.seq), `seq ${s.msg.seq} reused`)
          seqs.add(s.msg.seq)
        }
        now += T.renewMs
      }
    }
    assert.equal(seqs.size, 150)
  })
})

describe('OwnershipMachine: planned failover and starts', () => {
  it('runs the planned sequence: stop, ship, release, election at epoch+1, demote', () => {
    const c = new MiniCluster({ voters: A_B_W, vms: [WEB], autoDriver: true })
    c.input('b', { type: 'replicaApplied', vm: 'web', generation: { epoch: 0, generation: 7 } })
    c.advance(6000) // past b's quiet period after boot
    c.input('a', { type: 'plannedFailover', vm: 'web', to: 'b' })
    const aEvents = c.events('a').map(e => e.ev)
    const iStop = aEvents.findIndex(e => e.type === 'stop')
    const iShip = aEvents.findIndex(e => e.type === 'shipFinal')
    assert.deepEqual(aEvents[iStop], { type: 'stop', vm: 'web', reason: 'planned' })
    assert.deepEqual(aEvents[iShip], { type: 'shipFinal', vm: 'web', to: 'b' })
    assert.ok(iStop < iShip)
    // nothing moves until the final generation is shipped
    c.advance(2000)
    assert.deepEqual(c.events('b', 'elected'), [])
    assert.deepEqual(c.runners('web'), [])
    const final = { epoch: 0, generation: 8 }
    c.input('b', { type: 'replicaApplied', vm: 'web', generation: final })
    const t0 = c.time
    c.input('a', { type: 'finalGenerationShipped', vm: 'web', generation: final })
    c.advance(500)
    const elected = c.events('b', 'elected')
    assert.deepEqual(elected.map(e => e.ev), [{ type: 'elected', vm: 'web', epoch: 1, forced: false }])
    assert.ok((elected[0]?.at ?? Infinity) - t0 < 50, 'no waiting for leases or detectors')
    assert.deepEqual(c.events('b', 'finalize').map(e => e.ev), [{ type: 'finalize', vm: 'web', generation: final }])
    assert.deepEqual(c.runners('web'), ['b'])
    assert.deepEqual(c.events('a', 'demoted').map(e => e.ev), [{ type: 'demoted', vm: 'web', owner: 'b', epoch: 1 }])
    // the old owner never started it again
    assert.equal(c.events('a', 'start').length, 1)
  })

  it('a released owner that restarts does not start the VM again', () => {
    const c = new MiniCluster({ voters: A_B_W, vms: [WEB] })
    c.input('b', { type: 'replicaApplied', vm: 'web', generation: GEN0 })
    c.advance(3000)
    c.cut('a', 'b') // b will never hear the release
    c.cut('a', 'w')
    c.input('a', { type: 'plannedFailover', vm: 'web', to: 'b' })
    c.input('a', { type: 'finalGenerationShipped', vm: 'web', generation: GEN0 })
    c.kill('a')
    c.restart('a')
    c.advance(20_000)
    assert.equal(c.events('a', 'start').length, 1)
    assert.equal(c.status('a', 'web').released, true)
  })

  it('starts VMs in start order, at most maxConcurrentStarts un-acknowledged at a time', () => {
    const vms: VmSpec[] = ['e', 'd', 'c', 'b', 'a'].map((n, i) => ({ name: `vm-${n}`, home: 'a', replicateTo: ['b'], startOrder: i < 2 ? 5 : 1 }))
    const c = new MiniCluster({ voters: A_B_W, vms, maxConcurrentStarts: 2, autoDriver: false })
    c.advance(300)
    const starts = (): string[] => c.events('a', 'start').map(e => (e.ev as { vm: string }).vm)
    assert.deepEqual(starts(), ['vm-a', 'vm-b'])
    c.advance(5000) // no acknowledgement: nothing more starts
    assert.deepEqual(starts(), ['vm-a', 'vm-b'])
    c.input('a', { type: 'started', vm: 'vm-b' })
    assert.deepEqual(starts(), ['vm-a', 'vm-b', 'vm-c'])
    c.input('a', { type: 'startFailed', vm: 'vm-a' })
    assert.deepEqual(starts(), ['vm-a', 'vm-b', 'vm-c', 'vm-d'])
    c.input('a', { type: 'started', vm: 'vm-c' })
    c.input('a', { type: 'started', vm: 'vm-d' })
    assert.deepEqual(starts(), ['vm-a', 'vm-b', 'vm-c', 'vm-d', 'vm-e'])
    // the failed one is retried after startRetryMs
    c.input('a', { type: 'started', vm: 'vm-e' })
    c.advance(T.startRetryMs + T.startCoalesceMs + 10)
    assert.deepEqual(starts(), ['vm-a', 'vm-b', 'vm-c', 'vm-d', 'vm-e', 'vm-a'])
  })
})

describe('OwnershipMachine: the paused owner', () => {
  it('wakes up past its fence, stops before doing anything else, then learns it was replaced', () => {
    const c = running(A_B_W)
    c.pause('a')
    c.setViewOfAll('a', 'dead')
    c.advance(15_000)
    assert.deepEqual(c.runners('web').sort(), ['a', 'b']) // the fake driver knows nothing of watchdogs...
    const bStart = c.events('b', 'start')[0]?.at ?? Infinity
    // ...but a's last watchdog deadline was well before b started
    const lastDeadline = Math.max(...c.events('a', 'watchdog').map(e => (e.ev as { deadline: number }).deadline))
    assert.ok(lastDeadline < bStart)
    c.resume('a')
    const after = c.events('a').filter(e => e.at === c.time).map(e => e.ev)
    assert.deepEqual(after[0], { type: 'stop', vm: 'web', reason: 'lease-lost' })
    c.advance(2000)
    assert.equal(c.status('a', 'web').owner, 'b')
    assert.deepEqual(c.runners('web'), ['b'])
  })
})

describe('OwnershipMachine: construction', () => {
  it('refuses inconsistent configuration with ERR_OWNERSHIP_CONFIG', () => {
    const base = { self: 'a', voters: A_B_W, vms: [WEB], random: new SeededRandom(1), now: 0 }
    const bad = [
      { ...base, self: 'z' },
      { ...base, voters: [...A_B_W, { id: 'a', role: 'host' as const }] },
      { ...base, vms: [{ ...WEB, home: 'w' }] },
      { ...base, vms: [WEB, WEB] },
      { ...base, maxConcurrentStarts: 0 }
    ]
    for (const b of bad) {
      assert.throws(() => new OwnershipMachine(b), (err: Error & { code?: string }) => err.name === 'OwnershipConfigError' && err.code === 'ERR_OWNERSHIP_CONFIG')
    }
  })

  it('nextDeadline is always in the future, so a driver never spins', () => {
    const m = new OwnershipMachine({ self: 'a', voters: A_B_W, vms: [WEB], random: new SeededRandom(1), now: 0 })
    let now = 0
    for (let i = 0; i < 100; i++) {
      m.tick(now)
      const d = m.nextDeadline()
      assert.ok(d !== undefined && d > now)
      now = d
    }
  })
})

describe('OwnershipMachine: getting unstuck', () => {
  it('an owner whose renewals are refused for a failed candidate\'s epoch wins its VM back under a higher epoch', () => {
    // b stood for epoch 1 while a was away and voted for itself; a returns and b refuses its renewals.
    const c = running(A_B)
    c.cut('a', 'b')
    c.setViewOfAll('a', 'dead')
    c.input('b', { type: 'operatorFailover', vm: 'web' })
    c.advance(8000)
    assert.equal(c.status('b', 'web').votedEpoch, 1)
    assert.deepEqual(c.runners('web'), []) // a lost its lease (b is needed for a majority of 2)
    c.heal()
    c.setViewOfAll('a', 'alive')
    c.advance(15_000)
    assert.deepEqual(c.runners('web'), ['a'])
    const s = c.status('a', 'web')
    assert.ok(s.ownedHere && s.epoch >= 2)
    assert.deepEqual(c.events('a', 'finalize'), [], 'the owner\'s own disk is the source: nothing to finalize')
    assert.equal(c.status('b', 'web').owner, 'a')
  })

  it('repeats a release that was lost', () => {
    const c = running(A_B_W)
    c.advance(3000)
    c.input('a', { type: 'plannedFailover', vm: 'web', to: 'b' })
    c.cut('a', 'b'); c.cut('a', 'w')
    c.input('a', { type: 'finalGenerationShipped', vm: 'web', generation: GEN0 })
    c.advance(3000)
    assert.deepEqual(c.events('b', 'elected'), [])
    c.heal()
    c.advance(3000)
    assert.deepEqual(c.runners('web'), ['b'])
  })

  it('when the planned target never takes over, the old owner takes its VM back', () => {
    const c = running(A_B_W)
    c.advance(3000)
    c.input('a', { type: 'plannedFailover', vm: 'web', to: 'b' })
    c.kill('b')
    c.input('a', { type: 'finalGenerationShipped', vm: 'web', generation: GEN0 })
    c.advance(T.plannedGraceMs - 500)
    assert.deepEqual(c.runners('web'), [])
    c.advance(3000)
    assert.deepEqual(c.runners('web'), ['a'])
    assert.equal(c.status('a', 'web').released, false)
    assert.equal(c.events('a', 'start').length, 2)
  })

  it('a planned failover to a host the owner sees dead is refused at once; the VM keeps running', () => {
    const c = running(A_B_W)
    c.advance(3000)
    c.kill('b')
    c.setViewOfAll('b', 'dead')
    c.input('a', { type: 'plannedFailover', vm: 'web', to: 'b' })
    assert.deepEqual(c.events('a', 'failoverRefused').map(e => e.ev), [{ type: 'failoverRefused', vm: 'web', reason: 'target-dead' }])
    assert.deepEqual(c.events('a', 'stop'), [])
    c.advance(3000)
    assert.deepEqual(c.runners('web'), ['a'])
  })

  // Election sim seed 7557: the released owner missed the target's win, the target ran the VM at
  // epoch 1 (its replication reached the old owner) and died. The old owner's reclaim was refused
  // as stale for ever and it ignored the operator, so the VM stayed off.
  function supersededRelease (failover: 'auto' | 'manual', replicateTo: string[]): MiniCluster {
    const vm: VmSpec = { name: 'web', home: 'a', replicateTo, failover }
    const c = new MiniCluster({ voters: A_B_C, vms: [vm] })
    for (const r of replicateTo) c.input(r, { type: 'replicaApplied', vm: 'web', generation: GEN0 })
    c.advance(6000)
    c.input('a', { type: 'plannedFailover', vm: 'web', to: 'b' })
    c.block('b', 'a'); c.block('c', 'a') // a's release goes out; a hears nothing after it
    c.input('a', { type: 'finalGenerationShipped', vm: 'web', generation: GEN0 })
    c.advance(3000)
    assert.deepEqual(c.runners('web'), ['b'])
    assert.equal(c.status('a', 'web').owner, 'a', 'a missed the new owner')
    // b's replication of epoch 1 reaches a (and c, when it holds a replica)
    const later = { epoch: 1, generation: 5 }
    for (const id of ['a', ...replicateTo.filter(r => r !== 'b')]) c.input(id, { type: 'replicaApplied', vm: 'web', generation: later })
    c.kill('b')
    c.heal()
    c.setViewOfAll('b', 'dead')
    return c
  }

  it('a released owner whose release was overtaken obeys the operator and starts from the later replica', () => {
    const c = supersededRelease('manual', ['b', 'c'])
    c.advance(20_000)
    assert.deepEqual(c.runners('web'), [], 'manual: nobody starts it alone')
    c.input('a', { type: 'operatorFailover', vm: 'web' })
    c.advance(5000)
    assert.deepEqual(c.runners('web'), ['a'])
    assert.deepEqual(c.events('a', 'finalize').map(e => e.ev), [{ type: 'finalize', vm: 'web', generation: { epoch: 1, generation: 5 } }])
    assert.ok(c.status('a', 'web').epoch >= 2)
  })

  it('a released owner whose release was overtaken never reclaims its stale disk: it fails over to the later replica', () => {
    // c holds no replica, so only a can restart web; its own disk predates b's epoch. (Before the
    // fix this held too, by another path: c's refusal of the reclaim named the owner a missed.)
    const c = supersededRelease('auto', ['b'])
    c.advance(20_000)
    assert.deepEqual(c.runners('web'), ['a'])
    assert.deepEqual(c.events('a', 'finalize').map(e => e.ev), [{ type: 'finalize', vm: 'web', generation: { epoch: 1, generation: 5 } }])
  })

  it('restarts a VM that stopped on its own, after startRetryMs', () => {
    const c = running(A_B_W)
    c.node('a').running.delete('web')
    c.input('a', { type: 'stopped', vm: 'web' })
    c.advance(T.startRetryMs - 100)
    assert.deepEqual(c.runners('web'), [])
    c.advance(500)
    assert.deepEqual(c.runners('web'), ['a'])
  })

  it('a voter does not wait out a silent dead voter before retrying when a promise was the only obstacle', () => {
    const vm: VmSpec = { name: 'web', home: 'a', replicateTo: ['b', 'c'] }
    // w hears the owner 40 ms late, so its promise outlasts the others' by 40 ms
    const c = new MiniCluster({ voters: [...A_B_C, { id: 'w', role: 'witness' }], vms: [vm], linkLatencyMs: { 'a>w': 40 } })
    c.input('b', { type: 'replicaApplied', vm: 'web', generation: GEN0 })
    c.input('c', { type: 'replicaApplied', vm: 'web', generation: GEN0 })
    c.advance(6000)
    const crash = c.time
    c.kill('a')
    c.advance(3000)
    c.setViewOfAll('a', 'dead')
    c.advance(10_000)
    const start = c.events('b', 'start')[0] ?? c.events('c', 'start')[0]
    assert.ok(start !== undefined)
    // last promise ended ≤ crash + leaseMs·(1+d); the winner started within a short retry of that
    assert.ok(start.at - crash < T.leaseMs * (1 + T.driftRatio) + 300, `${start.at - crash}`)
  })
})

describe('OwnershipMachine: --force and its risk', () => {
  it('with three voters, --force during a partition runs the VM twice until the partition heals (the documented risk)', () => {
    const c = running(A_B_W)
    c.isolate('b') // a still has w: it keeps its lease
    c.setView('b', 'a', 'dead')
    c.setView('b', 'w', 'dead')
    c.input('b', { type: 'operatorFailover', vm: 'web', force: true })
    c.advance(8000)
    assert.deepEqual(c.runners('web').sort(), ['a', 'b'])
    c.heal()
    c.advance(3000)
    assert.deepEqual(c.runners('web'), ['b'])
    assert.ok(c.events('a', 'demoted').length === 1)
  })

  it('a forced owner that meets another claim on its epoch yields', () => {
    const c = running(A_B)
    c.kill('a')
    c.setViewOfAll('a', 'dead')
    c.input('b', { type: 'operatorFailover', vm: 'web', force: true })
    c.advance(8000)
    assert.deepEqual(c.runners('web'), ['b'])
    c.input('b', { type: 'message', from: 'a', msg: { type: 'renewNack', vm: 'web', epoch: 1, seq: 1, reason: 'notOwner', currentEpoch: 1, owner: 'a' } })
    assert.deepEqual(c.runners('web'), [])
    assert.deepEqual(c.events('b', 'demoted').map(e => e.ev), [{ type: 'demoted', vm: 'web', owner: 'a', epoch: 1 }])
  })
})

describe('OwnershipMachine: a voter\'s promise after a reclaimed release', () => {
  it('a late copy of the old release does not waive the promise of the grant that followed it', () => {
    // Seen in the chaos simulation (seed 2097): a owns web, releases it to b (planned) and,
    // b not taking over, reclaims it at epoch 1 — while still repeating its release of epoch 0.
    // A copy of that release reached voter c after c's grant to a; it erased c's promise, so
    // c granted epoch 2 to b while a's lease of epoch 1 still ran.
    const voters: VoterSpec[] = [{ id: 'a', role: 'host' }, { id: 'b', role: 'host' }, { id: 'c', role: 'host' }]
    const c = new OwnershipMachine({ self: 'c', voters, vms: [{ name: 'web', home: 'a', replicateTo: ['b'] }], timing: T, random: new SeededRandom(1), now: 0 })
    let now = T.leaseMs * 2 // past the start-up quiet period
    const gen = { epoch: 0, generation: 14 }
    const release = { type: 'release', vm: 'web', epoch: 0, to: 'b', generation: gen } as const
    c.step(now, { type: 'member', id: 'a', state: 'alive' })
    c.step(now, { type: 'member', id: 'b', state: 'alive' })
    c.step(now, { type: 'message', from: 'b', msg: { type: 'replicaReport', vm: 'web', generation: gen } })
    c.step(now, { type: 'message', from: 'a', msg: release })
    const grant = c.step(now += 10, { type: 'message', from: 'a', msg: { type: 'requestVote', vm: 'web', epoch: 1, seq: 15, candidate: 'a', generation: { epoch: 0, generation: Number.MAX_SAFE_INTEGER } } })
    assert.ok(grant.send.some(s => s.to === 'a' && s.msg.type === 'vote' && s.msg.granted), JSON.stringify(grant.send))
    c.step(now += 5, { type: 'message', from: 'a', msg: release }) // the late copy
    c.step(now += 20, { type: 'message', from: 'a', msg: { type: 'owner', vm: 'web', epoch: 1, owner: 'a' } })
    c.step(now += 1400, { type: 'member', id: 'a', state: 'dead' })
    const out = c.step(now += 1000, { type: 'message', from: 'b', msg: { type: 'requestVote', vm: 'web', epoch: 2, seq: 1, candidate: 'b', generation: gen } })
    const vote = out.send.find(s => s.to === 'b' && s.msg.type === 'vote')?.msg as Vote | undefined
    assert.equal(vote?.granted, false, JSON.stringify(out.send))
    assert.equal(vote?.reason, 'promised')
  })
})

describe('OwnershipMachine: an operator failover on a node with a stale view', () => {
  // Seen in the chaos simulation (seed 1108): a released web to b (planned); b won epoch 1 and
  // crashed, and c missed b's announcement in a loss burst. The operator then asked c to take
  // web over. The votes that came back named owner b at epoch 1; c abandoned its request as
  // "superseded" — though its round (epoch 2) already outbid epoch 1 and b was dead — and web
  // stayed off for good.
  const voters: VoterSpec[] = [...A_B_C, { id: 'w', role: 'witness' }]
  const manual: VmSpec = { name: 'web', home: 'a', replicateTo: ['b', 'c'], failover: 'manual' }

  function staleC (votedForB: boolean): { c: OwnershipMachine, now: number } {
    const c = new OwnershipMachine({ self: 'c', voters, vms: [manual], timing: T, random: new SeededRandom(1), now: 0 })
    let now = T.leaseMs * 2 // past the start-up quiet period
    for (const id of ['a', 'b', 'w']) c.step(now, { type: 'member', id, state: 'alive' })
    c.step(now, { type: 'replicaApplied', vm: 'web', generation: GEN0 })
    c.step(now, { type: 'message', from: 'a', msg: { type: 'release', vm: 'web', epoch: 0, to: 'b', generation: GEN0 } })
    if (votedForB) {
      const out = c.step(now += 10, { type: 'message', from: 'b', msg: { type: 'requestVote', vm: 'web', epoch: 1, seq: 1, candidate: 'b', generation: GEN0 } })
      assert.ok(out.send.some(s => s.msg.type === 'vote' && s.msg.granted), JSON.stringify(out.send))
    }
    // b's owner announcement never arrives; b crashes; its promise runs out
    now += T.leaseMs * 3
    c.step(now, { type: 'member', id: 'b', state: 'dead' })
    return { c, now }
  }

  function requestOf (out: OwnershipOutput): { epoch: number, seq: number } | undefined {
    const m = out.send.find(s => s.msg.type === 'requestVote')?.msg
    return m?.type === 'requestVote' ? { epoch: m.epoch, seq: m.seq } : undefined
  }

  function vote (r: { epoch: number, seq: number }, granted: boolean): Vote {
    return { type: 'vote', vm: 'web', epoch: r.epoch, seq: r.seq, candidate: 'c', granted, reason: granted ? 'granted' : 'staleEpoch', currentEpoch: 1, owner: 'b', retryAfterMs: 0 }
  }

  it('wins with the votes of a round that outbids the owner it learns of from them', () => {
    const { c, now } = staleC(true)
    const r = requestOf(c.step(now, { type: 'operatorFailover', vm: 'web' }))
    assert.equal(r?.epoch, 2)
    const evs: OwnershipEvent[] = []
    evs.push(...c.step(now + 5, { type: 'message', from: 'w', msg: vote(r, true) }).events)
    evs.push(...c.step(now + 6, { type: 'message', from: 'a', msg: vote(r, true) }).events)
    assert.deepEqual(evs.filter(e => e.type === 'failoverAbandoned'), [])
    assert.deepEqual(evs.filter(e => e.type === 'elected'), [{ type: 'elected', vm: 'web', epoch: 2, forced: false }])
  })

  it('keeps the request when the owner it learns of is dead in its view, and stands again above it', () => {
    const { c, now } = staleC(false)
    const r1 = requestOf(c.step(now, { type: 'operatorFailover', vm: 'web' }))
    assert.equal(r1?.epoch, 1)
    const refused = c.step(now + 5, { type: 'message', from: 'w', msg: vote(r1, false) })
    assert.deepEqual(refused.events.filter(e => e.type === 'failoverAbandoned'), [])
    const r2 = requestOf(refused)
    assert.equal(r2?.epoch, 2)
    const won = c.step(now + 10, { type: 'message', from: 'w', msg: vote(r2, true) }).events
      .concat(c.step(now + 11, { type: 'message', from: 'a', msg: vote(r2, true) }).events)
    assert.deepEqual(won.filter(e => e.type === 'elected'), [{ type: 'elected', vm: 'web', epoch: 2, forced: false }])
  })

  it('still gives the request up when the owner it learns of is alive', () => {
    const { c, now } = staleC(false)
    c.step(now, { type: 'member', id: 'b', state: 'alive' })
    const r1 = requestOf(c.step(now, { type: 'operatorFailover', vm: 'web' }))
    assert.equal(r1?.epoch, 1)
    const refused = c.step(now + 5, { type: 'message', from: 'w', msg: vote(r1, false) })
    assert.deepEqual(refused.events.filter(e => e.type === 'failoverAbandoned'), [{ type: 'failoverAbandoned', vm: 'web', reason: 'superseded' }])
  })
})

describe('OwnershipMachine: a planned failover whose final generation cannot be shipped', () => {
  // Seen in the chaos simulation (seed 9483): a planned failover's target was cut off and then
  // crashed while the owner shipped the final generation; the owner kept its VM off for good,
  // waiting for a ship that could not finish.
  it('gives the handoff up when the target dies, and runs the VM again under its own lease', () => {
    const c = running(A_B_C)
    c.input('a', { type: 'plannedFailover', vm: 'web', to: 'b' })
    c.advance(10)
    assert.equal(c.events('a', 'shipFinal').length, 1)
    assert.deepEqual(c.runners('web'), [])
    c.kill('b')
    c.setViewOfAll('b', 'dead')
    c.advance(T.startRetryMs + 1000)
    assert.deepEqual(c.events('a', 'failoverAbandoned').map(e => e.ev), [{ type: 'failoverAbandoned', vm: 'web', reason: 'target-dead' }])
    assert.deepEqual(c.runners('web'), ['a'])
    // the ship still in flight ends after all: too late, nothing is released
    c.input('a', { type: 'finalGenerationShipped', vm: 'web', generation: GEN0 })
    c.advance(5000)
    assert.equal(c.status('a', 'web').released, false)
    assert.deepEqual(c.runners('web'), ['a'])
    assert.equal(c.status('a', 'web').epoch, 0)
  })

  it('gives the handoff up when the driver reports the ship failed', () => {
    const c = running(A_B_C)
    c.input('a', { type: 'plannedFailover', vm: 'web', to: 'b' })
    c.advance(10)
    c.input('a', { type: 'finalShipFailed', vm: 'web' })
    c.advance(T.startRetryMs + 1000)
    assert.deepEqual(c.events('a', 'failoverAbandoned').map(e => e.ev), [{ type: 'failoverAbandoned', vm: 'web', reason: 'ship-failed' }])
    assert.deepEqual(c.runners('web'), ['a'])
    assert.deepEqual(c.events('b', 'elected'), [])
  })
})

describe('OwnershipMachine: an owner change learned late', () => {
  it('a holder that missed the owner announcement learns the owner from its runState (only the owner of an epoch reports at it)', () => {
    const vm: VmSpec = { name: 'web', home: 'a', replicateTo: ['b', 'c'] }
    const c = running(A_B_C, [vm])
    assert.equal(c.status('c', 'web').owner, 'a')
    // b's run state at epoch 3 reaches c, whose view still says a at epoch 0
    c.input('c', { type: 'message', from: 'b', msg: { type: 'runState', vm: 'web', epoch: 3, running: true } })
    const s = c.status('c', 'web')
    assert.equal(s.owner, 'b')
    assert.equal(s.epoch, 3)
    assert.ok(c.events('c', 'owner').some(e => (e.ev as Extract<OwnershipEvent, { type: 'owner' }>).owner === 'b'))
    // an older epoch's report changes nothing
    c.input('c', { type: 'message', from: 'a', msg: { type: 'runState', vm: 'web', epoch: 0, running: false } })
    assert.equal(c.status('c', 'web').owner, 'b')
  })
})
