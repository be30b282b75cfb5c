import assert from 'node:assert/strict'
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { CommandDriver, parseInventoryJson } from '../../../daemon/hypervisor/command.ts'
import { defaultRunner } from '../../../daemon/hypervisor/run.ts'
import { systemClock } from '../../../common/clock.ts'
import { tempDir } from '../../helpers/tmp.ts'

/**
 * The command driver against real /bin/sh scripts: a fake "hypervisor" whose VMs are files
 * in a folder (present = running), which also logs every argument it receives.
 */
const SCRIPTS: Record<string, string> = {
  'start-vm.sh': '#!/bin/sh\nprintf "%s\\n" "start" "$@" >> calls.log\nprintf "%s|%s|%s\\n" "$VMESH_VM" "$VMESH_EPOCH" "$VMESH_DIR" >> env.log\n[ -n "$FAIL_START" ] && { echo "no capacity" >&2; exit 7; }\ntouch "run/$1"\n',
  'stop-vm.sh': '#!/bin/sh\nprintf "%s\\n" "stop" "$@" >> calls.log\n[ -f "run/$1" ] || { echo "not running" >&2; exit 1; }\nrm -f "run/$1"\n',
  'status.sh': '#!/bin/sh\n[ -f broken ] && exit 9\n[ -f "run/$1" ]\n',
  'list.sh': '#!/bin/sh\ncat inventory.json\n'
}

describe('hypervisor/command driver', function () {
  this.timeout(20_000)
  let dir: string
  let cleanup: () => Promise<void>
  let driver: CommandDriver

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('vmesh-cmd-'))
    for (const [name, text] of Object.entries(SCRIPTS)) { await writeFile(join(dir, name), text); await chmod(join(dir, name), 0o755) }
    await mkdir(join(dir, 'run'))
    driver = new CommandDriver({ start: './start-vm.sh {vm} {epoch} {dir} {files}', stop: './stop-vm.sh {vm}', status: './status.sh {vm}', list: './list.sh', timeout: 5000 }, { cwd: dir, stateDir: join(dir, 'state'), clock: systemClock, run: defaultRunner })
  })
  afterEach(async () => { await cleanup() })

  const calls = async (): Promise<string[]> => (await readFile(join(dir, 'calls.log'), 'utf8')).trimEnd().split('\n')

  it('start fills the placeholders with quoted values, in the config folder, with VMESH_* set', async () => {
    await driver.start("web 01's", { disks: ['/r/a disk.vhdx'], files: ["/r/x'y.vmcx"], dir: '/r/web 01' }, 4)
    assert.deepEqual(await calls(), ['start', "web 01's", '4', '/r/web 01', '/r/a disk.vhdx', "/r/x'y.vmcx"])
    assert.equal((await readFile(join(dir, 'env.log'), 'utf8')).trim(), "web 01's|4|/r/web 01")
    assert.equal(await driver.isRunning("web 01's"), true)
  })

  it('status: exit 0 running, 1 not running, anything else an error', async () => {
    assert.equal(await driver.isRunning('web01'), false)
    await driver.start('web01', { disks: [], files: [], dir: '/r' }, 1)
    assert.equal(await driver.isRunning('web01'), true)
    await writeFile(join(dir, 'broken'), '')
    await assert.rejects(driver.isRunning('web01'), (err: Error & { code?: string, exitCode?: number }) => err.name === 'HypervisorCommandFailedError' && err.exitCode === 9)
  })

  it('turnOff runs stop; a failing stop on a VM that status says is off is still success', async () => {
    await driver.start('web01', { disks: [], files: [], dir: '/r' }, 1)
    await driver.turnOff('web01')
    assert.equal(await driver.isRunning('web01'), false)
    await driver.turnOff('web01') // stop exits 1 ("not running"), status exits 1: off
    assert.deepEqual((await calls()).filter(c => c === 'stop').length, 2)
  })

  it('turnOff fails with the exit code and stderr when the VM is still running', async () => {
    const stuck = new CommandDriver({ start: 'true', stop: 'echo "device busy" >&2; exit 4', status: 'exit 0' }, { cwd: dir, stateDir: join(dir, 'state'), clock: systemClock, run: defaultRunner })
    await assert.rejects(stuck.turnOff('web01'), (err: Error & { code?: string, exitCode?: number, stderrTail?: string }) =>
      err.name === 'HypervisorCommandFailedError' && err.code === 'ERR_HYPERVISOR_COMMAND_FAILED' && err.exitCode === 4 && err.stderrTail === 'device busy')
  })

  it('a failing start is HypervisorCommandFailedError; the epoch is still recorded', async () => {
    const failing = new CommandDriver({ start: 'FAIL_START=1 ./start-vm.sh {vm} {epoch} {dir}', stop: './stop-vm.sh {vm}', status: './status.sh {vm}' }, { cwd: dir, stateDir: join(dir, 'state'), clock: systemClock, run: defaultRunner })
    await assert.rejects(failing.start('web01', { disks: [], files: [], dir: '/r' }, 6), (err: Error & { exitCode?: number, stderrTail?: string }) => err.name === 'HypervisorCommandFailedError' && err.exitCode === 7 && err.stderrTail === 'no capacity')
    assert.equal(await failing.highestEpoch('web01'), 6)
  })

  it('a start below the highest epoch seen is refused before the script runs', async () => {
    await driver.start('web01', { disks: [], files: [], dir: '/r' }, 5)
    await assert.rejects(driver.start('web01', { disks: [], files: [], dir: '/r' }, 4), { name: 'StaleEpochError', code: 'ERR_STALE_EPOCH' })
    assert.equal((await calls()).filter(c => c === 'start').length, 1)
    // a new driver over the same state dir (daemon restart) remembers
    const again = new CommandDriver({ start: './start-vm.sh {vm}', stop: './stop-vm.sh {vm}', status: './status.sh {vm}' }, { cwd: dir, stateDir: join(dir, 'state'), clock: systemClock, run: defaultRunner })
    await assert.rejects(again.start('web01', { disks: [], files: [], dir: '/r' }, 3), { name: 'StaleEpochError' })
  })

  it('list parses the script\'s JSON and resolves relative paths against the config folder', async () => {
    await writeFile(join(dir, 'inventory.json'), JSON.stringify([
      { name: 'web01', disks: ['/vms/web01.vhdx'], files: ['web01.vmcx'], state: 'running' },
      { name: 'db01', disks: ['/vms/db01.vhdx'], state: 'off', id: 'x-1' }
    ]))
    assert.deepEqual(await driver.list(), [
      { name: 'web01', disks: ['/vms/web01.vhdx'], files: [join(dir, 'web01.vmcx')], state: 'running' },
      { name: 'db01', disks: ['/vms/db01.vhdx'], files: [], state: 'off', id: 'x-1' }
    ])
  })

  it('list without a list command is HypervisorUnsupportedError; bad output is HypervisorOutputError', async () => {
    const noList = new CommandDriver({ start: 'true', stop: 'true', status: 'true' }, { cwd: dir, stateDir: join(dir, 'state'), clock: systemClock, run: defaultRunner })
    await assert.rejects(noList.list(), { name: 'HypervisorUnsupportedError', code: 'ERR_HYPERVISOR_UNSUPPORTED' })
    for (const bad of ['not json', '{}', '[{"disks":[]}]', '[{"name":"a","state":"on"}]', '[{"name":"a","disks":"x"}]', '[{"name":"a","disks":[""]}]']) {
      assert.throws(() => parseInventoryJson(bad, dir, 'list'), { name: 'HypervisorOutputError', code: 'ERR_HYPERVISOR_BAD_OUTPUT' }, bad)
    }
  })

  it('refuses templates using a placeholder the operation does not have', () => {
    const deps = { cwd: dir, stateDir: join(dir, 'state'), clock: systemClock, run: defaultRunner }
    assert.throws(() => new CommandDriver({ start: 'x {vm}', stop: 'x {dir}', status: 'x' }, deps), { name: 'HypervisorConfigError', code: 'ERR_HYPERVISOR_CONFIG' })
    assert.throws(() => new CommandDriver({ start: 'x', stop: 'x', status: 'x {files}' }, deps), { code: 'ERR_HYPERVISOR_CONFIG' })
    assert.throws(() => new CommandDriver({ start: '  ', stop: 'x', status: 'x' }, deps), { code: 'ERR_HYPERVISOR_CONFIG' })
  })

  it('a command past its timeout is HypervisorTimeoutError', async () => {
    const slow = new CommandDriver({ start: 'sleep 10', stop: 'true', status: 'sleep 10', timeout: 200 }, { cwd: dir, stateDir: join(dir, 'state'), clock: systemClock, run: defaultRunner })
    await assert.rejects(slow.isRunning('x'), { name: 'HypervisorTimeoutError', code: 'ERR_HYPERVISOR_TIMEOUT' })
  })

  it('the fence action is the stop command, verified by status, in the config folder', async () => {
    const a = await driver.fenceAction("it's")
    assert.deepEqual(a, {
      kind: 'command',
      off: { kind: 'shell', command: "./stop-vm.sh 'it'\\''s'", cwd: dir, env: { VMESH_VM: "it's" } },
      timeoutMs: 5000,
      verify: { command: { kind: 'shell', command: "./status.sh 'it'\\''s'", cwd: dir, env: { VMESH_VM: "it's" } }, offWhen: { exitCode: 1 } }
    })
  })
})

