/**
 * The qemu driver for real: boots the testbed's 512-byte guest (diskwriter.asm, built here with
 * nasm into a temp folder) from a VHD under TCG, checks it runs and writes to its disk, turns it
 * off; then lets the watchdog process fence it by pid. Skips when qemu-system-x86_64, qemu-img
 * or nasm (or a prebuilt $TESTBED_BIN/diskwriter.bin) is missing.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { open, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { systemClock } from '../../../common/clock.ts'
import { QemuDriver } from '../../../daemon/hypervisor/qemu.ts'
import { defaultRunner } from '../../../daemon/hypervisor/run.ts'
import { Watchdog, type FenceReport } from '../../../daemon/watchdog/client.ts'
import { tempDir } from '../../helpers/tmp.ts'

// shared/ sits beside the checkout (in CI too); /work/shared is where it lives for developers
const ASM = [join(fileURLToPath(new URL('../../../../shared/testbed/diskwriter.asm', import.meta.url))), '/work/shared/testbed/diskwriter.asm'].find(p => existsSync(p)) ?? '/work/shared/testbed/diskwriter.asm'
const has = (cmd: string, arg = '--version'): boolean => spawnSync(cmd, [arg], { stdio: 'ignore' }).status === 0
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

async function waitFor (what: string, fn: () => Promise<boolean> | boolean, ms: number): Promise<void> {
  const end = Date.now() + ms
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

describe('integration: qemu driver with a real guest', function () {
  this.timeout(120_000)
  let dir: string
  let cleanup: () => Promise<void>
  let disk: string
  let bin: string
  let driver: QemuDriver
  let wd: Watchdog | undefined

  before(async function () {
    if (!has('qemu-system-x86_64')) { this.skip(); return }
    if (!has('qemu-img') || !has('qemu-io')) { this.skip(); return }
    ({ dir, cleanup } = await tempDir('vmesh-qemu-it-'))
    bin = join(process.env.TESTBED_BIN ?? '/tmp/testbed-bin', 'diskwriter.bin')
    if (!existsSync(bin)) {
      if (!has('nasm', '-v') || !existsSync(ASM)) { this.skip(); return }
      bin = join(dir, 'diskwriter.bin')
      assert.equal(spawnSync('nasm', ['-f', 'bin', '-o', bin, ASM]).status, 0)
    }
    disk = join(dir, 'guest.vhd')
    assert.equal(spawnSync('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'force_size=on', disk, '64M']).status, 0)
    assert.equal(spawnSync('qemu-io', ['-f', 'vpc', '-c', `write -q -s ${bin} 0 512`, disk]).status, 0)
    driver = new QemuDriver({ memoryMiB: 32, args: ['-nodefaults', '-no-reboot'] }, { cwd: dir, stateDir: join(dir, 'state'), clock: systemClock, run: defaultRunner })
  })
  after(async () => {
    await wd?.stop()
    if (driver !== undefined) for (const vm of ['guest', 'guest2']) await driver.turnOff(vm).catch(() => {})
    await cleanup?.()
  })

  it('starts the guest on its VHD, sees it run and write, turns it off', async () => {
    const run = join(dir, 'run')
    const t0 = performance.now()
    await driver.start('guest', { disks: [disk], files: [], dir: run }, 1)
    console.log(`      qemu start (daemonized): ${(performance.now() - t0).toFixed(0)} ms`)
    assert.equal(await driver.isRunning('guest'), true)
    const serial = join(run, 'guest.serial.log')
    await waitFor('5 disk writes', async () => ((await readFile(serial, 'utf8').catch(() => '')).match(/^W /gm) ?? []).length >= 5, 30_000)
    assert.match(await readFile(serial, 'utf8'), /^BOOT diskwriter/)
    const listed = (await driver.list()).find(v => v.name === 'guest')
    assert.deepEqual(listed, { name: 'guest', disks: [disk], files: [], state: 'running' })
    await assert.rejects(driver.start('guest', { disks: [disk], files: [], dir: run }, 1), { name: 'VmAlreadyRunningError' })

    const t1 = performance.now()
    await driver.turnOff('guest')
    console.log(`      turnOff (QMP quit): ${(performance.now() - t1).toFixed(0)} ms`)
    assert.equal(await driver.isRunning('guest'), false)
    await driver.turnOff('guest') // idempotent

    // the guest's first record sits at LBA 2 (n = 1): "CNTR" then n
    const raw = join(dir, 'guest.raw')
    assert.equal(spawnSync('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', disk, raw]).status, 0)
    const fh = await open(raw, 'r')
    const rec = Buffer.alloc(8)
    await fh.read(rec, 0, 8, 512 + 4096 * 512)
    await fh.close()
    assert.equal(rec.toString('latin1', 0, 4), 'CNTR')
    assert.equal(rec.readUInt32LE(4), 1)
  })

  it('refuses a start below the highest epoch seen', async () => {
    await assert.rejects(driver.start('guest', { disks: [disk], files: [], dir: join(dir, 'run') }, 0), { name: 'StaleEpochError' })
  })

  it('the watchdog process fences the running guest by pid at its deadline', async () => {
    await driver.start('guest', { disks: [disk], files: [], dir: join(dir, 'run') }, 2)
    assert.equal(await driver.isRunning('guest'), true)
    const w = new Watchdog({ clock: systemClock, fenceAction: async v => await driver.fenceAction(v) })
    wd = w
    const reports: FenceReport[] = []
    w.onFence(r => reports.push(r))
    await w.start()
    const t0 = performance.now()
    await w.arm('guest', systemClock.now() + 500)
    await waitFor('guest off', async () => !(await driver.isRunning('guest')), 5000)
    const ms = performance.now() - t0
    console.log(`      real qemu fenced ${ms.toFixed(0)} ms after a 500 ms arm`)
    assert.ok(ms >= 495 && ms <= 900, `off after ${ms} ms`)
    await waitFor('report', () => reports.length > 0, 2000)
    assert.deepEqual([reports[0]?.by, reports[0]?.ok, reports[0]?.outcome], ['watchdog', true, 'off'])
  })

  it('armed before its first start (no pid file known yet), the guest is still fenced on time', async () => {
    const disk2 = join(dir, 'guest2.vhdx')
    assert.equal(spawnSync('qemu-img', ['create', '-q', '-f', 'vhdx', disk2, '64M']).status, 0)
    assert.equal(spawnSync('qemu-io', ['-f', 'vhdx', '-c', `write -q -s ${bin} 0 512`, disk2]).status, 0)
    const w = wd as Watchdog
    const action = await driver.fenceAction('guest2')
    assert.equal(action.kind === 'kill' ? action.pidFile : 'x', undefined)
    const t0 = performance.now()
    await w.arm('guest2', systemClock.now() + 1500)
    await driver.start('guest2', { disks: [disk2], files: [], dir: join(dir, 'run2') }, 1)
    assert.equal(await driver.isRunning('guest2'), true)
    await waitFor('guest2 off', async () => !(await driver.isRunning('guest2')), 5000)
    const ms = performance.now() - t0
    console.log(`      VHDX guest armed before start, fenced ${ms.toFixed(0)} ms after a 1500 ms arm`)
    assert.ok(ms >= 1495 && ms <= 1900, `off after ${ms} ms`)
  })
})
