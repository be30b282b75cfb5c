/**
 * Two hosts + a witness survive the loss of any one node (README, "Quorum facts"): losing only
 * the witness never stops a VM, and losing the replica holder leaves the VM running on its
 * owner — the owner keeps its lease through the remaining voter. After each loss the node comes
 * back and everything converges. Real daemons, LAN profile, the `command` driver with the fake
 * VM; the events log is checked for overlaps and unexpected stops in every phase.
 *
 * One cluster for the file: the cases run in order on it (a witness loss, then a replica
 * holder loss); a case after a failed one is skipped rather than run on a broken cluster.
 */
import assert from 'node:assert/strict'
import { open, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import { killAllVms } from '../../helpers/fake-vm.ts'
import {
  VM, startFailoverCluster, runningOn, ownerSeenBy, ownershipOf, vmInstances, vmProcessAlive, replicaGeneration, allAlive, holdsFor, dumpFailure
} from '../../helpers/failover.ts'

/** How long a loss is watched for stops: twice the LAN lease, well past suspicion + lease expiry. */
const WATCH_MS = 10_000

describe('integration: failover — two hosts + witness lose one node', function () {
  this.timeout(120_000)
  let cluster: LocalCluster | undefined
  let broken = false

  before(async function () {
    this.timeout(120_000)
    try {
      const { c } = await startFailoverCluster([{ name: 'a' }, { name: 'b' }, { name: 'w', role: 'witness' }], (x) => { cluster = x })
      await c.waitFor('every member alive in every view', () => allAlive(c), 20_000, 200)
      assert.equal((await vmInstances(c)).list.length, 1)
    } catch (err) {
      if (cluster !== undefined) await dumpFailure(cluster, 'setup')
      throw err
    }
  })

  beforeEach(function () { if (broken || cluster === undefined) this.skip() })

  afterEach(async function () {
    if (this.currentTest?.state === 'failed') {
      broken = true
      if (cluster !== undefined) await dumpFailure(cluster, this.currentTest.title)
    }
  })

  after(async () => {
    const c = cluster
    cluster = undefined
    if (c === undefined) return
    await killAllVms(c.dir)
    await c.destroy()
  })

  /** vm1 runs on a only, in the one instance it started with, and nothing stopped it. */
  async function vmUndisturbed (c: LocalCluster): Promise<string | undefined> {
    const { list, overlapping } = await vmInstances(c)
    if (overlapping.length > 0) return `overlap ${JSON.stringify(overlapping)}`
    if (list.length !== 1 || list[0]?.node !== 'a' || list[0].to !== Infinity) return `vm1 instances changed: ${JSON.stringify(list)}`
    if (!await vmProcessAlive(c, 'a')) return 'a\'s VM process is gone'
    const events = await readFile(join(c.dir, 'events.log'), 'utf8')
    if (/ stop /.test(events)) return `a stop was logged: ${events}`
    return undefined
  }

  it('kill -9 of the witness never stops the VM on its owner; the witness rejoins', async () => {
    const c = cluster as LocalCluster
    const before = await ownershipOf(c, 'a')
    const leaseBefore = before.vms.find(v => v.vm === VM)?.leaseUntil ?? -Infinity
    await c.kill('w')
    const killedAt = Date.now()
    await c.waitFor('a and b see the witness dead', async () => (await c.memberState('a', 'w')) === 'dead' && (await c.memberState('b', 'w')) === 'dead', 15_000, 100)
    await holdsFor('witness dead: vm1 keeps running on a', Math.max(0, killedAt + WATCH_MS - Date.now()), async () => {
      const bad = await vmUndisturbed(c)
      if (bad !== undefined) return bad
      if (!await runningOn(c, 'a')) return 'a no longer reports vm1 running'
      return undefined
    })
    // a kept renewing its lease with b's acks alone (a majority of 3)
    const after = await ownershipOf(c, 'a')
    const mine = after.vms.find(v => v.vm === VM)
    assert.ok(mine !== undefined && mine.ownedHere && mine.run === 'running', JSON.stringify(mine))
    assert.ok(mine.leaseUntil > leaseBefore + WATCH_MS / 2, `lease not renewed: ${leaseBefore} → ${mine.leaseUntil}`)
    assert.equal((await ownerSeenBy(c, 'b'))?.owner, 'a')

    await c.start('w')
    await c.waitFor('every member alive in every view', () => allAlive(c), 30_000, 200)
    await c.waitFor('the witness learns a owns vm1', async () => (await ownerSeenBy(c, 'w'))?.owner === 'a', 15_000, 100)
    assert.equal(await vmUndisturbed(c), undefined)
    assert.equal(await runningOn(c, 'b'), false)
  })

  it('kill -9 of the replica holder leaves the VM running on its owner; the replica holder rejoins and catches up', async () => {
    const c = cluster as LocalCluster
    const genBefore = await replicaGeneration(c, 'b')
    assert.ok(genBefore > 0)
    await c.kill('b')
    const killedAt = Date.now()
    await c.waitFor('a and w see b dead', async () => (await c.memberState('a', 'b')) === 'dead' && (await c.memberState('w', 'b')) === 'dead', 15_000, 100)
    await holdsFor('replica holder dead: vm1 keeps running on a', Math.max(0, killedAt + WATCH_MS - Date.now()), async () => {
      const bad = await vmUndisturbed(c)
      if (bad !== undefined) return bad
      if (!await runningOn(c, 'a')) return 'a no longer reports vm1 running'
      return undefined
    })
    const mine = (await ownershipOf(c, 'a')).vms.find(v => v.vm === VM)
    assert.ok(mine !== undefined && mine.ownedHere && mine.run === 'running', JSON.stringify(mine))
    assert.equal((await ownerSeenBy(c, 'w'))?.owner, 'a')
    // the VM's disk keeps changing while b is away
    const disk = join(c.dir, 'vm1.img')
    const fh = await open(disk, 'r+')
    try { await fh.write(Buffer.alloc(64 * 1024, 9), 0, 64 * 1024, 256 * 1024) } finally { await fh.close() }

    await c.start('b')
    await c.waitFor('every member alive in every view', () => allAlive(c), 30_000, 200)
    await c.waitFor('b sees a as vm1\'s owner', async () => (await ownerSeenBy(c, 'b'))?.owner === 'a', 15_000, 100)
    // replication resumes: b applies what changed while it was down
    await c.waitFor('b\'s replica catches up', async () => (await replicaGeneration(c, 'b')) > genBefore, 60_000, 200)
    assert.equal(await vmUndisturbed(c), undefined)
    assert.equal(await runningOn(c, 'b'), false)
    const { list, overlapping } = await vmInstances(c)
    assert.deepEqual(overlapping, [])
    assert.deepEqual(list.filter(i => i.to === Infinity).map(i => i.node), ['a'])
  })
})
