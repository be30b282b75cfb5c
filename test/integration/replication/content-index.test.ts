/**
 * The target's content index with two real daemons: a VM cloned from a template whose copy the
 * target already holds (as another VM's replica) is seeded mostly by hash — the goal is ≤ 10 % of
 * its allocated size on the wire — and its replica is byte-identical to its source. The template
 * VM's own seed, in the same run, is the baseline (everything travels).
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { copyFile, mkdir, stat } from 'node:fs/promises'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import { requireQemu } from '../../helpers/qemu.ts'
import { vmsSection, waitInSync, replicaPath, sameBytes, randomFixedVhd, randomWrite, replicaOf } from './helpers.ts'

const MiB = 1024 * 1024

describe('replication: content index (integration)', function () {
  this.timeout(180_000)
  let c: LocalCluster

  after(async function () { await c?.destroy() })

  it('a second VM from the same template costs ≤ 10 % of its size on the wire; its replica equals its source', async function () {
    requireQemu(this)
    c = await LocalCluster.create({ nodes: [{ name: 'hv-a' }, { name: 'hv-b' }], logLevel: 'debug', keep: process.env.KEEP === '1' })
    // opt-in on both ends (a source and a target without it speak 1.1.0)
    const ci = { contentIndex: { enabled: true } }
    await c.writeConfig('hv-b', ci)
    const vmDir = join(c.dir, 'vms')
    await mkdir(vmDir)
    // random data: nothing for lz4 to shrink, so the bytes saved are the content index's
    const tmpl = join(vmDir, 'web01.vhd')
    await randomFixedVhd(tmpl, 128 * MiB)
    await c.writeConfig('hv-a', { ...vmsSection([{ name: 'web01', disks: [tmpl], replicateTo: ['hv-b'] }]), ...ci })
    await c.startAll()
    await waitInSync(c, 'hv-a', 'web01', 'hv-b', 120_000)
    const first = (await replicaOf(c, 'hv-b', 'web01'))?.bytesReceived ?? 0

    // web02: a clone of the same template with 4 MiB of its own writes, added to hv-a's config
    const clone = join(vmDir, 'web02.vhd')
    await copyFile(tmpl, clone)
    for (const at of [3, 40, 77, 120]) await randomWrite(clone, at * MiB + 4096, MiB)
    await c.signal('hv-a', 'SIGTERM')
    await c.writeConfig('hv-a', { ...vmsSection([{ name: 'web01', disks: [tmpl], replicateTo: ['hv-b'] }, { name: 'web02', disks: [clone], replicateTo: ['hv-b'] }]), ...ci })
    await c.start('hv-a')
    await waitInSync(c, 'hv-a', 'web02', 'hv-b', 120_000)
    const wire = (await replicaOf(c, 'hv-b', 'web02'))?.bytesReceived ?? Infinity
    const allocated = (await stat(clone)).size
    assert.equal(await sameBytes(clone, await replicaPath(c, 'hv-b', 'web02', clone)), true, 'the clone\'s replica equals its source')
    assert.equal(await sameBytes(tmpl, await replicaPath(c, 'hv-b', 'web01', tmpl)), true, 'the template\'s replica is untouched')
    console.log(`      web01 (template) seed: ${first} bytes on the wire; web02 (clone + 4 MiB): ${wire} bytes for ${allocated} allocated (${(100 * wire / allocated).toFixed(2)} %)`)
    assert.ok(first > 0.9 * allocated, `baseline: the template's own seed carried ${first} bytes`)
    assert.ok(wire <= 0.1 * allocated, `the clone's seed put ${wire} bytes on the wire for ${allocated} allocated`)
    // the 4 MiB of its own writes had to travel
    assert.ok(wire >= 4 * MiB, `${wire} bytes cannot carry 4 MiB of new data`)
  })
})
