/**
 * A mixed mesh on 127.0.0.1: two daemons on Windows Node 20 under Wine and one Linux daemon.
 * They must form (every view alive within 5 s once all three answer), a VHDX on a Windows
 * daemon must replicate to the Linux one byte for byte (qemu-img compare), a VM must fail over
 * from a hard-killed Windows daemon to the other one — the dead daemon's watchdog, a detached
 * process outside its job object, turning the VM off before the survivor starts it — and the
 * stop command of the WinSW service (packaging/windows/vmesh-service.xml, as WinSW composes it:
 * `vmesh stop`, the control API, Windows has no SIGTERM) must end a Windows daemon cleanly while
 * its watchdog stays to fence the VM at its deadline.
 *
 * The VMs are driven by the `command` driver through Windows-side scripts (win-vm.ts: vm.cmd
 * run by cmd.exe, fake-vm.mjs on node.exe). Under Wine on this 2-core machine at load 20-30 a
 * fence took 3-6 s (cmd.exe, then node.exe, then TerminateProcess), and each spawn() blocks the
 * caller's event loop 0.2-0.5 s (Wine's CreateProcess), so a daemon starting VMs missed the LAN
 * profile's 3.5 s re-arm deadline (fenceMs) and its watchdog fenced the VMs it was starting.
 * The nodes run with a wider lease (leaseMs 20000, fenceMs 12000: 12 s to re-arm, 8 s for a
 * fence), as README's Windows section tells a Windows host with script fences to size it, and
 * the test checks that the fence ended inside that budget — the property that keeps a survivor
 * from starting the VM while it still runs, however slow the survivor is.
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { tmpdir } from 'node:os'
import { fileURLToPath } from 'node:url'
import { LocalCluster, type LocalNodeSpec } from '../../daemon/cluster/local-cluster.ts'
import { hasTool, qemuImgCompare, qemuImgCreate, qemuWrite } from '../helpers/qemu.ts'
import { replicaPath, sameBytes, vmsSection, waitInSync } from '../integration/replication/helpers.ts'
import { replicaGeneration, runningOn } from '../helpers/failover.ts'
import { STAGE, wineEnv, wineMissing, wineNodeArgv, winPath } from './wine.ts'
import { installWinVm, winVmEvents, winVmHypervisor, winswStopArgv } from './win-vm.ts'

const SERVICE_XML = fileURLToPath(new URL('../../packaging/windows/vmesh-service.xml', import.meta.url))

/** The failover test's VM: home win-a, replicated to win-b (helpers/failover.ts names it vm1 too). */
const VM = 'vm1'
/** A fence budget (leaseMs − fenceMs) that fits a script fence under Wine; see above. */
const OWNERSHIP = { leaseMs: 20_000, fenceMs: 12_000 }

const wineDaemon: LocalNodeSpec['command'] = (n) => wineNodeArgv([winPath(join(STAGE, 'vmesh.mjs')), '--config', winPath(n.configPath), 'start'], n.logPath)

/** Runs node.exe once under Wine and waits; its output lands in a file. */
async function wineNode (args: string[]): Promise<{ code: number | null, out: string }> {
  const log = join(tmpdir(), `vmesh-wine-run-${process.pid}-${Date.now()}.log`)
  const argv = wineNodeArgv(args, log)
  const code = await new Promise<number | null>((resolve) => {
    spawn(argv[0] as string, argv.slice(1), { cwd: STAGE, env: wineEnv(), stdio: 'ignore' }).on('exit', (c) => { resolve(c) })
  })
  const out = await readFile(log, 'utf8').catch(() => '')
  await rm(log, { force: true })
  return { code, out }
}

