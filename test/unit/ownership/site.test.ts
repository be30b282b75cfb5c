/**
 * Site failover (daemon/ownership/site.ts) against a fake election view: which VMs belong to a
 * site, the start order, the target per VM (best holder outside the site with room), the report
 * (node, recovery point and its age, time to running), the planned and drill modes.
 */
import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { silentLogger } from '../../../daemon/log.ts'
import { SiteFailover, startOrder } from '../../../daemon/ownership/site.ts'
import type { SiteFailoverComponents } from '../../../daemon/ownership/site.ts'
import type { VmOwnershipStatus, VmSpec } from '../../../daemon/ownership/types.ts'

const SITES = { a1: 'east', a2: 'east', b1: 'west', b2: 'west' }

function st (vm: string, owner: string, epoch = 0): VmOwnershipStatus {
  return { vm, owner, epoch, ownedHere: false, run: 'off', leaseUntil: 0, fenceUntil: 0, forced: false, released: false, votedEpoch: 0, votedFor: null, applied: null, candidateEpoch: null, placement: null, waitingFor: [] }
}

function world (self: string) {
  const clock = new ManualClock(0, 1_700_000_100_000)
  const specs: Record<string, VmSpec> = {
    db: { name: 'db', home: 'a1', replicateTo: ['b1', 'b2'], priority: 5 },
    app: { name: 'app', home: 'a1', replicateTo: ['b1'], startAfter: ['db'], priority: 9 },
    web: { name: 'web', home: 'a2', replicateTo: ['b2'] },
    big: { name: 'big', home: 'a2', replicateTo: ['b1'] },
    west1: { name: 'west1', home: 'b1', replicateTo: ['a1'] }
  }
  const owners: Record<string, [string, number]> = { db: ['a1', 0], app: ['a1', 0], web: ['a2', 0], big: ['a2', 0], west1: ['b1', 0] }
  const asked: string[] = []
  const c: SiteFailoverComponents = {
    clock,
    log: silentLogger(),
    ownership: {
      status: () => Object.entries(owners).map(([vm, [o, e]]) => st(vm, o, e)),
      specOf: (vm) => specs[vm],
      runsOn: (vm) => { const o = owners[vm]; return o !== undefined && o[1] > 0 ? o[0] : null },
      holders: (vm) => {
        if (vm === 'big') return [{ id: 'b1', generation: { epoch: 0, generation: 7 }, fits: false }]
        return (specs[vm]?.replicateTo ?? []).map(id => ({ id, generation: { epoch: 0, generation: 7 }, fits: true }))
      },
      operatorFailover: async (vm, o) => { asked.push(`${vm}->${o.to ?? self}`); owners[vm] = [o.to ?? self, 1]; clock.advance(700) },
      plannedFailover: async (vm, to) => { asked.push(`planned ${vm}->${to}`); owners[vm] = [to, 1] }
    },
    points: async () => ({ replicas: [{ points: [{ generation: 7, createdAtMs: 1_700_000_090_000 }] }] }),
    tests: {
      startTest: async (vm) => { clock.advance(2000); return { node: self, point: 'p7', generation: 7, pointCreatedAt: 1_700_000_095_000, testName: `${vm}-test` } },
      cleanup: async (vm) => ({ removed: true, testName: `${vm}-test` })
    }
  }
  return { clock, c, asked, sf: new SiteFailover(c, { self, sites: SITES }) }
}

describe('site failover', () => {
  it('orders a site\'s VMs: startAfter first, then priority', () => {
    const order = startOrder([
      { vm: 'app', spec: { name: 'app', home: 'a', replicateTo: [], priority: 9, startAfter: ['db'] } },
      { vm: 'web', spec: { name: 'web', home: 'a', replicateTo: [], priority: 1 } },
      { vm: 'db', spec: { name: 'db', home: 'a', replicateTo: [], priority: 5 } }
    ]).map(x => x.vm)
    assert.deepEqual(order, ['db', 'app', 'web'])
  })

  it('unplanned: every VM of the site to its best holder outside it, in start order, with RPO and RTO; a VM with no room anywhere stays, reported', async () => {
    const { sf, asked } = world('b1')
    const r = await sf.run('east', { planned: false, test: false, cleanup: false, timeoutMs: 10_000 })
    assert.deepEqual(asked, ['db->b1', 'app->b1', 'web->b2'])
    const by = Object.fromEntries(r.vms.map(v => [v.vm, v]))
    assert.equal(by.db?.state, 'running')
    assert.equal(by.db?.node, 'b1')
    assert.deepEqual(by.db?.point, { generation: 7, createdAtMs: 1_700_000_090_000, ageMs: 10_000 })
    assert.equal(by.web?.node, 'b2')
    assert.equal(by.web?.rtoMs, 2100)
    assert.equal(by.big?.state, 'no-room')
    assert.equal(r.vms.some(v => v.vm === 'west1'), false)
  })

  it('unplanned: the RPO of a VM started here is known, though its replica (and its points) became the running copy', async () => {
    const { sf, c } = world('b1')
    const moved = new Set<string>()
    const failover = c.ownership.operatorFailover
    c.ownership.operatorFailover = async (vm, o) => { await failover(vm, o); if (o.to === undefined) moved.add(vm) }
    // as the replication service does once a replica is finalized into the VM that runs here
    c.points = async (vm) => {
      if (moved.has(vm)) throw new Error(`no replica of ${vm} here`)
      return { replicas: [{ points: [{ generation: 7, createdAtMs: 1_700_000_090_000 }] }] }
    }
    const r = await sf.run('east', { planned: false, test: false, cleanup: false, timeoutMs: 10_000 })
    const db = r.vms.find(v => v.vm === 'db')
    assert.equal(db?.node, 'b1')
    assert.deepEqual(db?.point, { generation: 7, createdAtMs: 1_700_000_090_000, ageMs: 10_000 })
  })

  it('planned: runs on the owner for its own VMs and names the owner of the others', async () => {
    const { sf, asked } = world('a2')
    const r = await sf.run('east', { planned: true, test: false, cleanup: false, timeoutMs: 5000 })
    assert.deepEqual(asked, ['planned web->b2'])
    assert.equal(r.vms.find(v => v.vm === 'db')?.state, 'elsewhere')
    assert.match(r.vms.find(v => v.vm === 'db')?.detail ?? '', /run it on a1/)
  })

  it('drill: boots clones of what this node holds and points at the holder of the rest; cleanup removes them', async () => {
    const { sf } = world('b2')
    const r = await sf.run('east', { planned: false, test: true, cleanup: false })
    const by = Object.fromEntries(r.vms.map(v => [v.vm, v]))
    assert.equal(by.db?.state, 'running')
    assert.deepEqual(by.db?.point, { generation: 7, createdAtMs: 1_700_000_095_000, ageMs: 7000 })
    assert.equal(by.db?.rtoMs, 2000)
    assert.equal(by.app?.state, 'elsewhere')
    assert.match(by.app?.detail ?? '', /b1/)
    const c = await sf.run('east', { planned: false, test: true, cleanup: true })
    assert.equal(c.vms.find(v => v.vm === 'web')?.state, 'removed')
  })
})
