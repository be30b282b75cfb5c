/**
 * The paused owner: SIGSTOP of the owner's daemon (its event loop frozen, its sockets open —
 * a GC storm, a hung disk, a VM host under memory pressure). Its watchdog is a process of its
 * own, so it must turn the VM off before the lease the daemon can no longer renew runs out; the
 * replica holder then starts the VM at a higher epoch. When the daemon resumes it must learn
 * the higher epoch and leave the VM alone. Real daemons (two hosts + a witness, LAN profile),
 * the `command` driver with the fake VM; the events log is checked for overlaps throughout.
 */
import assert from 'node:assert/strict'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import { killAllVms } from '../../helpers/fake-vm.ts'
import {
  VM, startFailoverCluster, runningOn, replicaFrom, ownerSeenBy, ownershipOf, vmInstances, waitTakeoverAfterFence, vmProcessAlive, watchdogLog, allAlive, holdsFor, dumpFailure
} from '../../helpers/failover.ts'

describe('integration: failover — paused owner (SIGSTOP)', function () {
  this.timeout(120_000)
  let cluster: LocalCluster | undefined
  let paused = false

  afterEach(async function () {
    const c = cluster
    cluster = undefined
    if (c === undefined) return
    if (paused) { await c.signal('a', 'SIGCONT'); paused = false } // a stopped daemon cannot handle SIGTERM
    if (this.currentTest?.state === 'failed') await dumpFailure(c, this.currentTest.title)
    await killAllVms(c.dir)
    await c.destroy()
  })

  it('the watchdog fences the paused owner before the survivor starts the VM; resumed, the old owner stays off and becomes a replica holder', async () => {
    const { c } = await startFailoverCluster([{ name: 'a' }, { name: 'b' }, { name: 'w', role: 'witness' }], (x) => { cluster = x })
    const initial = await vmInstances(c)
    assert.equal(initial.list.length, 1, JSON.stringify(initial.list))
    const first = initial.list[0]
    assert.ok(first !== undefined && first.node === 'a' && first.to === Infinity)

    const pausedAt = Date.now()
    await c.signal('a', 'SIGSTOP')
    paused = true

    const { onB, fencedA, marginMs } = await waitTakeoverAfterFence(c, pausedAt, 30_000)
    // the daemon was frozen: only its watchdog process can have turned the VM off
    assert.ok((await watchdogLog(c, 'a')).some(e => e.type === 'fenced' && e.vm === VM), 'no fence in a\'s watchdog log')
    assert.equal(await vmProcessAlive(c, 'a'), false)
    await c.waitFor('b reports vm1 running', () => runningOn(c, 'b'), 15_000, 100)
    await c.waitFor('the witness sees b as owner at b\'s epoch', async () => { const o = await ownerSeenBy(c, 'w'); return o?.owner === 'b' && o.epoch === onB.epoch }, 15_000, 100)

    const resumedAt = Date.now()
    await c.signal('a', 'SIGCONT')
    paused = false
    await c.waitFor('a learns that b owns vm1 at the higher epoch', async () => { const o = await ownerSeenBy(c, 'a'); return o?.owner === 'b' && o.epoch >= onB.epoch }, 30_000, 100)
    // a's copy is demoted to a replica of b's (its files are the old epoch's); the daemon acts on
    // the demotion just after its state changes, so the timeline may lag the status by a moment
    const own = await c.waitFor('a acts on its demotion', async () => { const o = await ownershipOf(c, 'a'); return o.timeline.some(t => t.vm === VM && t.event.startsWith('demoted') && (t.epoch ?? 0) >= onB.epoch) ? o : undefined }, 10_000, 100)
    const mine = own.vms.find(v => v.vm === VM)
    assert.ok(mine !== undefined)
    assert.equal(mine.ownedHere, false)
    assert.equal(mine.owner, 'b')

    // for a lease and more after resuming, a never starts the VM again and b keeps it
    await holdsFor('after SIGCONT, vm1 stays on b only', 7000, async () => {
      const { list, overlapping } = await vmInstances(c)
      if (overlapping.length > 0) return `overlap ${JSON.stringify(overlapping)}`
      const a = list.filter(i => i.node === 'a')
      if (a.length !== 1 || a.some(i => i.from >= resumedAt)) return `a started vm1 again: ${JSON.stringify(list)}`
      if (await vmProcessAlive(c, 'a')) return 'a\'s VM process is alive'
      const b = list.filter(i => i.node === 'b')
      if (b.length !== 1 || b[0]?.to !== Infinity) return `b's instance changed: ${JSON.stringify(b)}`
      if (!await vmProcessAlive(c, 'b')) return 'b\'s VM process died'
      return undefined
    })
    assert.equal(await runningOn(c, 'a'), false)
    assert.equal(await runningOn(c, 'b'), true)
    await c.waitFor('every member alive in every view', () => allAlive(c), 20_000, 200)
    // replication follows ownership: b sources vm1 and a, its home, now holds a replica of it
    await c.waitFor('a holds a replica of vm1 from b', async () => (await replicaFrom(c, 'a', 'b')) > 0, 60_000, 200)

    // every node agrees: b owns vm1 (at b's start epoch, or higher if b won its running VM again)
    await c.waitFor('every node agrees b owns vm1 at one epoch', async () => {
      const seen = await Promise.all(['a', 'b', 'w'].map(async n => await ownerSeenBy(c, n)))
      return seen.every(o => o !== undefined && o.owner === 'b' && o.epoch >= onB.epoch && o.epoch === seen[0]?.epoch)
    }, 15_000, 200)
    const final = await vmInstances(c)
    assert.deepEqual(final.overlapping, [])
    assert.deepEqual(final.list.filter(i => i.to === Infinity).map(i => i.node), ['b'])
    console.log(`      paused owner: fenced ${fencedA.to - pausedAt} ms after SIGSTOP, b started ${onB.from - pausedAt} ms after it (margin ${marginMs} ms), epoch ${fencedA.epoch} → ${onB.epoch}`)
  })
})
