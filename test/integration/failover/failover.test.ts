/**
 * Failover with real daemons and the `command` driver (a fake VM: a sleep process per node).
 * Every run checks the invariant from the events log: never two instances at once.
 */
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import { installFakeVm, fakeVmHypervisor, crashVm, instances, overlaps, killAllVms } from '../../helpers/fake-vm.ts'

describe('integration: failover', function () {
  this.timeout(180_000)
  let cluster: LocalCluster | undefined
  afterEach(async function () {
    if (this.currentTest?.state === 'failed' && cluster !== undefined) {
      // the daemons' own account of the election, for diagnosis
      const { readFile } = await import('node:fs/promises')
      for (const n of cluster.nodes) {
        const log = await readFile(n.logPath, 'utf8').catch(() => '')
        process.stderr.write(`--- ${n.name} (raw tail) ---\n${log.slice(-1500)}\n`)
        const lines = log.split('\n').filter(l => /ownership|member (dead|alive|suspect)|VM |"level":(50|60)/.test(l) || (l !== '' && !l.startsWith('{'))).slice(-60)
        process.stderr.write(`--- ${n.name} ---\n${lines.join('\n')}\n`)
      }
      process.stderr.write((await readFile(join(cluster.dir, 'events.log'), 'utf8').catch(() => '')) + '\n')
      for (const n of cluster.nodes) {
        process.stderr.write(`--- ${n.name} watchdog ---\n${await readFile(join(n.dir, 'data', 'watchdog.log'), 'utf8').catch(() => '')}\n`)
      }
      if (process.env.VMESH_KEEP_FAILED !== undefined) {
        const { cp } = await import('node:fs/promises')
        await cp(cluster.dir, join(process.env.VMESH_KEEP_FAILED, `cluster-${Date.now()}`), { recursive: true }).catch(() => {})
      }
    }
    if (cluster !== undefined) await killAllVms(cluster.dir)
    await cluster?.destroy()
    cluster = undefined
  })

  async function setup (nodes: Array<{ name: string, role?: 'host' | 'witness' }>): Promise<{ c: LocalCluster, script: string }> {
    const c = await LocalCluster.create({ nodes })
    cluster = c
    const script = await installFakeVm(c.dir)
    const disk = join(c.dir, 'vm1.img')
    await writeFile(disk, Buffer.alloc(1024 * 1024, 7))
    for (const n of nodes) {
      if (n.role === 'witness') continue
      const extra: Record<string, unknown> = { hypervisor: fakeVmHypervisor(script, n.name) }
      if (n.name === 'a') extra.vms = [{ name: 'vm1', disks: [disk], replicateTo: nodes.filter(x => x.name !== 'a' && x.role !== 'witness').map(x => x.name), scanInterval: '500ms' }]
      await c.writeConfig(n.name, extra)
    }
    await c.startAll()
    return { c, script }
  }

  async function runningOn (c: LocalCluster, node: string): Promise<boolean> {
    try { return (await c.status(node)).vms.some(v => v.name === 'vm1' && v.runningHere) } catch { return false }
  }

  it('kill -9 of the owner host: the VM restarts on the replica holder, once, never overlapping', async () => {
    const { c } = await setup([{ name: 'a' }, { name: 'b' }, { name: 'w', role: 'witness' }])
    await c.waitFor('vm1 running on a', () => runningOn(c, 'a'), 30_000)
    await c.waitFor('replica on b', async () => (await c.status('b')).vms.some(v => v.name === 'vm1' && v.replica !== null && v.replica.appliedGeneration > 0), 60_000)
    const killAt = Date.now()
    await c.kill('a')
    await crashVm(c.dir, 'a', 'vm1')
    await c.waitFor('vm1 running on b', () => runningOn(c, 'b'), 30_000, 100)
    const rto = Date.now() - killAt
    const list = await instances(c.dir)
    assert.deepEqual(overlaps(list), [])
    assert.equal(list.filter(i => i.node === 'b').length, 1)
    const onB = list.find(i => i.node === 'b')
    const onA = list.find(i => i.node === 'a')
    assert.ok(onB !== undefined && onA !== undefined && onB.epoch > onA.epoch, JSON.stringify(list))
    assert.ok(rto < 20_000, `RTO ${rto} ms`)
  })

  it('two hosts without a witness never fail over on their own', async () => {
    const { c } = await setup([{ name: 'a' }, { name: 'b' }])
    await c.waitFor('vm1 running on a', () => runningOn(c, 'a'), 30_000)
    await c.waitFor('replica on b', async () => (await c.status('b')).vms.some(v => v.name === 'vm1' && v.replica !== null && v.replica.appliedGeneration > 0), 60_000)
    await c.kill('a')
    await crashVm(c.dir, 'a', 'vm1')
    await new Promise(resolve => setTimeout(resolve, 12_000))
    assert.equal(await runningOn(c, 'b'), false)
    assert.equal((await instances(c.dir)).filter(i => i.node === 'b').length, 0)
  })
})
