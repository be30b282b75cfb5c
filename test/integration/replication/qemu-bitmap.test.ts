/**
 * QEMU dirty bitmaps with real daemons: the test bed's TCG guest (a boot sector writing a
 * record ~10×/s into its own VHDX) runs in a qemu started by the test, outside vmesh, with its
 * QMP socket configured as `qmp:` on the source. The source replicates from bitmaps: one hash
 * scan at the start, then only told answers; once the guest is paused the replica on the
 * target equals the disk (qemu-img compare and byte for byte), and status and the log name
 * the source. Fleecing (the default for a one-disk bitmap VM): the generations read while the
 * guest writes are recovery points, and each one restored is one instant of the guest (its
 * slots, tests/helpers/guest-slots.ts) and a valid VHDX. Skips without qemu-system-x86_64, qemu-img, qemu-io, nasm or the test bed.
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { systemClock } from '../../../common/clock.ts'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import { qmpCommand } from '../../../daemon/hypervisor/qmp.ts'
import { destroyKeepingFailures } from '../../helpers/keep.ts'
import type { ReplicaPoints } from '../../../daemon/replication/types.ts'
import { pointOf, presentFixedVhdx, slotsOf } from '../../helpers/guest-slots.ts'
import { vmsSection, waitInSync, replicaPath, sameBytes, vmOf, logOf, cli } from './helpers.ts'

const has = (cmd: string, arg = '--version'): boolean => spawnSync(cmd, [arg], { stdio: 'ignore' }).status === 0
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

describe('replication: QEMU dirty bitmaps with real daemons (integration)', function () {
  this.timeout(240_000)
  let c: LocalCluster | undefined
  let qemu: ChildProcess | undefined
  let image: string
  let qmpSock: string
  let section: { vms: Array<Record<string, unknown>> }
  let serial: string

  const writesSeen = async (): Promise<number> => ((await readFile(serial, 'utf8').catch(() => '')).match(/W /g) ?? []).length
  const qmp = async (command: string): Promise<{ return?: unknown, error?: { desc?: string } }> => await qmpCommand(qmpSock, command, undefined, { clock: systemClock, timeoutMs: 20_000 })

  before(async function () {
    const asm = [fileURLToPath(new URL('../../../../shared/testbed/diskwriter.asm', import.meta.url)), '/work/shared/testbed/diskwriter.asm'].find(p => existsSync(p))
    if (asm === undefined || !has('qemu-system-x86_64') || !has('qemu-img') || !has('qemu-io') || !has('nasm', '-v')) { this.skip(); return }
    c = await LocalCluster.create({ nodes: [{ name: 'hv-a' }, { name: 'hv-b' }], logLevel: 'debug', keep: process.env.KEEP === '1' })
    const vmDir = join(c.dir, 'vms')
    await mkdir(vmDir)
    const bin = join(vmDir, 'diskwriter.bin')
    assert.equal(spawnSync('nasm', ['-f', 'bin', '-o', bin, asm]).status, 0)
    image = join(vmDir, 'guest.vhdx')
    // fixed, every block present: a file that keeps its size is fleeced (a dynamic one is not:
    // told-source-runner.ts checkFleeceable)
    presentFixedVhdx(image, vmDir, '64M', '32M', bin)
    qmpSock = join(vmDir, 'guest.qmp')
    serial = join(vmDir, 'serial.log')
    qemu = spawn('qemu-system-x86_64', ['-m', '32', '-nodefaults', '-no-reboot', '-display', 'none', '-accel', 'tcg',
      '-drive', `file=${image},format=vhdx,if=ide`, '-serial', `file:${serial}`,
      '-qmp', `unix:${qmpSock},server=on,wait=off`], { stdio: ['ignore', 'ignore', 'pipe'] })
    const end = Date.now() + 30_000
    while (await writesSeen() < 3) {
      if (Date.now() > end || qemu.exitCode !== null) throw new Error('the guest did not start writing')
      await sleep(50)
    }
    section = vmsSection([{ name: 'web01', disks: [image], replicateTo: ['hv-b'] }]) as { vms: Array<Record<string, unknown>> }
    for (const v of section.vms) { v.changeSource = 'qemu-bitmap'; v.qmp = qmpSock }
    await c.writeConfig('hv-a', section)
    await c.startAll()
  })

  after(async function () {
    if (qemu !== undefined && qemu.exitCode === null) { qemu.kill('SIGKILL'); await new Promise(resolve => qemu?.once('exit', resolve)) }
    await destroyKeepingFailures(this, c)
  })

  it('the guest\'s writes replicate from bitmaps (one hash scan at the start); paused, the replica equals its disk', async () => {
    const cl = c as LocalCluster
    await waitInSync(cl, 'hv-a', 'web01', 'hv-b', 120_000)
    // the guest keeps writing while the source replicates from bitmaps
    const before = await writesSeen()
    await cl.waitFor('40 more guest writes', async () => await writesSeen() >= before + 40, 60_000, 200)

    // fleecing: what was sent while the guest wrote is recovery points, each one instant of it
    const points = async (): Promise<Array<{ generation: number }>> => (await cl.node('hv-b').client.call<ReplicaPoints>('GET', '/v1/replication/points?vm=web01', undefined, { timeoutMs: 10_000 })).replicas[0]?.points ?? []
    const firstPoints = (await points()).length
    await cl.waitFor('three more recovery points while the guest writes', async () => (await points()).length >= Math.min(firstPoints + 3, 20), 60_000, 200)
    assert.equal(qemu?.exitCode, null, 'the guest still runs')
    const restoredAt: number[] = []
    for (const p of (await points()).slice(-3)) {
      const to = join(cl.dir, `restored-${p.generation}`)
      const r = await cli(['--config', cl.node('hv-b').configPath, 'restore', 'web01', '--point', String(p.generation), '--to', to, '--json'])
      assert.equal(r.code, 0, r.stderr)
      const file = (JSON.parse(r.stdout) as { files: Record<string, string> }).files[image] as string
      const check = spawnSync('qemu-img', ['check', '-q', '-f', 'vhdx', file])
      assert.equal(check.status, 0, `generation ${p.generation}: qemu-img check: ${String(check.stderr)}${String(check.stdout)}`)
      const at = pointOf(slotsOf(file, to))
      assert.ok('n' in at, `generation ${p.generation} is no single instant of the guest: ${'torn' in at ? at.torn : ''}`)
      restoredAt.push(at.n)
    }
    assert.ok(restoredAt.every((n, i) => i === 0 || n >= (restoredAt[i - 1] as number)), `the points advance: ${restoredAt.join(', ')}`)

    const pausedAt = Date.now()
    assert.equal((await qmp('stop')).error, undefined)
    const toldAtPause = vmOf(await cl.status('hv-a'), 'web01')?.capture?.toldAnswers ?? 0
    // two rounds after the pause: everything the guest wrote is told and recorded
    await cl.waitFor('two bitmap rounds after the pause', async () => (vmOf(await cl.status('hv-a'), 'web01')?.capture?.toldAnswers ?? 0) >= toldAtPause + 2, 30_000, 100)
    await waitInSync(cl, 'hv-a', 'web01', 'hv-b', 60_000)
    const rp = await replicaPath(cl, 'hv-b', 'web01', image)
    assert.equal(spawnSync('qemu-img', ['compare', '-q', '-U', '-f', 'vhdx', '-F', 'vhdx', image, rp]).status, 0, 'qemu-img compare')
    assert.equal(await sameBytes(image, rp), true, 'byte for byte')

    const cap = vmOf(await cl.status('hv-a'), 'web01')?.capture
    assert.equal(cap?.source, 'qemu-bitmap')
    assert.equal(cap?.live, true)
    const scans = (await readFile(logOf(cl, 'hv-a'), 'utf8')).split('\n')
      .filter(l => l.includes('"msg":"scan"'))
      .map(l => JSON.parse(l) as { file: string, source: string, why?: string, scannedBytes: number, full: boolean, consistent: boolean })
      .filter(s => s.file === image)
    const bySource = new Map<string, number>()
    for (const s of scans) bySource.set(s.source, (bySource.get(s.source) ?? 0) + 1)
    const scanned = scans.filter(s => s.source !== 'told').map(s => `${s.source} (${s.why ?? '-'}, ${s.scannedBytes} bytes)`)
    assert.equal(cap?.scanAnswers, 1, `one hash scan (the start of the chain), no other: ${scanned.join('; ')}`)
    assert.ok((cap?.toldAnswers ?? 0) > 10, `told answers: ${String(cap?.toldAnswers)}`)
    assert.equal(scans[0]?.source, 'gap-scan', 'the first answer is the hash scan')
    assert.equal(scans.filter(s => s.source !== 'told').length, 1, `answers by source: ${JSON.stringify([...bySource])}`)
    assert.ok(scans.every(s => s.source !== 'told' || s.consistent), 'told answers are consistent (fleecing)')
    assert.equal(cap?.fleecing, true)
    // most points copied (the changed blocks read while no write completed), the first one a fleecing job
    assert.ok((cap?.points?.copied ?? 0) > 10 && (cap?.points?.fleeced ?? 0) >= 1, JSON.stringify(cap?.points))
    const toldBytes = scans.filter(s => s.source === 'told').reduce((a, s) => a + s.scannedBytes, 0)
    console.log(`      ${await writesSeen() - before} guest writes; ${scans.length} answers ${JSON.stringify([...bySource])}; told answers read ${toldBytes} bytes in all; restored points at records ${restoredAt.join(', ')}; points ${JSON.stringify(cap?.points)}; paused ${Date.now() - pausedAt} ms until compared`)
  })

  it('the source daemon killed while it held a fleecing point: the next process removes what it left in QEMU and fleeces again', async () => {
    const cl = c as LocalCluster
    assert.equal((await qmp('cont')).error, undefined) // the first case paused the guest
    // what this case is about is a held fleecing *job*: points by job only from here on
    // (`pointCopyBudget: 0`; a copied point leaves nothing in QEMU but its bitmaps)
    for (const v of section.vms) v.pointCopyBudget = 0
    await cl.writeConfig('hv-a', section)
    await cl.signal('hv-a', 'SIGTERM')
    await cl.start('hv-a')
    const fleeced = async (): Promise<number> => vmOf(await cl.status('hv-a'), 'web01')?.capture?.points?.fleeced ?? 0
    await cl.waitFor('two points by fleecing job', async () => (await fleeced()) >= 2, 60_000, 100)
    await cl.kill('hv-a')
    const jobs = async (): Promise<string[]> => (((await qmp('query-block-jobs')).return ?? []) as Array<{ device: string }>).map(j => j.device)
    assert.equal((await jobs()).length, 1, 'the killed process held a point (its copy-before-write job)')
    await cl.start('hv-a')
    const points = async (): Promise<number> => (await cl.node('hv-b').client.call<ReplicaPoints>('GET', '/v1/replication/points?vm=web01', undefined, { timeoutMs: 10_000 })).replicas[0]?.appliedConsistentGeneration ?? 0
    const p0 = await points()
    await cl.waitFor('two more recovery points from the new process', async () => (await points()) >= p0 + 2, 60_000, 200)
    const log = await readFile(logOf(cl, 'hv-a'), 'utf8')
    const removed = log.split('\n').filter(l => l.includes('removed what an earlier daemon process left in QEMU')).map(l => JSON.parse(l) as { jobs: string[], nodes: string[], files: string[] })
    assert.equal(removed.length, 1, 'one cleanup')
    assert.equal(removed[0]?.jobs.length, 1)
    assert.equal(removed[0]?.nodes.length, 1)
    assert.ok((removed[0]?.files.length ?? 0) >= 1, 'its scratch file')
    assert.ok((await jobs()).length <= 1, `jobs now: ${(await jobs()).join(', ')}`)
    assert.equal(qemu?.exitCode, null, 'the guest still runs')
  })

  it('QEMU restarted (bitmap lost): the hash scan answers while it is down and once more when it is back, then bitmaps again', async () => {
    const cl = c as LocalCluster
    const at = vmOf(await cl.status('hv-a'), 'web01')?.capture
    const logFrom = (await readFile(logOf(cl, 'hv-a'), 'utf8')).length
    qemu?.kill('SIGKILL')
    await new Promise(resolve => qemu?.once('exit', resolve))
    await cl.waitFor('the source sees QEMU gone', async () => vmOf(await cl.status('hv-a'), 'web01')?.capture?.live === false, 30_000, 100)
    qemu = spawn('qemu-system-x86_64', ['-m', '32', '-nodefaults', '-no-reboot', '-display', 'none', '-accel', 'tcg',
      '-drive', `file=${image},format=vhdx,if=ide`, '-serial', `file:${serial}`,
      '-qmp', `unix:${qmpSock},server=on,wait=off`], { stdio: ['ignore', 'ignore', 'pipe'] })
    // the serial file starts afresh: the booted guest counts from 1 again
    await cl.waitFor('the restarted guest writing', async () => await writesSeen() >= 3, 30_000, 100)
    const toldBack = at?.toldAnswers ?? 0
    await cl.waitFor('bitmap answers again', async () => (vmOf(await cl.status('hv-a'), 'web01')?.capture?.toldAnswers ?? 0) >= toldBack + 5, 60_000, 100)
    assert.equal((await qmp('stop')).error, undefined)
    const toldAtPause = vmOf(await cl.status('hv-a'), 'web01')?.capture?.toldAnswers ?? 0
    await cl.waitFor('two bitmap rounds after the pause', async () => (vmOf(await cl.status('hv-a'), 'web01')?.capture?.toldAnswers ?? 0) >= toldAtPause + 2, 30_000, 100)
    await waitInSync(cl, 'hv-a', 'web01', 'hv-b', 60_000)
    const rp = await replicaPath(cl, 'hv-b', 'web01', image)
    assert.equal(spawnSync('qemu-img', ['compare', '-q', '-U', '-f', 'vhdx', '-F', 'vhdx', image, rp]).status, 0, 'qemu-img compare')
    assert.equal(await sameBytes(image, rp), true, 'byte for byte')
    const cap = vmOf(await cl.status('hv-a'), 'web01')?.capture
    const extraScans = (cap?.scanAnswers ?? 0) - (at?.scanAnswers ?? 0)
    // one scan while QEMU was down (the told passes left no stat token to trust), one at the new chain
    assert.ok(extraScans >= 1 && extraScans <= 2, `hash scans after the restart: ${extraScans}`)
    assert.equal(cap?.live, true)
    const log = (await readFile(logOf(cl, 'hv-a'), 'utf8')).slice(logFrom)
    assert.match(log, /QEMU unreachable; the hash scan answers/)
    assert.equal((log.match(/QEMU dirty bitmap with fleecing started/g) ?? []).length, 1, 'a new chain once QEMU is back')
  })
})
