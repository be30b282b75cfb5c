/**
 * The watchdog as real processes: it fences by running the command driver's stop script (which
 * logs the wall time), on time, whatever happens to the daemon — re-arms, SIGSTOP, SIGKILL, a
 * clean stop — and the daemon restarts it when it crashes.
 */
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { chmod, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { systemClock } from '../../../common/clock.ts'
import { CommandDriver } from '../../../daemon/hypervisor/command.ts'
import { defaultRunner } from '../../../daemon/hypervisor/run.ts'
import { Watchdog, type FenceReport } from '../../../daemon/watchdog/client.ts'
import { tempDir } from '../../helpers/tmp.ts'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
const FIXTURE = fileURLToPath(new URL('./parent-fixture.ts', import.meta.url))
/** Scheduling slack on a loaded 2-core machine: a fence may complete this much after its deadline. */
const LATE_OK_MS = 300

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

function alive (pid: number): boolean {
  try { process.kill(pid, 0) } catch { return false }
  try { return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')) } catch { return false }
}

async function waitFor<T> (what: string, fn: () => Promise<T | undefined> | T | undefined, ms: number): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const v = await fn()
    if (v !== undefined) return v
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(10)
  }
}

describe('integration: watchdog process', function () {
  this.timeout(60_000)
  let dir: string
  let cleanup: () => Promise<void>
  let log: string
  const pids: number[] = []
  const children: ChildProcess[] = []
  let wd: Watchdog | undefined

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('vmesh-wd-'))
    log = join(dir, 'fence.log')
    // the "hypervisor": stop logs "<wall ms> <vm>"; status says off once stopped
    await writeFile(join(dir, 'stop-vm.sh'), `#!/bin/sh\necho "$(date +%s%3N) $1" >> ${log}\ntouch "${dir}/off-$1"\n`)
    await writeFile(join(dir, 'status-vm.sh'), `#!/bin/sh\n[ ! -f "${dir}/off-$1" ]\n`)
    await chmod(join(dir, 'stop-vm.sh'), 0o755); await chmod(join(dir, 'status-vm.sh'), 0o755)
    await writeFile(log, '')
  })
  afterEach(async () => {
    await wd?.stop(); wd = undefined
    for (const c of children.splice(0)) { try { c.kill('SIGCONT'); c.kill('SIGKILL') } catch {} }
    for (const p of pids.splice(0)) { try { process.kill(p, 'SIGKILL') } catch {} }
    await cleanup()
  })

  /** The watchdog's own figure: how late after the deadline it began the fence (its log). */
  const startLate = async (): Promise<string> => {
    const m = /"type":"fencing"[^\n]*"startLateMs":([\d.]+)/.exec(await readFile(join(dir, 'watchdog.log'), 'utf8').catch(() => ''))
    return m == null ? 'no fencing line' : `fence began ${m[1]} ms after the deadline`
  }

  const fences = async (): Promise<Array<{ at: number, vm: string }>> =>
    (await readFile(log, 'utf8')).trim().split('\n').filter(l => l !== '').map(l => { const [t, vm] = l.split(' '); return { at: Number(t), vm: vm as string } })

  const inProcess = async (stateFile?: string): Promise<{ w: Watchdog, reports: FenceReport[] }> => {
    const driver = new CommandDriver({ start: 'true', stop: './stop-vm.sh {vm}', status: './status-vm.sh {vm}', timeout: 5000 }, { cwd: dir, stateDir: join(dir, 'state'), clock: systemClock, run: defaultRunner })
    const w = new Watchdog({ clock: systemClock, fenceAction: async v => await driver.fenceAction(v) }, { logFile: join(dir, 'watchdog.log'), ...(stateFile !== undefined ? { stateFile } : {}) })
    const reports: FenceReport[] = []
    w.onFence(r => reports.push(r))
    const t0 = performance.now()
    await w.start()
    console.log(`      watchdog start (spawn + hello + 3 pings): ${(performance.now() - t0).toFixed(0)} ms`)
    wd = w
    pids.push(w.status().pid as number)
    return { w, reports }
  }

  it('arm 300 ms: the stop script runs at ≈ 300 ms', async () => {
    const { w, reports } = await inProcess()
    const wall = Date.now()
    await w.arm('web01', systemClock.now() + 300)
    const [f] = await waitFor('fence', async () => { const f = await fences(); return f.length > 0 ? f : undefined }, 5000)
    const ms = (f?.at as number) - wall
    console.log(`      fenced ${ms} ms after a 300 ms arm (${await startLate()})`)
    assert.ok(ms >= 295 && ms <= 300 + LATE_OK_MS, `fenced after ${ms} ms`)
    await waitFor('report', () => reports.length > 0 ? true : undefined, 2000)
    assert.equal(reports[0]?.by, 'watchdog')
    assert.equal(reports[0]?.ok, true)
  })

  it('re-arming keeps the VM alive; the fence comes ≈ 300 ms after the last arm', async () => {
    const { w } = await inProcess()
    let lastWall = 0
    for (let i = 0; i < 10; i++) {
      lastWall = Date.now()
      await w.arm('web01', systemClock.now() + 300)
      await sleep(100)
    }
    assert.deepEqual(await fences(), [], 'no fence while renewals keep coming')
    const [f] = await waitFor('fence', async () => { const f = await fences(); return f.length > 0 ? f : undefined }, 5000)
    const ms = (f?.at as number) - lastWall
    assert.ok(ms >= 295 && ms <= 300 + LATE_OK_MS, `fenced ${ms} ms after the last arm`)
  })

  const spawnParent = async (mode: 'once' | 'rearm', fenceMs: number, stateFile?: string): Promise<{ child: ChildProcess, status: string, wdPid: number, arms: () => number[] }> => {
    const status = join(dir, 'parent.status')
    await writeFile(status, '')
    const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE, mode, 'web01', String(fenceMs), dir, status, ...(stateFile !== undefined ? [stateFile] : [])], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] })
    children.push(child)
    const lines = (): string[] => readFileSync(status, 'utf8').split('\n')
    const wdPid = await waitFor('watchdog pid', () => { const l = lines().find(x => x.startsWith('wd ')); return l === undefined ? undefined : Number(l.slice(3)) }, 20_000)
    pids.push(wdPid)
    const arms = (): number[] => lines().filter(x => x.startsWith('armed ')).map(x => Number(x.slice(6)))
    await waitFor('first arm', () => arms().length > 0 ? true : undefined, 10_000)
    return { child, status, wdPid, arms }
  }

  it('SIGSTOP of the daemon: the watchdog (another process) still fences on time', async () => {
    const { child, arms } = await spawnParent('rearm', 600)
    await waitFor('a few renewals', () => arms().length >= 4 ? true : undefined, 10_000)
    assert.deepEqual(await fences(), [])
    child.kill('SIGSTOP')
    const stoppedAt = Date.now()
    const [f] = await waitFor('fence', async () => { const f = await fences(); return f.length > 0 ? f : undefined }, 5000)
    const last = Math.max(...arms())
    const ms = (f?.at as number) - last
    console.log(`      parent stopped; fenced ${ms} ms after its last acknowledged arm (${(f?.at as number) - stoppedAt} ms after SIGSTOP; ${await startLate()})`)
    assert.ok(ms >= 595, `fenced early: ${ms} ms`)
    assert.ok(ms <= 600 + 100 + LATE_OK_MS, `fenced late: ${ms} ms`)
    assert.ok((f?.at as number) - stoppedAt <= 600 + LATE_OK_MS)
  })

  it('SIGKILL of the daemon: fenced at the deadline, not before; then the watchdog exits', async () => {
    const { child, wdPid, arms } = await spawnParent('once', 800)
    child.kill('SIGKILL')
    const killedAt = Date.now()
    const armedAt = arms()[0] as number
    await sleep(400)
    assert.deepEqual(await fences(), [], 'a dead daemon is no reason to fence early')
    assert.ok(alive(wdPid))
    const [f] = await waitFor('fence', async () => { const f = await fences(); return f.length > 0 ? f : undefined }, 5000)
    const ms = (f?.at as number) - armedAt
    console.log(`      parent killed ${killedAt - armedAt} ms after arming; fenced ${ms} ms after the 800 ms arm (${await startLate()})`)
    assert.ok(ms >= 795 && ms <= 800 + LATE_OK_MS, `fenced after ${ms} ms`)
    await waitFor('watchdog exit', () => alive(wdPid) ? undefined : true, 3000)
    const wlog = await readFile(join(dir, 'watchdog.log'), 'utf8')
    assert.match(wlog, /"type":"parent-gone"/)
    assert.match(wlog, /"type":"exit","orphaned":true/)
  })

  it('a crashed watchdog is restarted and re-armed: the VM is still fenced at its original deadline', async () => {
    const { w, reports } = await inProcess()
    const wall = Date.now()
    await w.arm('web01', systemClock.now() + 1500)
    const first = w.status().pid as number
    process.kill(first, 'SIGKILL')
    await waitFor('restart', () => w.status().state === 'up' && w.status().pid !== first ? true : undefined, 10_000)
    pids.push(w.status().pid as number)
    const [f] = await waitFor('fence', async () => { const f = await fences(); return f.length > 0 ? f : undefined }, 5000)
    const ms = (f?.at as number) - wall
    assert.ok(ms >= 1490 && ms <= 1500 + LATE_OK_MS, `fenced after ${ms} ms`)
    await waitFor('report', () => reports.length > 0 ? true : undefined, 2000)
    assert.equal(w.status().restarts, 1)
    assert.equal((await fences()).length, 1)
  })

  it('a clean daemon stop leaves the armed deadline to the watchdog, which fences and exits', async () => {
    const { w } = await inProcess()
    const pid = w.status().pid as number
    const wall = Date.now()
    await w.arm('web01', systemClock.now() + 500)
    const t0 = performance.now()
    await w.stop()
    wd = undefined
    assert.ok(performance.now() - t0 < 200, 'stop does not wait for the deadline')
    const [f] = await waitFor('fence', async () => { const f = await fences(); return f.length > 0 ? f : undefined }, 5000)
    const ms = (f?.at as number) - wall
    assert.ok(ms >= 495 && ms <= 500 + LATE_OK_MS, `fenced after ${ms} ms`)
    await waitFor('watchdog exit', () => alive(pid) ? undefined : true, 3000)
  })

  it('daemon restart: the new watchdog takes over the old one\'s deadline — fenced once, on time', async () => {
    const stateFile = join(dir, 'watchdog-state.json')
    const { child, wdPid, arms } = await spawnParent('once', 1500, stateFile)
    child.kill('SIGKILL')
    const armedAt = arms()[0] as number
    const { w } = await inProcess(stateFile)
    await waitFor('old watchdog handed over and exited', () => alive(wdPid) ? undefined : true, 3000)
    const inh = w.inherited()
    assert.equal(inh.length, 1)
    assert.equal(inh[0]?.vm, 'web01')
    const remaining = (inh[0]?.deadline as number) - systemClock.now()
    const expected = armedAt + 1500 - Date.now()
    assert.ok(Math.abs(remaining - expected) < 50, `inherited deadline off by ${remaining - expected} ms`)
    const [f] = await waitFor('fence', async () => { const f = await fences(); return f.length > 0 ? f : undefined }, 5000)
    const ms = (f?.at as number) - armedAt
    console.log(`      handed over; fenced ${ms} ms after the 1500 ms arm made by the previous daemon`)
    assert.ok(ms >= 1495 && ms <= 1500 + LATE_OK_MS, `fenced after ${ms} ms`)
    await sleep(300)
    assert.equal((await fences()).length, 1, 'one fence, not one per watchdog')
    assert.match(await readFile(join(dir, 'watchdog.log'), 'utf8'), /"type":"handed-over"/)
  })

  it('daemon restart: a renewal by the new daemon keeps the VM running past the old deadline', async () => {
    const stateFile = join(dir, 'watchdog-state.json')
    const { child, wdPid, arms } = await spawnParent('once', 1500, stateFile)
    child.kill('SIGKILL')
    const armedAt = arms()[0] as number
    const { w } = await inProcess(stateFile)
    assert.deepEqual(w.inherited().map(i => i.vm), ['web01'])
    await w.arm('web01', systemClock.now() + 5000)
    await waitFor('old watchdog gone', () => alive(wdPid) ? undefined : true, 3000)
    await sleep(Math.max(0, armedAt + 1500 + 300 - Date.now()))
    assert.deepEqual(await fences(), [], 'nobody fences at the old deadline')
    await w.disarm('web01')
  })
})
