/**
 * Two targets (one stopped, then catching up with only the changes), recovery points restored
 * through the CLI, and `vmesh verify` finding and repairing a damaged replica block.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { copyFile, mkdir, open } from 'node:fs/promises'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import { requireQemu, qemuImgCompare, qemuWrite } from '../../helpers/qemu.ts'
import { vmsSection, waitInSync, replicaPath, sameBytes, randomFixedVhd, randomWrite, replicaOf, targetOf, cli, settle } from './helpers.ts'

const MiB = 1024 * 1024

describe('replication: two targets, points, restore, verify (integration)', function () {
  this.timeout(180_000)
  let c: LocalCluster
  let disk: string
  let conf: string
  let vmDir: string

  before(async function () {
    requireQemu(this)
    c = await LocalCluster.create({ nodes: [{ name: 'hv-a' }, { name: 'hv-b' }, { name: 'hv-c' }], logLevel: 'debug', keep: process.env.KEEP === '1' })
    vmDir = join(c.dir, 'vms')
    await mkdir(vmDir)
    disk = join(vmDir, 'app01.vhd')
    conf = join(vmDir, 'app01.conf')
    await randomFixedVhd(disk, 32 * MiB)
    const fh = await open(conf, 'w'); await fh.write('memory=4096\ncpus=2\n'); await fh.close()
    await c.writeConfig('hv-a', vmsSection([{ name: 'app01', disks: [disk], files: [conf], replicateTo: ['hv-b', 'hv-c'] }]))
    await c.startAll()
  })

  after(async function () { await c?.destroy() })

  it('both targets seed; a stopped target does not hold back the other and catches up with only the changes', async function () {
    await waitInSync(c, 'hv-a', 'app01', 'hv-b')
    await waitInSync(c, 'hv-a', 'app01', 'hv-c')
    await c.signal('hv-c', 'SIGTERM')
    await randomWrite(disk, 3 * MiB, MiB)
    await randomWrite(disk, 20 * MiB, MiB)
    const fh = await open(conf, 'a'); await fh.write('nic=br0\n'); await fh.close()
    await settle()
    await waitInSync(c, 'hv-a', 'app01', 'hv-b')
    assert.equal(await sameBytes(disk, await replicaPath(c, 'hv-b', 'app01', disk)), true)
    assert.equal(await sameBytes(conf, await replicaPath(c, 'hv-b', 'app01', conf)), true)
    const st = targetOf(await c.status('hv-a'), 'app01', 'hv-c')
    assert.equal(st?.state, 'disconnected')
    assert.ok((st?.bytesPending ?? 0) >= 2 * MiB, `pending for the stopped target: ${st?.bytesPending}`)
    assert.ok((st?.lagMs ?? 0) > 0)
    await c.start('hv-c')
    await waitInSync(c, 'hv-a', 'app01', 'hv-c')
    assert.equal(await sameBytes(disk, await replicaPath(c, 'hv-c', 'app01', disk)), true)
    assert.equal(await sameBytes(conf, await replicaPath(c, 'hv-c', 'app01', conf)), true)
    const rx = (await replicaOf(c, 'hv-c', 'app01'))?.bytesReceived ?? Infinity
    assert.ok(rx < 3 * MiB, `hv-c received ${rx} bytes to catch up on 2 MiB of changes`)
  })

  it('a recovery point restored with `vmesh restore` equals the source as it was then', async function () {
    let g = 0
    let copy = ''
    // a generation is a point only if its capture was quiet; a few writes make sure one is
    for (let attempt = 0; attempt < 5 && copy === ''; attempt++) {
      await qemuWrite(disk, 'vpc', (4 + attempt) * MiB, 64 * 1024, 0x50 + attempt)
      await new Promise(resolve => setTimeout(resolve, 1200))
      g = (await waitInSync(c, 'hv-a', 'app01', 'hv-b')).generation
      const pts = JSON.parse((await cli(['--config', c.node('hv-b').configPath, 'points', 'app01', '--json'])).stdout) as { replicas: Array<{ points: Array<{ id: string, generation: number }> }> }
      if (pts.replicas[0]?.points.some(p => p.generation === g) === true) {
        copy = join(vmDir, `app01-g${g}.vhd`)
        await copyFile(disk, copy)
      }
    }
    assert.notEqual(copy, '', 'some generation became a recovery point')
    await randomWrite(disk, 10 * MiB, 2 * MiB)
    await c.waitFor('next generation', async () => ((await c.status('hv-a')).vms[0]?.generation ?? 0) > g, 20_000)
    await settle()
    await waitInSync(c, 'hv-a', 'app01', 'hv-b')
    const to = join(c.dir, 'restored')
    const r = await cli(['--config', c.node('hv-b').configPath, 'restore', 'app01', '--point', String(g), '--to', to, '--json'])
    assert.equal(r.code, 0, r.stderr)
    const out = JSON.parse(r.stdout) as { generation: number, files: Record<string, string> }
    assert.equal(out.generation, g)
    const restored = out.files[disk] as string
    assert.equal(await sameBytes(copy, restored), true)
    assert.equal(await qemuImgCompare(copy, 'vpc', restored, 'vpc'), true)
    assert.equal(await sameBytes(disk, restored), false, 'the point predates the last write')
    const bad = await cli(['--config', c.node('hv-b').configPath, 'restore', 'app01', '--point', 'nope', '--to', join(c.dir, 'r2'), '--json'])
    assert.equal(bad.code, 1)
    assert.equal((JSON.parse(bad.stdout) as { error: { code: string } }).error.code, 'ERR_REPLICA_POINT_NOT_FOUND')
  })

  it('`vmesh verify` reports identical replicas, finds a damaged block, and --repair fixes it', async function () {
    await waitInSync(c, 'hv-a', 'app01', 'hv-b')
    await waitInSync(c, 'hv-a', 'app01', 'hv-c')
    const ok = await cli(['--config', c.node('hv-a').configPath, 'verify', 'app01', '--json'])
    assert.equal(ok.code, 0, ok.stdout + ok.stderr)
    assert.equal((JSON.parse(ok.stdout) as { ok: boolean }).ok, true)
    const rp = await replicaPath(c, 'hv-b', 'app01', disk)
    const fh = await open(rp, 'r+'); await fh.write(Buffer.alloc(4096, 0xee), 0, 4096, 5 * MiB + 100); await fh.close()
    const bad = await cli(['--config', c.node('hv-a').configPath, 'verify', 'app01', '--json'])
    assert.equal(bad.code, 1)
    const rep = JSON.parse(bad.stdout) as { ok: boolean, targets: Array<{ target: string, mismatchedBlocks: number }> }
    assert.equal(rep.ok, false)
    assert.equal(rep.targets.find(t => t.target === 'hv-b')?.mismatchedBlocks, 1)
    assert.equal(rep.targets.find(t => t.target === 'hv-c')?.mismatchedBlocks, 0)
    const fix = await cli(['--config', c.node('hv-a').configPath, 'verify', 'app01', '--repair', '--json'])
    assert.equal(fix.code, 1)
    await c.waitFor('repair shipped', async () => await sameBytes(disk, rp), 30_000, 200)
    const again = await cli(['--config', c.node('hv-a').configPath, 'verify', 'app01', '--json'])
    assert.equal(again.code, 0, again.stdout)
  })
})
