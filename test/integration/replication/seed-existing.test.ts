/**
 * `seed: existing`: the target already holds a copy (restored from a backup) placed at
 * `<dataDir>/replicas/<source>/<vm>.seed/<file name>`; the source compares block hashes and
 * sends only what differs.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { copyFile, mkdir } from 'node:fs/promises'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import { requireQemu } from '../../helpers/qemu.ts'
import { vmsSection, waitInSync, replicaPath, sameBytes, randomFixedVhd, randomWrite, replicaOf } from './helpers.ts'

const MiB = 1024 * 1024

describe('replication: seed: existing (integration)', function () {
  this.timeout(120_000)
  let c: LocalCluster

  after(async function () { await c?.destroy() })

  it('a pre-placed, slightly stale copy is adopted and only the differences cross the wire', async function () {
    requireQemu(this)
    c = await LocalCluster.create({ nodes: [{ name: 'hv-a' }, { name: 'hv-b' }], logLevel: 'debug', keep: process.env.KEEP === '1' })
    const vmDir = join(c.dir, 'vms')
    await mkdir(vmDir)
    const disk = join(vmDir, 'old01.vhd')
    await randomFixedVhd(disk, 32 * MiB)
    const seedDir = join(c.node('hv-b').dir, 'data', 'replicas', 'hv-a', 'old01.seed')
    await mkdir(seedDir, { recursive: true })
    await copyFile(disk, join(seedDir, 'old01.vhd'))
    // the source moved on since the "backup"
    await randomWrite(disk, 5 * MiB, MiB)
    await randomWrite(disk, 30 * MiB, 256 * 1024)
    await c.writeConfig('hv-a', vmsSection([{ name: 'old01', disks: [disk], replicateTo: ['hv-b'], seed: 'existing' }]))
    await c.startAll()
    await waitInSync(c, 'hv-a', 'old01', 'hv-b')
    assert.equal(await sameBytes(disk, await replicaPath(c, 'hv-b', 'old01', disk)), true)
    const rx = (await replicaOf(c, 'hv-b', 'old01'))?.bytesReceived ?? Infinity
    assert.ok(rx < 3 * MiB, `received ${rx} bytes for 1.25 MiB of differences on a 32 MiB disk`)
  })
})
