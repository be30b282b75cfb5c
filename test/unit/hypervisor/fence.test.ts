import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { checkFenceAction, executeFence, pidMatches, type FenceAction } from '../../../daemon/hypervisor/fence.ts'
import { defaultRunner } from '../../../daemon/hypervisor/run.ts'
import { systemClock } from '../../../common/clock.ts'
import { tempDir } from '../../helpers/tmp.ts'
import { fail, fakeRunner, ok } from './fake-runner.ts'

const deps = { run: defaultRunner, clock: systemClock }

describe('hypervisor/fence', function () {
  this.timeout(20_000)
  let dir: string
  let cleanup: () => Promise<void>
  const children: ChildProcess[] = []
  before(async () => { ({ dir, cleanup } = await tempDir('vmesh-fence-')) })
  after(async () => { for (const c of children) c.kill('SIGKILL'); await cleanup() })

  it('command: exit 0 is off; a failure is already-off only when verify says so', async () => {
    const off: FenceAction = { kind: 'command', off: { kind: 'exec', argv: ['virsh', 'destroy', 'x'] }, timeoutMs: 1000, verify: { command: { kind: 'exec', argv: ['virsh', 'domstate', 'x'] }, offWhen: { stdout: '^shut off$', stderr: 'failed to get domain' } } }
    assert.equal(await executeFence(off, { ...deps, run: fakeRunner(() => ok()).run }), 'off')
    assert.equal(await executeFence(off, { ...deps, run: fakeRunner((_a, n) => n === 0 ? fail(1, 'not running') : ok('shut off\n\n')).run }), 'already-off')
    assert.equal(await executeFence(off, { ...deps, run: fakeRunner((_a, n) => n === 0 ? fail(1) : fail(1, "error: failed to get domain 'x'")).run }), 'already-off')
    await assert.rejects(executeFence(off, { ...deps, run: fakeRunner((_a, n) => n === 0 ? fail(1, 'busy') : ok('running\n')).run }), { name: 'HypervisorCommandFailedError', exitCode: 1, stderrTail: 'busy' } as object)
    const noVerify: FenceAction = { kind: 'command', off: { kind: 'shell', command: 'exit 3' }, timeoutMs: 1000 }
    await assert.rejects(executeFence(noVerify, deps), { name: 'HypervisorCommandFailedError' })
  })

  it('kill SIGKILLs the process of the pid file whose arguments include the match, then reports it gone', async () => {
    const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', 'guest=vm1'], { stdio: 'ignore' })
    children.push(child)
    await new Promise(resolve => child.once('spawn', resolve))
    const pidFile = join(dir, 'vm1.pid')
    await writeFile(pidFile, `${child.pid}\n`)
    assert.equal(await pidMatches(child.pid as number, 'guest=vm1'), true)
    const exited = new Promise<string | null>(resolve => child.once('exit', (_c, sig) => { resolve(sig) }))
    const a: FenceAction = { kind: 'kill', pidFile, match: 'guest=vm1', timeoutMs: 5000 }
    assert.equal(await executeFence(a, deps), 'off')
    assert.equal(await exited, 'SIGKILL')
    assert.equal(await executeFence(a, deps), 'already-off')
  })

  it('kill finds the process by program and argument when there is no pid file yet (Linux)', async function () {
    if (process.platform !== 'linux') { this.skip(); return }
    const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', 'guest=vm2'], { stdio: 'ignore' })
    children.push(child)
    await new Promise(resolve => child.once('spawn', resolve))
    const exited = new Promise<string | null>(resolve => child.once('exit', (_c, sig) => { resolve(sig) }))
    const a: FenceAction = { kind: 'kill', match: 'guest=vm2', program: 'node', pidFile: join(dir, 'not-yet.pid'), timeoutMs: 5000 }
    assert.equal(await executeFence(a, deps), 'off')
    assert.equal(await exited, 'SIGKILL')
    assert.equal(await executeFence(a, deps), 'already-off')
  })

  it('kill leaves a process alone when the pid was reused by something else', async () => {
    const pidFile = join(dir, 'reused.pid')
    await writeFile(pidFile, `${process.pid}\n`) // this test process does not have "guest=vm9" in its argv
    assert.equal(await executeFence({ kind: 'kill', pidFile, match: 'guest=vm9', timeoutMs: 1000 }, deps), 'already-off')
    assert.equal(await executeFence({ kind: 'kill', pidFile: join(dir, 'missing.pid'), match: 'x', timeoutMs: 1000 }, deps), 'already-off')
    await writeFile(pidFile, 'garbage')
    assert.equal(await executeFence({ kind: 'kill', pidFile, match: 'x', timeoutMs: 1000 }, deps), 'already-off')
  })

  it('checkFenceAction accepts the drivers\' shapes and names what is wrong otherwise', () => {
    assert.equal(checkFenceAction({ kind: 'kill', pidFile: '/r/x.pid', match: 'guest=x', timeoutMs: 5000 }), null)
    assert.equal(checkFenceAction({ kind: 'kill', program: 'qemu-system-x86_64', match: 'guest=x', timeoutMs: 5000 }), null)
    assert.equal(checkFenceAction({ kind: 'command', off: { kind: 'shell', command: 'x', cwd: '/', env: { A: 'b' } }, timeoutMs: 1, verify: { command: { kind: 'exec', argv: ['a'] }, offWhen: { exitCode: 1, stdout: '^x$' } } }), null)
    const bad: unknown[] = [
      null, 'x', {}, { kind: 'reboot' },
      { kind: 'kill', pidFile: 1, match: 'x', timeoutMs: 1 },
      { kind: 'kill', pidFile: '/p', match: 'x', timeoutMs: 0 },
      { kind: 'kill', pidFile: '/p', match: 'x', timeoutMs: Infinity },
      { kind: 'kill', match: 'x', timeoutMs: 1 },
      { kind: 'kill', pidFile: '/p', match: '', timeoutMs: 1 },
      { kind: 'kill', program: '', match: 'x', timeoutMs: 1 },
      { kind: 'command', off: { kind: 'exec', argv: [] }, timeoutMs: 1 },
      { kind: 'command', off: { kind: 'exec', argv: ['a\0b'] }, timeoutMs: 1 },
      { kind: 'command', off: { kind: 'shell', command: 'x'.repeat(20_000) }, timeoutMs: 1 },
      { kind: 'command', off: { kind: 'shell', command: 'x', env: { A: 1 } }, timeoutMs: 1 },
      { kind: 'command', off: { kind: 'shell', command: 'x' }, timeoutMs: 1, verify: { command: { kind: 'shell', command: 'y' }, offWhen: { stdout: '(' } } },
      { kind: 'command', off: { kind: 'shell', command: 'x' }, timeoutMs: 1, verify: { command: { kind: 'shell', command: 'y' }, offWhen: { exitCode: 1.5 } } }
    ]
    for (const b of bad) assert.equal(typeof checkFenceAction(b), 'string', JSON.stringify(b)?.slice(0, 80))
  })
})
