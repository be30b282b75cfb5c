/**
 * The bandwidth cap holds on the wire: a 2 MB/s VM limit measured as bytes received by the
 * target over 20 s is within ±10 %, and `vmesh reload` raising the limit takes effect on the
 * running stream without dropping it.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { mkdir, readFile } from 'node:fs/promises'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import { requireQemu } from '../../helpers/qemu.ts'
import { vmsSection, randomFixedVhd, replicaOf, cli, logOf } from './helpers.ts'

const MiB = 1024 * 1024

describe('replication: bandwidth cap (integration)', function () {
  this.timeout(120_000)
  let c: LocalCluster
  let disk: string

  before(async function () {
    requireQemu(this)
    c = await LocalCluster.create({ nodes: [{ name: 'hv-a' }, { name: 'hv-b' }], keep: process.env.KEEP === '1' })
    const vmDir = join(c.dir, 'vms')
    await mkdir(vmDir)
    disk = join(vmDir, 'big01.vhd')
    await randomFixedVhd(disk, 96 * MiB)
    await c.writeConfig('hv-a', vmsSection([{ name: 'big01', disks: [disk], replicateTo: ['hv-b'], limit: String(2_000_000) }]))
    await c.startAll()
  })

  after(async function () { await c?.destroy() })

  const received = async (): Promise<number> => (await replicaOf(c, 'hv-b', 'big01'))?.bytesReceived ?? 0

  it('2 MB/s over 20 s within ±10 %, then a live reload to 4 MB/s keeps the stream', async function () {
    await c.waitFor('stream flowing', async () => await received() > 2 * MiB, 30_000, 100)
    const r0 = await received()
    const t0 = Date.now()
    await new Promise(resolve => setTimeout(resolve, 20_000))
    const rate = (await received() - r0) / ((Date.now() - t0) / 1000)
    assert.ok(rate > 1_800_000 && rate < 2_200_000, `measured ${Math.round(rate)} B/s`)

    await c.writeConfig('hv-a', vmsSection([{ name: 'big01', disks: [disk], replicateTo: ['hv-b'], limit: String(4_000_000) }]))
    const rl = await cli(['--config', c.node('hv-a').configPath, 'reload', '--json'])
    assert.equal(rl.code, 0, rl.stderr)
    assert.ok((JSON.parse(rl.stdout) as { applied: string[] }).applied.includes('bandwidth'))
    await new Promise(resolve => setTimeout(resolve, 1000))
    const r1 = await received()
    const t1 = Date.now()
    await new Promise(resolve => setTimeout(resolve, 5000))
    const rate2 = (await received() - r1) / ((Date.now() - t1) / 1000)
    assert.ok(rate2 > 3_400_000 && rate2 < 4_600_000, `after reload measured ${Math.round(rate2)} B/s`)
    console.log(`      measured ${Math.round(rate)} B/s at a 2 MB/s cap over 20 s; ${Math.round(rate2)} B/s after reload to 4 MB/s`)
    const sessions = (await readFile(logOf(c, 'hv-a'), 'utf8')).split('\n').filter(l => l.includes('replication session open'))
    assert.equal(sessions.length, 1, 'the reload did not drop the stream')
  })
})