describe('hypervisor/command driver on win32 (platform injected)', () => {
  it('runs templates in cmd.exe /d /s /c with double-quoted values, verbatim, and fences the same way', async () => {
    const { fakeRunner, ok, fail } = await import('./fake-runner.ts')
    const { run, calls } = fakeRunner((argv) => argv.join(' ').includes('status.cmd') ? fail(1) : ok())
    const { dir, cleanup } = await tempDir('vmesh-cmd-win-')
    try {
      const d = new CommandDriver({ start: 'start-vm.cmd {vm} {epoch} {dir} {files}', stop: 'stop-vm.cmd {vm}', status: 'status.cmd {vm}' }, { cwd: 'C:\\vmesh', stateDir: dir, clock: systemClock, run, os: 'win32' })
      await d.start('web 01', { disks: ['C:\\vms\\web 01\\disk.vhdx'], files: [], dir: 'C:\\vms\\web 01\\' }, 2)
      assert.deepEqual(calls[0]?.argv, ['cmd.exe', '/d', '/s', '/c', '"start-vm.cmd "web 01" "2" "C:\\vms\\web 01\\\\" "C:\\vms\\web 01\\disk.vhdx""'])
      assert.equal(calls[0]?.opts.windowsVerbatimArguments, true)
      await d.turnOff('web 01')
      assert.deepEqual(calls[1]?.argv, ['cmd.exe', '/d', '/s', '/c', '"stop-vm.cmd "web 01""'])
      assert.equal(calls[1]?.opts.windowsVerbatimArguments, true)
      // a value cmd cannot take literally is refused before anything runs
      await assert.rejects(d.start('50%off', { disks: [], files: [], dir: 'C:\\x' }, 3), { code: 'ERR_HYPERVISOR_CONFIG' })
      assert.equal(calls.length, 2)
    } finally { await cleanup() }
  })
})
