/**
 * scan.budget with real daemons: a 64 MiB VHD written end to end, the source's hash scans held
 * to 8 MB/s. Every scan the daemon logs (bytes read, duration) stays under the budget, the
 * replica still converges byte for byte, and status shows the change source, budget, share and
 * the RPO that budget allows, beside each target's honest RPO.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { mkdir, readFile } from 'node:fs/promises'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import { requireQemu, qemuImgCreate, qemuWrite, qemuImgCompare } from '../../helpers/qemu.ts'
import { vmsSection, waitInSync, replicaPath, sameBytes, targetOf, vmOf, logOf } from './helpers.ts'

const MiB = 1024 * 1024

describe('replication: hash scans under scan.budget (integration)', function () {
  this.timeout(180_000)
  let c: LocalCluster
  let disk: string

  before(async function () {
    requireQemu(this)
    c = await LocalCluster.create({ nodes: [{ name: 'hv-a' }, { name: 'hv-b' }], logLevel: 'debug', keep: process.env.KEEP === '1' })
    const vmDir = join(c.dir, 'vms')
    await mkdir(vmDir)
    disk = join(vmDir, 'web01.vhd')
    await qemuImgCreate(disk, 'vpc', 64 * MiB, { subformat: 'dynamic' })
    await qemuWrite(disk, 'vpc', 0, 63 * MiB, 0x5a)
    await c.writeConfig('hv-a', { ...vmsSection([{ name: 'web01', disks: [disk], replicateTo: ['hv-b'] }]), scan: { budget: '8MB/s' } })
    await c.startAll()
  })

  after(async function () { await c?.destroy() })

  it('the daemon\'s scans never read faster than the budget, and status says what that allows', async () => {
    const t0 = Date.now()
    await waitInSync(c, 'hv-a', 'web01', 'hv-b', 120_000)
    const seconds = (Date.now() - t0) / 1000
    const rp = await replicaPath(c, 'hv-b', 'web01', disk)
    assert.equal(await qemuImgCompare(disk, 'vpc', rp, 'vpc'), true)
    assert.equal(await sameBytes(disk, rp), true)
    assert.ok(seconds >= 7, `64 MiB scanned at 8 MB/s in ${seconds} s`)

    const scans = (await readFile(logOf(c, 'hv-a'), 'utf8')).split('\n')
      .filter(l => l.includes('"msg":"scan"'))
      .map(l => JSON.parse(l) as { scannedBytes: number, scanMs: number | null })
      .filter(s => s.scannedBytes > 0 && s.scanMs !== null)
    assert.ok(scans.length > 0, 'the source logged its scans')
    for (const s of scans) {
      // burst: 10 ms at the budget (80 KB, floor 64 KiB)
      assert.ok(s.scannedBytes <= 8e6 * (s.scanMs as number) / 1000 + 80_000 + 64 * 1024, `read ${s.scannedBytes} bytes in ${s.scanMs} ms`)
    }

    const st = await c.status('hv-a')
    const cap = vmOf(st, 'web01')?.capture
    assert.equal(cap?.source, 'hash-scan')
    assert.equal(cap?.scanBudgetBytesPerSec, 8e6)
    assert.equal(cap?.scanShareBytesPerSec, 8e6)
    assert.ok((cap?.scanBytes ?? 0) >= 63 * MiB)
    // interval (500 ms) + two scans of the disk at 8 MB/s: ~17 s
    assert.ok((cap?.rpoBoundMs ?? 0) > 16_000 && (cap?.rpoBoundMs ?? 0) < 20_000, `rpoBoundMs ${String(cap?.rpoBoundMs)}`)
    const t = targetOf(st, 'web01', 'hv-b')
    assert.equal(typeof t?.rpoMs, 'number')
  })
})
