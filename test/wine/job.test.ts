/**
 * The premise of the watchdog's spawn on Windows, checked on this Wine: libuv puts a child
 * spawned without `detached` in a job object that is killed when the parent goes (so a daemon
 * crash would take such a watchdog with it), and the options the daemon spawns its watchdog
 * with (common/platform independentChildOptions) keep the child out of it. The parent is
 * Windows Node under Wine, killed the way the failover test kills a daemon: SIGKILL of the
 * Linux process that runs its node.exe. Each child writes a heartbeat file every 200 ms.
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { tmpdir } from 'node:os'
import { STAGE, WINE, wineEnv, wineMissing, wineNodeArgv, winPath } from './wine.ts'

const PARENT = `
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
const dir = process.argv[2]
const platform = await import(process.argv[3])
// written aside and renamed over: writeFileSync truncates first, and a child killed (or a file
// read) between the truncation and the write gave an empty file, which read as "no beat"
const beat = (name) => \`const fs = require('fs'); const f = require('path').join(\${JSON.stringify(dir)}, '\${name}.hb'); setInterval(() => { fs.writeFileSync(f + '.tmp', String(Date.now()) + ' ' + process.pid); fs.renameSync(f + '.tmp', f) }, 200)\`
const plain = spawn(process.execPath, ['-e', beat('plain')], { stdio: 'ignore' })
const watchdogLike = spawn(process.execPath, ['-e', beat('independent')], { stdio: 'ignore', ...platform.independentChildOptions('win32') })
watchdogLike.unref()
writeFileSync(dir + '\\\\pids', JSON.stringify({ parent: process.pid, plain: plain.pid, independent: watchdogLike.pid }))
setInterval(() => {}, 60_000)
`

async function beat (dir: string, name: string): Promise<{ at: number, pid: number } | undefined> {
  const t = await readFile(join(dir, `${name}.hb`), 'utf8').catch(() => '')
  const [at, pid] = t.trim().split(' ').map(Number)
  return at !== undefined && pid !== undefined && Number.isFinite(at) && Number.isFinite(pid) ? { at, pid } : undefined
}

async function sleep (ms: number): Promise<void> { await new Promise(resolve => setTimeout(resolve, ms)) }

describe('windows tier (Wine): job objects', function () {
  this.timeout(180_000)
  let dir: string | undefined
  let parent: ChildProcess | undefined
  before(function () {
    const why = wineMissing()
    if (why !== undefined) { console.log(`      skipped: ${why}`); this.skip() }
  })
  after(async () => {
    parent?.kill('SIGKILL')
    if (dir !== undefined) {
      // end the survivor (and anything left) by its Windows pid only: other tests share the prefix
      const pids = JSON.parse(await readFile(join(dir, 'pids'), 'utf8').catch(() => '{}')) as Record<string, number>
      for (const pid of Object.values(pids)) spawnSync(WINE, ['taskkill', '/F', '/PID', String(pid)], { env: wineEnv(), stdio: 'ignore' })
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('a hard kill of the parent takes its plain child along (job object) but not the watchdog-style one', async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmesh-wine-job-'))
    await writeFile(join(dir, 'parent.mjs'), PARENT)
    const platformUrl = `file:///${winPath(join(STAGE, 'common', 'platform', 'index.js')).replace(/\\/g, '/')}`
    const argv = wineNodeArgv([winPath(join(dir, 'parent.mjs')), winPath(dir), platformUrl], join(dir, 'parent.log'))
    const p = spawn(argv[0] as string, argv.slice(1), { cwd: STAGE, env: wineEnv(), stdio: 'ignore' })
    parent = p
    // both children beating
    const deadline = Date.now() + 120_000
    while ((await beat(dir, 'plain')) === undefined || (await beat(dir, 'independent')) === undefined) {
      if (Date.now() > deadline || p.exitCode !== null) assert.fail(`children did not start: ${await readFile(join(dir, 'parent.log'), 'utf8').catch(() => '')}`)
      await sleep(250)
    }
    p.kill('SIGKILL')
    await new Promise<void>(resolve => { if (p.exitCode !== null || p.signalCode !== null) resolve(); else p.once('exit', () => { resolve() }) })
    const killedAt = Date.now()
    await sleep(4000)
    const plain = await beat(dir, 'plain')
    const first = await beat(dir, 'independent')
    await sleep(2000)
    const second = await beat(dir, 'independent')
    console.log(`      after the kill: plain child's last beat ${(plain?.at ?? 0) - killedAt} ms, watchdog-style child still beating (${(second?.at ?? 0) - killedAt} ms)`)
    assert.ok(plain !== undefined, `no beat of the plain child could be read after the kill: ${JSON.stringify(await readFile(join(dir, 'plain.hb'), 'utf8').catch((e: Error) => e.message))}`)
    assert.ok(plain.at < killedAt + 1000, `the plain child outlived its parent: last beat ${plain.at - killedAt} ms after the kill`)
    assert.ok(first !== undefined && second !== undefined && second.at > first.at && second.at > killedAt + 5000, 'the child spawned with independentChildOptions died with its parent')
  })
})
