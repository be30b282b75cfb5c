import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { QemuDriver, qemuQmpSocketOf } from '../../../daemon/hypervisor/qemu.ts'
import { ManualClock } from '../../../common/clock.ts'
import { tempDir } from '../../helpers/tmp.ts'
import { fail, fakeRunner, ok } from './fake-runner.ts'

describe('hypervisor/qemu (command line, without qemu)', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeEach(async () => { ({ dir, cleanup } = await tempDir('vmesh-qemu-')) })
  afterEach(async () => { await cleanup() })

  const disks = async (): Promise<string[]> => {
    const vhd = Buffer.alloc(4096); vhd.write('conectix', 4096 - 512, 'latin1')
    const vhdx = Buffer.alloc(1024); vhdx.write('vhdxfile', 0, 'latin1')
    await writeFile(join(dir, 'a,b.vhd'), vhd)
    await writeFile(join(dir, 'c.vhdx'), vhdx)
    await writeFile(join(dir, 'd.img'), Buffer.alloc(1024))
    return [join(dir, 'a,b.vhd'), join(dir, 'c.vhdx'), join(dir, 'd.img')]
  }

  it('builds the command line: formats from signatures, escaped commas, runtime files in the VM folder, extra args last', async () => {
    const d = new QemuDriver({ memoryMiB: 64, args: ['-accel', 'tcg', '-nodefaults'] }, { cwd: dir, stateDir: join(dir, 'state'), clock: new ManualClock(), run: fakeRunner(() => ok()).run })
    const { argv } = await d.commandLine('web01', { disks: await disks(), files: [], dir: join(dir, 'run') })
    const r = join(dir, 'run')
    assert.deepEqual(argv, [
      'qemu-system-x86_64', '-name', 'guest=web01', '-m', '64', '-display', 'none', '-monitor', 'none',
      '-serial', `file:${r}/web01.serial.log`, '-qmp', `unix:${r}/web01.qmp,server=on,wait=off`, '-pidfile', `${r}/web01.pid`, '-daemonize',
      '-drive', `file=${dir}/a,,b.vhd,format=vpc,if=ide`, '-drive', `file=${dir}/c.vhdx,format=vhdx,if=ide`, '-drive', `file=${dir}/d.img,format=raw,if=ide`,
      '-accel', 'tcg', '-nodefaults'
    ])
  })

  it('adds an accelerator when the extra args name none, and moves a too-long socket path into the state dir', async () => {
    const d = new QemuDriver({}, { cwd: dir, stateDir: join(dir, 's'), clock: new ManualClock(), run: fakeRunner(() => ok()).run })
    const deep = join(dir, 'x'.repeat(120))
    const { argv, runtime } = await d.commandLine('web01', { disks: (await disks()).slice(1, 2), files: [], dir: deep })
    assert.ok(argv.includes('-accel'))
    assert.ok(argv.includes('256'))
    assert.ok(runtime.qmpSocket.startsWith(join(dir, 's', 'qmp-')))
    assert.ok(Buffer.byteLength(runtime.qmpSocket) <= 100)
  })

  it('start: a failing qemu is HypervisorCommandFailedError; stale epochs and missing disks are refused', async () => {
    const { run, calls } = fakeRunner(() => fail(1, 'qemu-system-x86_64: -drive file=x: Could not open'))
    const d = new QemuDriver({}, { cwd: dir, stateDir: join(dir, 'state'), clock: new ManualClock(), run, procRoot: join(dir, 'noproc') })
    const ds = await disks()
    await assert.rejects(d.start('web01', { disks: ds, files: [], dir: join(dir, 'run') }, 2), { name: 'HypervisorCommandFailedError', exitCode: 1 } as object)
    assert.equal(calls.length, 1)
    assert.equal(calls[0]?.argv[0], 'qemu-system-x86_64')
    await assert.rejects(d.start('web01', { disks: ds, files: [], dir: join(dir, 'run') }, 1), { name: 'StaleEpochError' })
    await assert.rejects(d.start('web01', { disks: [], files: [], dir: join(dir, 'run') }, 2), { name: 'VmFilesError' })
    await assert.rejects(d.start('web01', { disks: [join(dir, 'missing.vhdx')], files: [], dir: join(dir, 'run') }, 2), { name: 'VmFilesError' })
    // exited 0 but no live pid: still a failure
    const d2 = new QemuDriver({}, { cwd: dir, stateDir: join(dir, 'state2'), clock: new ManualClock(), run: fakeRunner(() => ok()).run, procRoot: join(dir, 'noproc') })
    await assert.rejects(d2.start('web01', { disks: ds, files: [], dir: join(dir, 'run2') }, 1), { name: 'HypervisorCommandFailedError' })
  })

  it('qemuQmpSocketOf: the socket the driver recorded at start (for the dirty-bitmap source); none for unknown VMs and test instances', async () => {
    const state = join(dir, 'state')
    assert.equal(await qemuQmpSocketOf(state, 'web01'), undefined)
    const d = new QemuDriver({}, { cwd: dir, stateDir: state, clock: new ManualClock(), run: fakeRunner(() => fail(1, 'no')).run, procRoot: join(dir, 'noproc') })
    const ds = await disks()
    await assert.rejects(d.start('web01', { disks: ds, files: [], dir: join(dir, 'run') }, 1))
    assert.equal(await qemuQmpSocketOf(state, 'web01'), join(dir, 'run', 'web01.qmp'))
    await assert.rejects(d.startTest('web01', 'web01-test', { disks: ds, files: [], dir: join(dir, 'test') }))
    assert.equal(await qemuQmpSocketOf(state, 'web01-test'), undefined)
    assert.equal(await qemuQmpSocketOf(state, 'other'), undefined)
  })

  it('the fence action kills by -name argument before the first start, and by pid file too after it', async () => {
    const d = new QemuDriver({ binary: '/opt/qemu/bin/qemu-system-x86_64' }, { cwd: dir, stateDir: join(dir, 'state'), clock: new ManualClock(), run: fakeRunner(() => ok()).run, procRoot: join(dir, 'noproc') })
    assert.deepEqual(await d.fenceAction('web01'), { kind: 'kill', match: 'guest=web01', program: 'qemu-system-x86_64', timeoutMs: 5000 })
    await d.start('web01', { disks: (await disks()).slice(0, 1), files: [], dir: join(dir, 'run') }, 1).catch(() => {})
    assert.deepEqual(await d.fenceAction('web01'), { kind: 'kill', match: 'guest=web01', program: 'qemu-system-x86_64', pidFile: join(dir, 'run', 'web01.pid'), timeoutMs: 5000 })
    assert.equal(await d.isRunning('web01'), false)
    await d.turnOff('web01') // nothing runs: success
    assert.deepEqual(await d.list(), [{ name: 'web01', disks: [join(dir, 'a,b.vhd')], files: [], state: 'off' }])
  })
})
