/**
 * Failover of a real guest with the `qemu` driver: the testbed's 512-byte boot-sector guest
 * (diskwriter.asm: boots from its disk and writes ~10 records a second to it, logging each on
 * its serial port) runs under qemu-system-x86_64 on host a from a dynamic VHD (not fleeced) and
 * from a fixed one (fleeced: recovery points while it writes), and is replicated to b. A host crash — SIGKILL of a's daemon, its watchdog and its qemu together — makes b
 * finalize its replica and boot the guest from it at a higher epoch.
 *
 * Overlap is checked on the real processes: a's qemu is confirmed gone (its pid no longer
 * exists) before b's qemu process was created (its start time from /proc).
 * Skips when qemu-system-x86_64, qemu-img or qemu-io is missing, or when neither a built
 * diskwriter.bin ($TESTBED_BIN) nor nasm and the testbed's diskwriter.asm are available.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readFile, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import { overlaps, type Instance } from '../../helpers/fake-vm.ts'
import type { ReplicaPoints } from '../../../daemon/replication/types.ts'
import { VM, runningOn, replicaGeneration, ownershipOf, watchdogLog, dumpFailure } from '../../helpers/failover.ts'

const ASM = [fileURLToPath(new URL('../../../../shared/testbed/diskwriter.asm', import.meta.url)), '/work/shared/testbed/diskwriter.asm'].find(p => existsSync(p))
const has = (cmd: string, arg = '--version'): boolean => spawnSync(cmd, [arg], { stdio: 'ignore', timeout: 10_000 }).status === 0

/** The process exists and is not a zombie (a daemonized qemu is reaped by whoever adopted it). */
async function alive (pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined)
  return stat !== undefined && stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
}

/** Wall-clock time (ms) a process was created, from /proc (10 ms grain). */
async function processStartWallMs (pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const ticks = Number(fields[19]) // field 22 of the full line: starttime, in clock ticks since boot
  const btime = Number(/^btime (\d+)$/m.exec(await readFile('/proc/stat', 'utf8'))?.[1])
  const hz = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100
  return btime * 1000 + (ticks / hz) * 1000
}

/** PIDs of qemu processes running this test's guest (`-name guest=vm1`) from a disk under `dir`. */
async function guestPids (dir: string): Promise<number[]> {
  const out: number[] = []
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue
    const cmd = await readFile(`/proc/${e}/cmdline`, 'utf8').catch(() => '')
    if (cmd.includes(`guest=${VM}`) && cmd.includes(dir) && cmd.includes('qemu-system')) out.push(Number(e))
  }
  return out
}

async function findFile (dir: string, name: string): Promise<string | undefined> {
  const all = await readdir(dir, { recursive: true }).catch(() => [] as string[])
  const hit = all.find(p => p === name || p.endsWith(`/${name}`))
  return hit === undefined ? undefined : join(dir, hit)
}

async function serialWrites (path: string | undefined): Promise<{ boot: boolean, writes: number }> {
  const text = path === undefined ? '' : await readFile(path, 'latin1').catch(() => '')
  return { boot: /BOOT diskwriter/.test(text), writes: (text.match(/^W /gm) ?? []).length }
}

