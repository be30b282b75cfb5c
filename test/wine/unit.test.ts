/**
 * The unit tests that touch the platform layer, run by Windows Node 20 under Wine: rename
 * retry and folder sync, icacls parsing and secret checks, process control and cmd.exe quoting
 * (against the real cmd.exe), the watchdog handover and core, the lz4 and BLAKE3 fallbacks (the
 * native addons cannot load there) and the replica records checksummed with them.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { tmpdir } from 'node:os'
import { STAGE, wineEnv, wineMissing, wineNodeArgv } from './wine.ts'

export const WINE_UNIT_TESTS = [
  'test/unit/platform/fs.test.js',
  'test/unit/platform/icacls.test.js',
  'test/unit/platform/process.test.js',
  'test/unit/watchdog/handover.test.js',
  'test/unit/watchdog/core.test.js',
  'test/unit/delta/lz4.test.js',
  'test/unit/delta/blake3.test.js',
  // replica/apply is left out: its in-memory file system models POSIX paths only
  'test/unit/replica/records.test.js'
]

describe('windows tier (Wine): platform unit tests on Windows Node', function () {
  this.timeout(600_000)
  before(function () {
    const why = wineMissing()
    if (why !== undefined) { console.log(`      skipped: ${why}`); this.skip() }
  })

  it('pass on node.exe (win32) with the fallbacks in use', async () => {
    const log = join(tmpdir(), `vmesh-wine-unit-${process.pid}.log`)
    await rm(log, { force: true })
    const argv = wineNodeArgv(['node_modules/mocha/bin/mocha.js', '--no-config', '--reporter', 'spec', '--timeout', '120000', '--exit', ...WINE_UNIT_TESTS], log)
    const code = await new Promise<number | null>((resolve) => {
      const p = spawn(argv[0] as string, argv.slice(1), { cwd: STAGE, env: wineEnv(), stdio: 'ignore' })
      p.on('exit', (c) => { resolve(c) })
    })
    const out = await readFile(log, 'utf8')
    const passing = Number(/(\d+) passing/.exec(out)?.[1] ?? 0)
    const failing = Number(/(\d+) failing/.exec(out)?.[1] ?? 0)
    console.log(`      under Wine: ${passing} passing, ${failing} failing`)
    assert.equal(code, 0, out.slice(-4000))
    assert.equal(failing, 0)
    assert.ok(passing >= 40, `only ${passing} tests ran:\n${out.slice(-2000)}`)
    assert.match(out, /uses the native addon on Linux, the JS codec where it cannot load/)
    await rm(log, { force: true })
  })
})
