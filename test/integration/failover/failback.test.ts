/**
 * Failback with real daemons and the `command` driver: after a failover, the returning old
 * owner becomes a replica of the new owner and receives only the blocks that differ (its own
 * disk seeds the replica), then a planned failover moves the VM home with nothing lost.
 */
import assert from 'node:assert/strict'
import { open, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import { installFakeVm, fakeVmHypervisor, crashVm, instances, overlaps, killAllVms } from '../../helpers/fake-vm.ts'

const MiB = 1024 * 1024

describe('integration: failback', function () {
  this.timeout(240_000)
  let cluster: LocalCluster | undefined
  afterEach(async function () {
    if (this.currentTest?.state === 'failed' && cluster !== undefined) {
      for (const n of cluster.nodes) {
        const log = await readFile(n.logPath, 'utf8').catch(() => '')
        const lines = log.split('\n').filter(l => /ownership|seed|replica finalized|final generation|sourced|member (dead|alive)|VM |"level":(50|60)/.test(l)).slice(-50)
        process.stderr.write(`--- ${n.name} ---\n${lines.join('\n')}\n`)
      }
      process.stderr.write((await readFile(join(cluster.dir, 'events.log'), 'utf8').catch(() => '')) + '\n')
    }
    if (cluster !== undefined) await killAllVms(cluster.dir)
    await cluster?.destroy()
    cluster = undefined
  })

  async function runningOn (c: LocalCluster, node: string): Promise<boolean> {
    try { return (await c.status(node)).vms.some(v => v.name === 'vm1' && v.runningHere) } catch { return false }
  }

  async function replicaOn (c: LocalCluster, node: string, from: string): Promise<{ applied: number, files: Record<string, string>, bytesReceived: number } | undefined> {
    const v = (await c.status(node)).vms.find(x => x.name === 'vm1' && x.replica?.from === from)
    if (v?.replica == null) return undefined
    return { applied: v.replica.appliedGeneration, files: v.replica.files, bytesReceived: (v.replica as { bytesReceived?: number }).bytesReceived ?? 0 }
  }

  async function guestWrite (file: string, offset: number, len: number, fill: number): Promise<void> {
    const fh = await open(file, 'r+')
    try { await fh.write(Buffer.alloc(len, fill), 0, len, offset); await fh.sync() } finally { await fh.close() }
  }

  it('the returning owner receives only what changed, then a planned failover brings the VM home', async () => {
    const c = await LocalCluster.create({ nodes: [{ name: 'a' }, { name: 'b' }, { name: 'w', role: 'witness' }] })
    cluster = c
    const script = await installFakeVm(c.dir)
    const disk = join(c.dir, 'vm1.img')
    const size = 16 * MiB
    const content = Buffer.alloc(size)
    for (let i = 0; i < size; i += 4096) content.writeUInt32LE(i, i) // no zero blocks: every block costs bytes
    await writeFile(disk, content)
    await c.writeConfig('a', { hypervisor: fakeVmHypervisor(script, 'a'), vms: [{ name: 'vm1', disks: [disk], replicateTo: ['b'], scanInterval: '300ms' }] })
    await c.writeConfig('b', { hypervisor: fakeVmHypervisor(script, 'b') })
    await c.writeConfig('w')
    await c.startAll()
    await c.waitFor('vm1 running on a', () => runningOn(c, 'a'), 30_000)
    await c.waitFor('replica on b', async () => ((await replicaOn(c, 'b', 'a'))?.applied ?? 0) > 0, 60_000)

    // a's host dies; b takes the VM and runs it from its replica, which its guest then changes
    await c.kill('a')
    await crashVm(c.dir, 'a', 'vm1')
    await c.waitFor('vm1 running on b', () => runningOn(c, 'b'), 30_000, 100)
    const onB = (await replicaOn(c, 'b', 'a'))?.files[disk]
    assert.ok(onB !== undefined)
    await guestWrite(onB, 2 * MiB, 256 * 1024, 0x5a)
    await guestWrite(onB, 9 * MiB + 65536, 65536, 0xa5)

    // a comes back: it is told it lost the VM, and its own disk seeds the replica from b
    await c.start('a')
    const back = await c.waitFor('b\'s generations replicated to a', async () => {
      const r = await replicaOn(c, 'a', 'b')
      if (r === undefined || r.applied === 0) return undefined
      const path = Object.values(r.files)[0]
      if (path === undefined) return undefined
      return (await readFile(path)).equals(await readFile(onB)) ? r : undefined
    }, 90_000, 200)
    assert.equal(await runningOn(c, 'a'), false)
    if (process.env.VMESH_TEST_VERBOSE === '1') process.stderr.write(`failback: a received ${back.bytesReceived} bytes of a ${size}-byte disk\n`)
    // only the blocks that differ travelled, not the 16 MiB disk
    assert.ok(back.bytesReceived < size / 4, `a received ${back.bytesReceived} bytes`)

    // the guest on b writes once more; a planned failover takes the VM home with it
    await guestWrite(onB, 12 * MiB, 4096, 0x77)
    const finalImage = await readFile(onB)
    await c.node('b').client.call('POST', '/v1/failover', { vm: 'vm1', to: 'a', planned: true })
    await c.waitFor('vm1 running on a again', () => runningOn(c, 'a'), 60_000, 100)
    const list = await instances(c.dir)
    assert.deepEqual(overlaps(list), [])
    assert.deepEqual(list.map(i => [i.node, i.epoch]), [['a', 0], ['b', 1], ['a', 2]])
    const runsFrom = (await replicaOn(c, 'a', 'b'))?.files
    const path = runsFrom === undefined ? undefined : Object.values(runsFrom)[0]
    assert.ok(path !== undefined)
    assert.ok((await readFile(path)).equals(finalImage), 'the VM came home without the last write')
  })
})
