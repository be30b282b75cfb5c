import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { defaultRunner } from '../../../daemon/hypervisor/run.ts'
import { tempDir } from '../../helpers/tmp.ts'

/** Alive and not a zombie (a container's init may not reap orphans). */
function alive (pid: number): boolean {
  try { process.kill(pid, 0) } catch { return false }
  try { return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')) } catch { return false }
}

describe('hypervisor/run', function () {
  this.timeout(20_000)
  let dir: string
  let cleanup: () => Promise<void>
  before(async () => { ({ dir, cleanup } = await tempDir('vmesh-run-')) })
  after(async () => { await cleanup() })

  it('returns exit code, stdout and stderr; passes argv without a shell; sets cwd and env', async () => {
    const r = await defaultRunner(['/bin/sh', '-c', 'echo "$1|$PWD|$X"; echo oops >&2; exit 3', 'sh', '$(not run) *'], { cwd: dir, timeoutMs: 5000, env: { X: 'y' } })
    assert.equal(r.code, 3)
    assert.equal(r.stdout, `$(not run) *|${dir}|y\n`)
    assert.equal(r.stderr, 'oops\n')
    assert.equal(r.truncated, false)
  })

  it('feeds input and caps stdout', async () => {
    const r = await defaultRunner(['/bin/cat'], { timeoutMs: 5000, input: 'x'.repeat(10_000), maxStdoutBytes: 100 })
    assert.equal(r.code, 0)
    assert.equal(r.stdout.length, 100)
    assert.equal(r.truncated, true)
  })

  it('a missing program is HypervisorSpawnError', async () => {
    await assert.rejects(defaultRunner(['/nonexistent/vmesh-nope'], { timeoutMs: 5000 }), { name: 'HypervisorSpawnError', code: 'ERR_HYPERVISOR_SPAWN' })
  })

  it('a timeout kills the whole process group, grandchildren included', async () => {
    const pidFile = join(dir, 'grandchild.pid')
    const t0 = performance.now()
    await assert.rejects(defaultRunner(['/bin/sh', '-c', `sleep 30 & echo $! > ${pidFile}; wait`], { timeoutMs: 300 }), { name: 'HypervisorTimeoutError', code: 'ERR_HYPERVISOR_TIMEOUT' })
    assert.ok(performance.now() - t0 < 3000)
    const gc = Number((await readFile(pidFile, 'utf8')).trim())
    for (let i = 0; i < 100 && alive(gc); i++) await new Promise(resolve => setTimeout(resolve, 10))
    assert.equal(alive(gc), false, 'the background sleep must be killed with its group')
  })

  it('an abort signal stops the command with AbortedError', async () => {
    const ac = new AbortController()
    const p = defaultRunner(['/bin/sleep', '30'], { timeoutMs: 10_000, signal: ac.signal })
    setTimeout(() => { ac.abort() }, 50)
    await assert.rejects(p, { code: 'ERR_ABORTED' })
    const pre = new AbortController(); pre.abort()
    await assert.rejects(defaultRunner(['/bin/true'], { timeoutMs: 1000, signal: pre.signal }), { code: 'ERR_ABORTED' })
  })

  it('returns soon after exit even when a background child keeps the pipes open', async () => {
    const pidFile = join(dir, 'daemonized.pid')
    const t0 = performance.now()
    const r = await defaultRunner(['/bin/sh', '-c', `sleep 5 & echo $! > ${pidFile}; echo started`], { timeoutMs: 4000 })
    const ms = performance.now() - t0
    assert.equal(r.code, 0)
    assert.equal(r.stdout, 'started\n')
    assert.ok(ms < 2000, `took ${ms} ms`)
    try { process.kill(Number((await readFile(pidFile, 'utf8')).trim()), 'SIGKILL') } catch {}
  })
})
