/**
 * Capacity, priority and start order in the ownership machine: a survivor takes only what fits,
 * highest priority first, starts VMs after the ones they need, and takes the rest when room
 * appears. Room and run-state messages round-trip through the codec.
 */
import assert from 'node:assert/strict'
import type { OwnershipEvent, VmSpec, VoterSpec } from '../../../daemon/ownership/types.ts'
import { decodeElectionMessage, encodeElectionMessage } from '../../../protocol/election/codec.ts'
import type { ElectionMessage } from '../../../protocol/election/messages.ts'
import { MiniCluster } from './mini-cluster.ts'

const GEN0 = { epoch: 0, generation: 0 }
// three hosts and two witnesses: a lone surviving host still has a majority (c + w1 + w2)
const VOTERS: VoterSpec[] = [
  { id: 'a', role: 'host' }, { id: 'b', role: 'host' }, { id: 'c', role: 'host' },
  { id: 'w1', role: 'witness' }, { id: 'w2', role: 'witness' }
]
const GiB = 1024

function vm (name: string, home: string, extra: Partial<VmSpec> = {}): VmSpec {
  return { name, home, replicateTo: ['c'], memoryMiB: 2 * GiB, vcpus: 2, ...extra }
}

function cluster (vms: VmSpec[], capC: { memoryMiB: number, vcpus: number }, extra: Partial<ConstructorParameters<typeof MiniCluster>[0]> = {}): MiniCluster {
  const c = new MiniCluster({ voters: VOTERS, vms, capacityOf: { c: capC }, ...extra })
  for (const v of vms) for (const r of v.replicateTo) c.input(r, { type: 'replicaApplied', vm: v.name, generation: GEN0 })
  c.advance(3000)
  for (const v of vms) assert.deepEqual(c.runners(v.name), [v.home], `${v.name} runs at home`)
  return c
}

function kill (c: MiniCluster, ...ids: string[]): void {
  for (const id of ids) { c.kill(id); c.setViewOfAll(id, 'dead') }
}

function startOrder (c: MiniCluster, id: string): string[] {
  return c.events(id, 'start').map(e => (e.ev as Extract<OwnershipEvent, { type: 'start' }>).vm)
}