describe('windows tier (Wine): mixed mesh of Windows and Linux daemons', function () {
  this.timeout(600_000)
  let c: LocalCluster
  let disk: string
  let vmDir: string | undefined
  let upMs = 0

  before(async function () {
    const why = wineMissing()
    if (why !== undefined) { console.log(`      skipped: ${why}`); this.skip() }
    if (!hasTool('qemu-img')) { console.log('      skipped: qemu-img missing (qemu-utils)'); this.skip() }
    c = await LocalCluster.create({ nodes: [{ name: 'win-a', command: wineDaemon }, { name: 'win-b', command: wineDaemon }, { name: 'lin-c' }], ownership: OWNERSHIP, keep: process.env.VMESH_WINE_KEEP === '1' })
    // vmesh init on Windows protects identity.key with an ACL (owner, SYSTEM, Administrators);
    // the Windows daemon reads that ACL back and refuses the key without it. Do the same here,
    // through the compiled platform module on Windows Node.
    const keys = ['win-a', 'win-b'].map(n => winPath(join(c.node(n).dir, 'identity.key')))
    const prot = await wineNode(['--input-type=module', '-e',
      `const p = await import('file:///${STAGE.replace(/^\//, 'Z:/')}/common/platform/index.js'); for (const f of process.argv.slice(1)) { await p.protectSecretFile(f, { os: 'win32' }); const why = await p.secretFileProblem(f, { os: 'win32' }); if (why !== null) throw new Error(why) } console.log('protected', process.platform)`,
      ...keys])
    assert.equal(prot.code, 0, prot.out)
    assert.match(prot.out, /protected win32/)
    // a VHDX on the Windows source, replicated to the Linux node
    await mkdir(join(c.dir, 'vms'))
    disk = join(c.dir, 'vms', 'web01.vhdx')
    await qemuImgCreate(disk, 'vhdx', 32 * 1024 * 1024)
    await qemuWrite(disk, 'vhdx', 0, 1024 * 1024, 0x11)
    await qemuWrite(disk, 'vhdx', 20 * 1024 * 1024, 2 * 1024 * 1024, 0x22)
    // vm1 (home win-a, replicated to win-b) fails over between the Windows daemons; web01 also
    // runs on win-a (same driver) but stays there by policy: lin-c has no hypervisor
    vmDir = join(c.dir, 'winvm')
    const vmCmd = await installWinVm(vmDir)
    const vm1Disk = join(c.dir, 'vms', 'vm1.img')
    await writeFile(vm1Disk, Buffer.alloc(1024 * 1024, 7))
    const vms = vmsSection([{ name: 'web01', disks: [winPath(disk)], replicateTo: ['lin-c'] }, { name: VM, disks: [winPath(vm1Disk)], replicateTo: ['win-b'] }]).vms as Array<Record<string, unknown>>
    vms[0] = { ...vms[0], failover: 'manual' }
    await c.writeConfig('win-a', { vms, hypervisor: winVmHypervisor(vmCmd, 'win-a') })
    await c.writeConfig('win-b', { hypervisor: winVmHypervisor(vmCmd, 'win-b') })
    // a Windows daemon takes 20-140 s to start under Wine on this machine class (module loading
    // through Wine's file I/O): start all three at once with a start timeout to match
    const t0 = Date.now()
    await Promise.all(c.nodes.map(async n => { await c.start(n.name, { timeoutMs: 240_000 }) }))
    upMs = Date.now() - t0
  })

  afterEach(async function () {
    if (this.currentTest?.state !== 'failed' || c === undefined) return
    // the evidence: the daemons' election lines, the watchdogs' logs, the VM's log
    const out: string[] = [`=== ${this.currentTest.title}; cluster ${c.dir}`]
    for (const n of c.nodes) {
      const text = await readFile(n.logPath, 'utf8').catch(() => '')
      out.push(`--- ${n.name} daemon ---`, ...text.split('\n').filter(l => /ownership|member (dead|alive|suspect)|VM |watchdog|"level":(50|60)/.test(l) || (l !== '' && !l.startsWith('{'))).slice(-60))
      out.push(`--- ${n.name} watchdog ---`, await readFile(join(n.dir, 'data', 'watchdog.log'), 'utf8').catch(() => '(none)'))
    }
    if (vmDir !== undefined) out.push('--- VM events ---', await readFile(join(vmDir, 'events.log'), 'utf8').catch(() => '(none)'))
    process.stderr.write(out.join('\n') + '\n')
  })

  after(async () => {
    await c?.destroy()
    // the Windows watchdogs are detached (they must outlive their daemon): end this prefix's processes
    spawnSync('/usr/lib/wine/wineserver', ['-k'], { env: wineEnv() })
  })

  it('forms: every view alive within 5 s once all three daemons answer', async () => {
    const t1 = Date.now()
    await c.waitFor('every view alive', async () => {
      for (const v of c.nodes) {
        const s = await c.status(v.name)
        if (s.members.length !== 2 || s.members.some(m => m.state !== 'alive')) return false
      }
      return true
    }, 30_000, 100)
    const formMs = Date.now() - t1
    console.log(`      daemons answering after ${upMs} ms (Wine start included); every view alive ${formMs} ms later`)
    assert.ok(formMs <= 5000, `mesh formed in ${formMs} ms`)
    for (const n of ['win-a', 'win-b']) assert.match(await readFile(c.node(n).logPath, 'utf8'), /vmesh daemon started/)
  })

  it('replicates a VHDX from the Windows daemon to the Linux one byte-identically (qemu-img compare)', async () => {
    const { generation } = await waitInSync(c, 'win-a', 'web01', 'lin-c', 180_000)
    const rp = await replicaPath(c, 'lin-c', 'web01', winPath(disk))
    assert.equal(await qemuImgCompare(disk, 'vhdx', rp, 'vhdx'), true)
    assert.equal(await sameBytes(disk, rp), true)
    // and a later write travels as a new generation
    await qemuWrite(disk, 'vhdx', 8 * 1024 * 1024, 512 * 1024, 0x33)
    await c.waitFor('a new generation', async () => ((await c.status('win-a')).vms.find(v => v.name === 'web01')?.generation ?? 0) > generation, 60_000)
    // a scan that began while qemu-io was still writing makes a generation with part of the
    // write; the rest is the next generation. So the first in-sync generation after the write
    // may be that partial one: wait for an in-sync generation whose replica is the source's.
    const seen: number[] = []
    await c.waitFor('an in-sync generation equal to the source', async () => {
      const g = (await waitInSync(c, 'win-a', 'web01', 'lin-c', 120_000)).generation
      if (seen.at(-1) !== g) seen.push(g)
      return await sameBytes(disk, rp)
    }, 120_000, 500)
    console.log(`      generations in sync after the second write: ${seen.join(', ')} (first before it: ${generation})`)
    assert.equal(await qemuImgCompare(disk, 'vhdx', rp, 'vhdx'), true)
  })

  it('kill of the Windows owner: its watchdog fences the VM (cmd.exe) before win-b starts it; 0 double starts', async function () {
    await c.waitFor('vm1 running on win-a', async () => await runningOn(c, 'win-a'), 120_000, 500)
    await c.waitFor('vm1 replicated to win-b', async () => (await replicaGeneration(c, 'win-b')) > 0, 120_000, 500)
    const before = await winVmEvents(vmDir as string, VM)
    // (win-a may have restarted it before: a late renewal on a loaded host fences it, safely)
    assert.deepEqual(before.list.filter(i => i.node !== 'win-a'), [], before.lines.join('\n'))
    assert.equal(before.list.at(-1)?.to, Infinity, `vm1 is not running on win-a:\n${before.lines.join('\n')}`)
    const wd = c.node('win-a').dir
    const wdLog = async (): Promise<Array<Record<string, unknown>>> => (await readFile(join(wd, 'data', 'watchdog.log'), 'utf8').catch(() => ''))
      .split('\n').filter(Boolean).flatMap(l => { try { return [JSON.parse(l) as Record<string, unknown>] } catch { return [] } })
    // the watchdog running now (the daemon restarts one it finds hung)
    const wdPid = (await wdLog()).filter(e => e.type === 'start').at(-1)?.pid
    assert.ok(typeof wdPid === 'number', 'win-a\'s watchdog logged no start')

    // the daemon's own process only: SIGKILL of the Linux process that runs its node.exe (wine
    // loads a Windows program into the process it execs), which Wine reports as a termination
    // like TerminateProcess's; the watchdog is a process of its own
    const killAt = Date.now()
    await c.kill('win-a')
    assert.equal(c.isRunning('win-a'), false)

    const onB = await c.waitFor('vm1 started on win-b', async () => (await winVmEvents(vmDir as string, VM)).list.find(i => i.node === 'win-b'), 120_000, 250)
    const ev = await winVmEvents(vmDir as string, VM)
    const log = (await wdLog()).filter(e => Date.parse(String(e.time)) >= killAt)
    const fenced = log.find(e => e.type === 'fenced' && e.vm === VM)
    const gone = log.find(e => e.type === 'parent-gone')
    assert.ok(gone !== undefined && gone.pid === wdPid, `win-a's watchdog (pid ${wdPid}) did not see its daemon go: ${JSON.stringify(log)}`)
    console.log(`      watchdog: ${JSON.stringify(gone)} / ${JSON.stringify(fenced)}`)
    console.log(`      VM log:\n${ev.lines.map(l => `        ${l}`).join('\n')}`)
    assert.deepEqual(ev.conflicts, [], 'a second instance found the VM\'s disk taken')
    assert.deepEqual(ev.overlapping, [])
    const onA = ev.list.filter(i => i.node === 'win-a')
    assert.equal(onA.length, before.list.length, `win-a started vm1 again after the kill:\n${ev.lines.join('\n')}`)
    const lastA = onA.at(-1)
    const offA = lastA?.to ?? Infinity
    assert.ok(Number.isFinite(offA) && offA >= killAt, `win-a's VM was not turned off after the kill:\n${ev.lines.join('\n')}`)
    const marginMs = onB.from - offA
    assert.ok(marginMs > 0, `win-b started vm1 ${marginMs} ms after win-a's went off`)
    assert.ok(onB.epoch > (lastA?.epoch ?? Infinity), JSON.stringify(ev.list))
    // only the watchdog can have turned it off: the daemon was dead
    assert.ok(fenced !== undefined && fenced.pid === wdPid, `no fence of vm1 by win-a's watchdog (pid ${wdPid}): ${JSON.stringify(log)}`)
    // the VM was off before the lease the survivor waits out had run: lateMs counts from the
    // watchdog's deadline, fenceMs after the last renewal; the lease ends leaseMs after it
    const lateMs = Number(fenced.lateMs)
    assert.ok(lateMs >= 0 && lateMs < OWNERSHIP.leaseMs - OWNERSHIP.fenceMs, `the fence ended ${lateMs} ms after its deadline: outside the ${OWNERSHIP.leaseMs - OWNERSHIP.fenceMs} ms budget`)
    console.log(`      kill → win-a's VM off ${offA - killAt} ms (fence took ${Math.round(lateMs)} ms past its deadline), → win-b's VM on ${onB.from - killAt} ms (margin ${marginMs} ms)`)
    await c.waitFor('win-b reports vm1 running', async () => await runningOn(c, 'win-b'), 60_000, 250)
    assert.equal((await winVmEvents(vmDir as string, VM)).list.filter(i => i.node === 'win-b').length, 1)
  })

  it('the WinSW service\'s stop command (vmesh stop) ends a Windows daemon cleanly; its watchdog outlives it and fences at the deadline', async () => {
    // what WinSW runs on a service stop or restart: <stopexecutable> with <stoparguments> and
    // then <arguments> appended (WinSW always appends them), from packaging/windows/vmesh-service.xml
    // with the installed paths replaced by this stage's and win-b's config. WinSW then waits for the
    // daemon to exit; it kills no process tree when <stoparguments> is set.
    const stop = winswStopArgv(await readFile(SERVICE_XML, 'utf8'), { [String.raw`C:\Program Files\vmesh\bin\vmesh.js`]: winPath(join(STAGE, 'vmesh.mjs')), [String.raw`C:\ProgramData\vmesh\vmesh.yaml`]: winPath(c.node('win-b').configPath) })
    assert.equal(stop.at(-1), 'stop', `the stop command WinSW would run: ${JSON.stringify(stop)}`)
    const wdLog = async (): Promise<Array<Record<string, unknown>>> => (await readFile(join(c.node('win-b').dir, 'data', 'watchdog.log'), 'utf8').catch(() => ''))
      .split('\n').filter(Boolean).flatMap(l => { try { return [JSON.parse(l) as Record<string, unknown>] } catch { return [] } })
    const wdPid = (await wdLog()).filter(e => e.type === 'start').at(-1)?.pid
    assert.equal(await runningOn(c, 'win-b'), true, 'vm1 is not running on win-b before the stop')
    const stopAt = Date.now()
    const r = await wineNode(stop)
    assert.equal(r.code, 0, r.out)
    await c.waitFor('win-b exits', async () => !c.isRunning('win-b'), 30_000, 100)
    const exitedAt = Date.now()
    await c.waitFor('win-b dead in the others\' views', async () => (await c.memberState('lin-c', 'win-b')) === 'dead' && (!c.isRunning('win-a') || (await c.memberState('win-a', 'win-b')) === 'dead'), 20_000)
    assert.match(await readFile(c.node('win-b').logPath, 'utf8'), /"signal":"api".*stopping/)
    // the daemon said bye: its watchdog keeps vm1's deadline after the daemon is gone, fences
    // the VM when it passes (the lease no one renews any more), then exits
    const fenced = await c.waitFor('win-b\'s watchdog fences vm1', async () => (await wdLog()).find(e => e.type === 'fenced' && e.vm === VM && Date.parse(String(e.time)) >= stopAt), 60_000, 250)
    const log = await wdLog()
    assert.equal(fenced.pid, wdPid, JSON.stringify(log))
    const ev = await winVmEvents(vmDir as string, VM)
    const onB = ev.list.filter(i => i.node === 'win-b')
    assert.equal(onB.length, 1, ev.lines.join('\n'))
    assert.ok(Number.isFinite(onB[0]?.to) && (onB[0]?.to ?? 0) >= exitedAt, `vm1 on win-b went off before the daemon had exited:\n${ev.lines.join('\n')}`)
    assert.ok(Number(fenced.lateMs) < OWNERSHIP.leaseMs - OWNERSHIP.fenceMs, JSON.stringify(fenced))
    await c.waitFor('the watchdog exits once nothing is armed', async () => (await wdLog()).some(e => e.type === 'exit' && e.pid === wdPid), 20_000, 250)
    console.log(`      daemon exited; its watchdog fenced vm1 ${(onB[0]?.to ?? 0) - exitedAt} ms later (${Math.round(Number(fenced.lateMs))} ms past the deadline)`)
  })
})
