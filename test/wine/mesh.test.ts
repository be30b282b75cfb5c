/**
 * A mixed mesh on 127.0.0.1: two daemons on Windows Node 20 under Wine and one Linux daemon.
 * They must form (every view alive within 5 s once all three answer) and the Windows daemons
 * must stop cleanly through the control API (`POST /v1/stop`, what `vmesh stop` sends: Windows
 * has no SIGTERM).
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { tmpdir } from 'node:os'
import { LocalCluster, type LocalNodeSpec } from '../../daemon/demo/local-cluster.ts'
import { STAGE, wineEnv, wineMissing, wineNodeArgv, winPath } from './wine.ts'

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
  let cluster: LocalCluster | undefined

  before(function () {
    const why = wineMissing()
    if (why !== undefined) { console.log(`      skipped: ${why}`); this.skip() }
  })
  afterEach(async () => {
    await cluster?.destroy()
    cluster = undefined
    // the Windows watchdogs are detached (they must outlive their daemon): end this prefix's processes
    spawnSync('/usr/lib/wine/wineserver', ['-k'], { env: wineEnv() })
  })

  it('two Windows daemons and a Linux one form a mesh; every view alive within 5 s; vmesh stop ends a Windows daemon', async () => {
    cluster = await LocalCluster.create({ nodes: [{ name: 'win-a', command: wineDaemon }, { name: 'win-b', command: wineDaemon }, { name: 'lin-c' }], keep: process.env.VMESH_WINE_KEEP === '1' })
    const c = cluster
    // vmesh init on Windows protects identity.key with an ACL (owner, SYSTEM, Administrators);
    // the Windows daemon reads that ACL back and refuses the key without it. Do the same here,
    // through the compiled platform module on Windows Node.
    const keys = ['win-a', 'win-b'].map(n => winPath(join(c.node(n).dir, 'identity.key')))
    const prot = await wineNode(['--input-type=module', '-e',
      `const p = await import('file:///${STAGE.replace(/^\//, 'Z:/')}/common/platform/index.js'); for (const f of process.argv.slice(1)) { await p.protectSecretFile(f, { os: 'win32' }); const why = await p.secretFileProblem(f, { os: 'win32' }); if (why !== null) throw new Error(why) } console.log('protected', process.platform)`,
      ...keys])
    assert.equal(prot.code, 0, prot.out)
    assert.match(prot.out, /protected win32/)

    const t0 = Date.now()
    // a Windows daemon takes 20-60 s to start under Wine on this machine class (module loading
    // through Wine's file I/O): start all three at once with a start timeout to match
    await Promise.all(c.nodes.map(async n => { await c.start(n.name, { timeoutMs: 240_000 }) }))
    const upMs = Date.now() - t0
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
    for (const n of ['win-a', 'win-b']) {
      const log = await readFile(c.node(n).logPath, 'utf8')
      assert.match(log, /vmesh daemon started/)
    }

    // Windows has no SIGTERM: stop through the control API, as `vmesh stop` does
    const r = await c.node('win-b').client.call<{ stopping: boolean }>('POST', '/v1/stop')
    assert.equal(r.stopping, true)
    await c.waitFor('win-b exits', async () => !c.isRunning('win-b'), 20_000, 100)
    await c.waitFor('win-b dead in the others\' views', async () => (await c.memberState('lin-c', 'win-b')) === 'dead' && (await c.memberState('win-a', 'win-b')) === 'dead', 20_000)
    assert.match(await readFile(c.node('win-b').logPath, 'utf8'), /"signal":"api".*stopping/)
  })
})