describe('OwnershipMachine: capacity, priority, start order', () => {
  it('two hosts of three die: the survivor starts what fits, highest priority first, and keeps the rest off, visibly', () => {
    const vms = [
      vm('db', 'a', { priority: 10 }),
      vm('app', 'a', { priority: 5, startAfter: ['db'] }),
      vm('batch', 'b', { priority: 1 })
    ]
    const c = cluster(vms, { memoryMiB: 4 * GiB + 512, vcpus: 8 })
    kill(c, 'a', 'b')
    c.advance(20_000)
    assert.deepEqual(c.runners('db'), ['c'])
    assert.deepEqual(c.runners('app'), ['c'])
    assert.deepEqual(c.runners('batch'), [])
    assert.deepEqual(startOrder(c, 'c'), ['db', 'app'])
    assert.equal(c.status('c', 'batch').placement, 'no-room')
    const noRoom = c.events('c', 'noRoom').map(e => e.ev)
    assert.deepEqual(noRoom, [{ type: 'noRoom', vm: 'batch', need: { memoryMiB: 2048, vcpus: 2 }, free: { memoryMiB: 512, vcpus: 4 } }])
    // the survivor never stood for batch: nobody owns it at a higher epoch
    assert.equal(c.status('c', 'batch').epoch, 0)
    const room = c.node('c').machine.room()
    assert.deepEqual(room.used, { memoryMiB: 4096, vcpus: 4 })

    // the host returns: it is batch's owner still and runs it itself
    c.restart('b')
    c.setViewOfAll('b', 'alive')
    c.advance(15_000)
    assert.deepEqual(c.runners('batch'), ['b'])
  })

  it('a VM without room starts when room appears (capacity grows)', () => {
    const vms = [vm('db', 'a', { priority: 10 }), vm('batch', 'b', { priority: 1 })]
    const c = cluster(vms, { memoryMiB: 3 * GiB, vcpus: 8 })
    kill(c, 'a', 'b')
    c.advance(15_000)
    assert.deepEqual(c.runners('db'), ['c'])
    assert.deepEqual(c.runners('batch'), [])
    c.input('c', { type: 'capacity', capacity: { memoryMiB: 8 * GiB, vcpus: 8 } })
    c.advance(10_000)
    assert.deepEqual(c.runners('batch'), ['c'])
    assert.deepEqual(c.events('c', 'roomFound').map(e => e.ev), [{ type: 'roomFound', vm: 'batch' }])
  })

  it('a higher-priority VM gets the room even when listed last and the lower one is older', () => {
    const vms = [vm('aaa-low', 'a', { priority: 1 }), vm('zzz-high', 'b', { priority: 9 })]
    const c = cluster(vms, { memoryMiB: 2 * GiB, vcpus: 8 })
    kill(c, 'a', 'b')
    c.advance(15_000)
    assert.deepEqual(c.runners('zzz-high'), ['c'])
    assert.deepEqual(c.runners('aaa-low'), [])
  })

  it('vCPUs count like memory', () => {
    const vms = [vm('one', 'a', { vcpus: 4, memoryMiB: 1 }), vm('two', 'a', { vcpus: 4, memoryMiB: 1 })]
    const c = cluster(vms, { memoryMiB: 64 * GiB, vcpus: 6 })
    kill(c, 'a')
    c.advance(15_000)
    assert.equal(c.runners('one').length + c.runners('two').length, 1)
  })

  it('a holder without room does not stand, and the voters rank the next holder first', () => {
    const web: VmSpec = { name: 'web', home: 'a', replicateTo: ['b', 'c'], memoryMiB: 4 * GiB, vcpus: 2 }
    const c = new MiniCluster({ voters: VOTERS, vms: [web], capacityOf: { b: { memoryMiB: GiB, vcpus: 8 }, c: { memoryMiB: 8 * GiB, vcpus: 8 } } })
    c.input('b', { type: 'replicaApplied', vm: 'web', generation: GEN0 })
    c.input('c', { type: 'replicaApplied', vm: 'web', generation: GEN0 })
    c.advance(3000)
    kill(c, 'a')
    c.advance(15_000)
    assert.deepEqual(c.runners('web'), ['c'])
    assert.equal(c.events('b', 'elected').length, 0)
    assert.deepEqual(c.events('b', 'noRoom').map(e => e.ev.vm), ['web'])
  })

  it('startAfter: waits for a VM running on another host, announced by its owner', () => {
    const db: VmSpec = { name: 'db', home: 'b', replicateTo: ['c'] }
    const app: VmSpec = { name: 'app', home: 'a', replicateTo: ['c'], startAfter: ['db'] }
    const c = new MiniCluster({ voters: VOTERS, vms: [db, app], vmsOf: { a: [app, db], b: [db, app], c: [db, app], w1: [], w2: [] } })
    c.advance(3000)
    assert.deepEqual(c.runners('db'), ['b'])
    assert.deepEqual(c.runners('app'), ['a'])
    // a's start of app came after b's db was announced running
    const dbStarted = c.events('b', 'start')[0]?.at ?? Infinity
    const appStarted = c.events('a', 'start')[0]?.at ?? -1
    assert.ok(appStarted > dbStarted, `app at ${appStarted}, db at ${dbStarted}`)
    assert.equal(c.events('a', 'startAfterTimeout').length, 0)
  })

  it('startAfter: a VM that never runs holds the start for startAfterTimeoutMs, then it starts anyway with a warning', () => {
    const app: VmSpec = { name: 'app', home: 'a', replicateTo: ['c'], startAfter: ['ghost'], startAfterTimeoutMs: 5000 }
    const c = new MiniCluster({ voters: VOTERS, vms: [app] })
    c.advance(3000)
    assert.deepEqual(c.runners('app'), [])
    assert.deepEqual(c.status('a', 'app').waitingFor, ['ghost'])
    c.advance(5000)
    assert.deepEqual(c.runners('app'), ['a'])
    assert.deepEqual(c.events('a', 'startAfterTimeout').map(e => e.ev), [{ type: 'startAfterTimeout', vm: 'app', waitingFor: ['ghost'] }])
  })

  it('an operator failover honours room: refused nothing, but the VM does not start where it does not fit', () => {
    const vms = [vm('big', 'a', { memoryMiB: 16 * GiB })]
    const c = cluster(vms, { memoryMiB: 4 * GiB, vcpus: 8 })
    c.input('c', { type: 'operatorFailover', vm: 'big' })
    c.advance(5000)
    assert.deepEqual(c.runners('big'), ['a'])
    assert.equal(c.status('c', 'big').placement, 'no-room')
  })

  it('room and runState messages round-trip and bad ones are refused', () => {
    const msgs: ElectionMessage[] = [
      { type: 'room', vm: 'web', fits: true, capacity: { memoryMiB: 65536, vcpus: 32 }, free: { memoryMiB: 1024, vcpus: 0 } },
      { type: 'room', vm: 'web', fits: false, capacity: { memoryMiB: 0xffff_ffff, vcpus: 0xffff_ffff }, free: { memoryMiB: 0, vcpus: 7 } },
      { type: 'runState', vm: 'db', epoch: 7, running: true },
      { type: 'runState', vm: 'db', epoch: 0, running: false }
    ]
    for (const m of msgs) assert.deepEqual(decodeElectionMessage(encodeElectionMessage(m)), m)
    const bad = encodeElectionMessage(msgs[0] as ElectionMessage)
    bad[bad.length - 8] = 0xff // free.memoryMiB high byte: above capacity
    assert.throws(() => decodeElectionMessage(bad), { name: 'ElectionInconsistentError' })
    const flags = encodeElectionMessage(msgs[2] as ElectionMessage)
    flags[flags.length - 1] = 0x02
    assert.throws(() => decodeElectionMessage(flags), { name: 'ElectionBadFlagsError' })
  })
})
