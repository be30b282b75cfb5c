/**
 * A mixed mesh on 127.0.0.1: two daemons on Windows Node 20 under Wine and one Linux daemon.
 * They must form (every view alive within 5 s once all three answer), a VHDX on a Windows
 * daemon must replicate to the Linux one byte for byte (qemu-img compare), and a Windows daemon
 * must stop cleanly through the control API (`POST /v1/stop`, what `vmesh stop` sends: Windows
 * has no SIGTERM).
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { mkdir, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { tmpdir } from 'node:os'
import { LocalCluster, type LocalNodeSpec } from '../../daemon/cluster/local-cluster.ts'
import { hasTool, qemuImgCompare, qemuImgCreate, qemuWrite } from '../helpers/qemu.ts'
import { replicaPath, sameBytes, vmsSection, waitInSync } from '../integration/replication/helpers.ts'
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
  let c: LocalCluster
  let disk: string
  let upMs = 0

  before(async function () {
    const why = wineMissing()
    if (why !== undefined) { console.log(`      skipped: ${why}`); this.skip() }
    if (!hasTool('qemu-img')) { console.log('      skipped: qemu-img missing (qemu-utils)'); this.skip() }
    c = await LocalCluster.create({ nodes: [{ name: 'win-a', command: wineDaemon }, { name: 'win-b', command: wineDaemon }, { name: 'lin-c' }], keep: process.env.VMESH_WINE_KEEP === '1' })
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
    await c.writeConfig('win-a', vmsSection([{ name: 'web01', disks: [winPath(disk)], replicateTo: ['lin-c'] }]))
    // a Windows daemon takes 20-140 s to start under Wine on this machine class (module loading
    // through Wine's file I/O): start all three at once with a start timeout to match
    const t0 = Date.now()
    await Promise.all(c.nodes.map(async n => { await c.start(n.name, { timeoutMs: 240_000 }) }))
    upMs = Date.now() - t0
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
    await c.waitFor('a new generation', async () => ((await c.status('win-a')).vms[0]?.generation ?? 0) > generation, 60_000)
    await waitInSync(c, 'win-a', 'web01', 'lin-c', 120_000)
    assert.equal(await qemuImgCompare(disk, 'vhdx', rp, 'vhdx'), true)
    assert.equal(await sameBytes(disk, rp), true)
  })

  it('vmesh stop (POST /v1/stop) ends a Windows daemon cleanly: Windows has no SIGTERM', async () => {
    const r = await c.node('win-b').client.call<{ stopping: boolean }>('POST', '/v1/stop')
    assert.equal(r.stopping, true)
    await c.waitFor('win-b exits', async () => !c.isRunning('win-b'), 20_000, 100)
    await c.waitFor('win-b dead in the others\' views', async () => (await c.memberState('lin-c', 'win-b')) === 'dead' && (await c.memberState('win-a', 'win-b')) === 'dead', 20_000)
    assert.match(await readFile(c.node('win-b').logPath, 'utf8'), /"signal":"api".*stopping/)
  })
})