describe('integration: failover — a real qemu guest', function () {
  this.timeout(150_000)
  let cluster: LocalCluster | undefined
  let bootSector: string

  before(function () {
    for (const tool of ['qemu-system-x86_64', 'qemu-img', 'qemu-io']) {
      if (!has(tool)) { console.log(`      (skipped: ${tool} is not installed; install qemu-system-x86 and qemu-utils)`); this.skip() }
    }
    bootSector = join(process.env.TESTBED_BIN ?? '/tmp/testbed-bin', 'diskwriter.bin')
    if (!existsSync(bootSector) && (ASM === undefined || !has('nasm', '-v'))) {
      console.log('      (skipped: no diskwriter.bin in $TESTBED_BIN and no nasm + shared/testbed/diskwriter.asm to build it)')
      this.skip()
    }
  })

  afterEach(async function () {
    const c = cluster
    cluster = undefined
    if (c === undefined) return
    const failed = this.currentTest?.state === 'failed'
    if (failed) await dumpFailure(c, this.currentTest?.title ?? '')
    for (const pid of await guestPids(c.dir)) { try { process.kill(pid, 'SIGKILL') } catch {} }
    // The watchdogs go too: a daemon's watchdog outlives it and, at its VM's lease deadline,
    // fences by killing every qemu of `-name guest=vm1` on the host (the qemu driver's fence
    // action: one daemon per host) — which, seconds later, was the next case's guest, just
    // started on its own cluster ("no qemu process for the guest on a", npm test, 2026-12-07).
    const watchdogs: number[] = []
    for (const n of ['a', 'b']) for (const e of await watchdogLog(c, n)) if (e.type === 'start' && typeof e.pid === 'number') watchdogs.push(e.pid)
    // a failure keeps the cluster folder (daemon logs, the guest's QEMU log) as the evidence
    await c.destroy({ keep: failed })
    for (const pid of watchdogs) { try { process.kill(pid, 'SIGKILL') } catch {} }
  })

  // dynamic: not fleeced (QEMU 7.2 aborts when a fleeced file grows); fixed: fleeced — the case
  // that, with a dynamic disk, made the first fleecing attempt's guests exit after their start
  for (const subformat of ['dynamic', 'fixed'] as const) {
    it(`kill -9 of the owner host (daemon, watchdog, qemu): b boots the guest from its replica, after a's qemu is gone (${subformat} VHD${subformat === 'fixed' ? ', fleeced' : ''})`, async () => {
      const c = await LocalCluster.create({ nodes: [{ name: 'a' }, { name: 'b' }, { name: 'w', role: 'witness' }] })
      cluster = c
      if (!existsSync(bootSector)) {
        bootSector = join(c.dir, 'diskwriter.bin')
        assert.equal(spawnSync('nasm', ['-f', 'bin', '-o', bootSector, ASM as string]).status, 0)
      }
      // the guest writes one sector in each of 32 × 2 MiB regions: the disk must be ≥ 64 MiB
      const disk = join(c.dir, 'vm1.vhd')
      assert.equal(spawnSync('qemu-img', ['create', '-q', '-f', 'vpc', '-o', `subformat=${subformat},force_size=on`, disk, '64M']).status, 0)
      assert.equal(spawnSync('qemu-io', ['-f', 'vpc', '-c', `write -q -s ${bootSector} 0 512`, disk]).status, 0)
      const hypervisor = { driver: 'qemu', qemu: { memoryMiB: 32, args: ['-nodefaults', '-no-reboot'] } }
      await c.writeConfig('a', { hypervisor, vms: [{ name: VM, disks: [disk], replicateTo: ['b'], scanInterval: '500ms' }] })
      await c.writeConfig('b', { hypervisor })
      await c.startAll()

      await c.waitFor('vm1 running on a', () => runningOn(c, 'a'), 60_000, 100)
      const aDir = c.node('a').dir
      const bDir = c.node('b').dir
      const [aPid] = await guestPids(aDir)
      assert.ok(aPid !== undefined, 'no qemu process for the guest on a')
      const aStart = await processStartWallMs(aPid)
      await c.waitFor('a\'s guest writes to its disk', async () => (await serialWrites(await findFile(aDir, `${VM}.serial.log`))).writes >= 10, 30_000, 200)
      await c.waitFor('a replica on b', async () => (await replicaGeneration(c, 'b')) > 0, 90_000, 200)
      // a few more generations: the replica follows the running guest
      const g0 = await replicaGeneration(c, 'b')
      await c.waitFor('the replica advances', async () => (await replicaGeneration(c, 'b')) >= g0 + 2, 60_000, 200)
      assert.equal((await c.status('a')).vms.find(v => v.name === VM)?.capture?.fleecing, subformat === 'fixed')
      if (subformat === 'fixed') {
        // fleeced: the generations sent while the guest writes are recovery points
        const consistent = async (): Promise<number> => (await c.node('b').client.call<ReplicaPoints>('GET', `/v1/replication/points?vm=${VM}`, undefined, { timeoutMs: 10_000 })).replicas[0]?.appliedConsistentGeneration ?? 0
        const p0 = await consistent()
        await c.waitFor('two more recovery points while the guest writes', async () => (await consistent()) >= p0 + 2, 60_000, 200)
      }
      const aSerial = await serialWrites(await findFile(aDir, `${VM}.serial.log`))

      // the host crash: everything of a's at once
      const wdPids = (await watchdogLog(c, 'a')).filter(e => e.type === 'start' && typeof e.pid === 'number').map(e => e.pid as number)
      assert.ok(wdPids.length > 0, 'a\'s watchdog pid is not in its log')
      const killAt = Date.now()
      try { process.kill(aPid, 'SIGKILL') } catch {}
      for (const p of wdPids) { try { process.kill(p, 'SIGKILL') } catch {} }
      const daemonGone = c.kill('a')
      await c.waitFor('a\'s qemu gone', async () => !(await alive(aPid)), 10_000, 10)
      const aGoneAt = Date.now()
      await daemonGone

      await c.waitFor('vm1 running on b', () => runningOn(c, 'b'), 60_000, 100)
      const bPids = await guestPids(bDir)
      assert.equal(bPids.length, 1, `qemu processes of b: ${bPids.join(',')}`)
      const bPid = bPids[0] as number
      const bStart = await processStartWallMs(bPid)
      const bCmd = (await readFile(`/proc/${bPid}/cmdline`, 'utf8')).split('\0')
      // b runs the guest from its replica, not from a's disk
      assert.ok(!bCmd.some(a => a.includes(disk)), bCmd.join(' '))
      assert.ok(bCmd.some(a => a.startsWith('file=') && a.includes(bDir)), bCmd.join(' '))
      const bSerialPath = await findFile(bDir, `${VM}.serial.log`)
      await c.waitFor('b\'s guest boots from the replica and writes', async () => { const s = await serialWrites(bSerialPath); return s.boot && s.writes >= 3 }, 30_000, 200)

      const own = await ownershipOf(c, 'b')
      const mine = own.vms.find(v => v.vm === VM)
      assert.ok(mine !== undefined && mine.ownedHere && mine.epoch >= 1, JSON.stringify(mine))
      assert.ok(own.timeline.some(t => t.vm === VM && t.event === 'replica finalized'), JSON.stringify(own.timeline))
      const list: Instance[] = [
        { node: 'a', vm: VM, epoch: 0, from: aStart, to: aGoneAt },
        { node: 'b', vm: VM, epoch: mine.epoch, from: bStart, to: Infinity }
      ]
      assert.deepEqual(overlaps(list), [])
      assert.ok(bStart > aGoneAt, `b's qemu started ${bStart - aGoneAt} ms after a's was confirmed gone`)
      console.log(`      qemu guest: a wrote ${aSerial.writes}+ records; b's qemu started ${Math.round(bStart - killAt)} ms after the crash (epoch ${mine.epoch}), margin ≥ ${Math.round(bStart - aGoneAt)} ms`)
    })
  }
})
