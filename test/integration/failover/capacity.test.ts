/**
 * The DR site with real daemons and the `command` driver (fake VMs): three hosts + two
 * witnesses; db (priority 10) and app (startAfter db) live on a, batch on b, all replicated to
 * c, whose capacity holds two of the three. Two hosts of three die (their daemons and VMs are
 * killed): c starts db, then app, and keeps batch off (no room, in status); b returns and runs
 * batch itself. Then a drill of site "main" on c: an isolated clone of what c holds of it
 * (batch: db and app run on c now), with its recovery point, age and time to running, and the
 * clone removed; production untouched. The events log is checked for overlaps.
 */
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import { crashVm, fakeVmHypervisor, installFakeVm, instances, killAllVms, overlaps } from '../../helpers/fake-vm.ts'
import { allAlive, dumpFailure } from '../../helpers/failover.ts'
import type { SiteReport } from '../../../daemon/ownership/site.ts'

const MiB = 1
const SITES: Record<string, string> = { a: 'main', b: 'main', c: 'dr', w1: 'main', w2: 'dr' }

describe('integration: capacity, start order, site drill (3 hosts + 2 witnesses)', function () {
  this.timeout(240_000)
  let c: LocalCluster | undefined

  after(async () => {
    const x = c
    c = undefined
    if (x === undefined) return
    await killAllVms(x.dir)
    await x.destroy()
  })

  async function runsOn (x: LocalCluster, node: string, vm: string): Promise<boolean> {
    try { return (await x.status(node)).vms.some(v => v.name === vm && v.runningHere) } catch { return false }
  }

  it('the survivor starts what fits, in order, keeps the rest off visibly, and the rest runs when its host returns; a drill reports RPO and RTO', async function () {
    c = await LocalCluster.create({ nodes: [{ name: 'a' }, { name: 'b' }, { name: 'c' }, { name: 'w1', role: 'witness' }, { name: 'w2', role: 'witness' }] })
    const x = c
    try {
      const script = await installFakeVm(x.dir)
      const disk = async (vm: string): Promise<string> => { const p = join(x.dir, `${vm}.img`); await writeFile(p, Buffer.alloc(1024 * 1024, 3)); return p }
      const vmsOf: Record<string, unknown[]> = {
        a: [
          { name: 'db', disks: [await disk('db')], replicateTo: ['c'], scanInterval: '500ms', priority: 10, memoryMiB: 2048 * MiB, vcpus: 2 },
          { name: 'app', disks: [await disk('app')], replicateTo: ['c'], scanInterval: '500ms', priority: 5, memoryMiB: 2048 * MiB, vcpus: 2, startAfter: ['db'] }
        ],
        b: [{ name: 'batch', disks: [await disk('batch')], replicateTo: ['c'], scanInterval: '500ms', priority: 1, memoryMiB: 2048 * MiB, vcpus: 2 }],
        c: []
      }
      for (const n of ['a', 'b', 'c', 'w1', 'w2']) {
        // {test} tells the command driver the script knows test instances (the fake VM ignores it)
        const h = fakeVmHypervisor(script, n) as { command: { start: string } }
        const hypervisor = { ...h, command: { ...h.command, start: `${h.command.start} {test}` } }
        const cfg = x.configFor(n, n.startsWith('w') ? {} : { hypervisor, vms: vmsOf[n] })
        const node = cfg.node as Record<string, unknown>
        node.site = SITES[n]
        if (n === 'c') node.capacity = { memoryMiB: 4608, vcpus: 8, reserveMemoryMiB: 0 }
        else if (!n.startsWith('w')) node.capacity = { memoryMiB: 8192, vcpus: 8, reserveMemoryMiB: 0 }
        cfg.mesh = { ...(cfg.mesh as Record<string, unknown>), peers: ((cfg.mesh as { peers: Array<Record<string, unknown>> }).peers).map(p => ({ ...p, site: SITES[p.name as string] })) }
        await writeFile(x.node(n).configPath, stringify(cfg))
      }
      await x.startAll()
      await x.waitFor('db, app on a and batch on b', async () => await runsOn(x, 'a', 'db') && await runsOn(x, 'a', 'app') && await runsOn(x, 'b', 'batch'), 60_000, 200)
      for (const vm of ['db', 'app', 'batch']) {
        await x.waitFor(`replica of ${vm} on c`, async () => ((await x.status('c')).vms.find(v => v.name === vm)?.replica?.appliedGeneration ?? 0) > 0, 60_000, 200)
      }
      await x.waitFor('every member alive in every view', () => allAlive(x), 20_000, 200)

      // two hosts of three die: daemons and their VMs
      const killedAt = Date.now()
      await x.kill('a')
      await x.kill('b')
      for (const [n, vm] of [['a', 'db'], ['a', 'app'], ['b', 'batch']] as const) await crashVm(x.dir, n, vm)
      await x.waitFor('db and app running on c', async () => await runsOn(x, 'c', 'db') && await runsOn(x, 'c', 'app'), 60_000, 200)
      const onC = (await instances(x.dir)).filter(i => i.node === 'c' && i.from >= killedAt)
      const dbAt = onC.find(i => i.vm === 'db')?.from ?? Infinity
      const appAt = onC.find(i => i.vm === 'app')?.from ?? -Infinity
      assert.ok(dbAt <= appAt, `db started on c at ${dbAt}, app at ${appAt}`)
      console.log(`      survivor: db running ${dbAt - killedAt} ms after the kill, app ${appAt - killedAt} ms`)
      // batch stays off on c, visibly
      await new Promise(resolve => setTimeout(resolve, 5000))
      assert.equal(await runsOn(x, 'c', 'batch'), false)
      const batch = (await x.status('c')).vms.find(v => v.name === 'batch')
      assert.equal(batch?.placement, 'no-room', JSON.stringify(batch))

      // b returns: batch runs there (its own VM, nobody took it)
      await x.start('b')
      await x.waitFor('batch running on b', () => runsOn(x, 'b', 'batch'), 60_000, 200)
      assert.deepEqual(overlaps(await instances(x.dir)), [])

      // a drill of site "main" on c: clones of what c holds (db and app run on c now: they are
      // no longer site main's; batch is, owned by b)
      const r = await x.node('c').client.call<SiteReport>('POST', '/v1/failover/site', { site: 'main', test: true }, { timeoutMs: 120_000 })
      console.log(`      drill: ${JSON.stringify(r.vms)}`)
      const b = r.vms.find(v => v.vm === 'batch')
      assert.ok(b !== undefined && b.state === 'running' && b.node === 'c' && b.point !== null && b.point.ageMs !== null && b.rtoMs !== null, JSON.stringify(r))
      assert.ok(await runsOn(x, 'b', 'batch'), 'production batch still runs on b')
      const clean = await x.node('c').client.call<SiteReport>('POST', '/v1/failover/site', { site: 'main', test: true, cleanup: true }, { timeoutMs: 120_000 })
      assert.ok(clean.vms.every(v => v.state === 'removed' || v.state === 'absent' || v.state === 'elsewhere'), JSON.stringify(clean))
      assert.equal(await runsOn(x, 'b', 'batch'), true, 'the drill left production alone')
    } catch (err) {
      await dumpFailure(x, 'capacity')
      throw err
    }
  })
})
