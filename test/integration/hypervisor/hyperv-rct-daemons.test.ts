/**
 * `changeSource: rct` with real daemons: hv-a runs the Hyper-V driver against the scripted fake
 * (fake-powershell.mjs through a wrapper as `hypervisor.hyperv.powershell`), whose VM writes a
 * real VHDX (fake-hyperv-disk.mjs: held in the recovery checkpoint until it is merged);
 * hv-b holds the replica. One hash scan at the start, then told rounds; a reset RCT id costs one
 * more hash scan; after each phase the replica on hv-b equals the base .vhdx (qemu-img compare
 * and byte for byte). Skips without qemu-img/qemu-io.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import { FIXTURES } from '../../unit/hypervisor/fake-runner.ts'
import { vmsSection, waitInSync, replicaPath, sameBytes, vmOf, logOf } from '../replication/helpers.ts'
// @ts-expect-error -- a plain ESM fixture without types
import { guestWrite, qemuWrite, withLock, loadState, saveState } from '../../fixtures/hypervisor/fake-hyperv-disk.mjs'

const has = (cmd: string): boolean => spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0
const VM_ID = '6f9619ff-8b86-d011-b42d-00cf4fc964ff'
const MiB = 1024 * 1024

describe('replication: Hyper-V RCT with real daemons (scripted fake Hyper-V, real VHDX)', function () {
  this.timeout(240_000)
  let c: LocalCluster | undefined
  let image: string
  let stateFile: string

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const fakeState = (): any => loadState(stateFile)
  const write = (offset: number, length: number, pattern: number): void => { guestWrite(stateFile, VM_ID, 0, offset, length, pattern) }
  const capture = async (): Promise<{ source?: string, live?: boolean, scanAnswers?: number, toldAnswers?: number } | undefined> =>
    vmOf(await (c as LocalCluster).status('hv-a'), 'web01')?.capture as never

  before(async function () {
    if (!has('qemu-img') || !has('qemu-io')) { this.skip(); return }
    c = await LocalCluster.create({ nodes: [{ name: 'hv-a' }, { name: 'hv-b' }], logLevel: 'debug', keep: process.env.KEEP === '1' })
    const vmDir = join(c.dir, 'vms')
    await mkdir(vmDir)
    image = join(vmDir, 'web01.vhdx')
    assert.equal(spawnSync('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', image, '64M']).status, 0)
    qemuWrite(image, 0, 1 * MiB, 0x11)
    stateFile = join(vmDir, 'hyperv.json')
    // registered here and off: the ownership host starts it (Start-VM in place) once it holds the lease
    const vmcx = join(vmDir, `${VM_ID.toUpperCase()}.vmcx`)
    await writeFile(vmcx, 'configuration')
    const vm = { Name: 'web01', Id: VM_ID, State: 'Off', AutomaticStartAction: 'Nothing', ConfigurationLocation: vmDir, Drives: [image], Rct: { Disks: [{ Path: image, DiskId: randomUUID(), VirtualSize: 64 * MiB }] } }
    const fs = { [vmcx]: { kind: 'vmcx', Id: VM_ID, Name: 'web01', Drives: [image], AutomaticStartAction: 'Nothing' }, [image]: { kind: 'vhd', ParentPath: '' } }
    await writeFile(stateFile, JSON.stringify({ vms: [vm], fs, rct: { epoch: 1, log: [], pending: [], snapshots: {}, referencePoints: {} } }))
    const exe = join(vmDir, 'powershell')
    const q = (x: string): string => `'${x.replace(/'/g, "'\\''")}'`
    await writeFile(exe, `#!/bin/sh\nexec ${q(process.execPath)} ${q(join(FIXTURES, 'fake-powershell.mjs'))} --state ${q(stateFile)} "$@"\n`)
    await chmod(exe, 0o755)
    const section = vmsSection([{ name: 'web01', disks: [image], files: [vmcx], replicateTo: ['hv-b'] }]) as { vms: Array<Record<string, unknown>> }
    for (const v of section.vms) v.changeSource = 'rct'
    await c.writeConfig('hv-a', { ...section, hypervisor: { driver: 'hyperv', hyperv: { powershell: exe } } })
    await c.startAll()
  })

  after(async function () { await c?.destroy() })

  /** Waits until the held writes are merged and two told rounds ran after that, then for hv-b to be in sync; compares. */
  async function settledAndEqual (what: string): Promise<void> {
    const cl = c as LocalCluster
    await cl.waitFor(`${what}: the held writes merged`, async () => fakeState().rct.pending.length === 0, 30_000, 100)
    const told = (await capture())?.toldAnswers ?? 0
    await cl.waitFor(`${what}: two rounds after the merge`, async () => ((await capture())?.toldAnswers ?? 0) >= told + 2, 30_000, 100)
    await waitInSync(cl, 'hv-a', 'web01', 'hv-b', 60_000)
    const rp = await replicaPath(cl, 'hv-b', 'web01', image)
    const cmp = spawnSync('qemu-img', ['compare', '-U', '-f', 'vhdx', '-F', 'vhdx', image, rp], { encoding: 'utf8' })
    assert.equal(cmp.status, 0, `${what}: qemu-img compare: ${cmp.stdout}${cmp.stderr}`)
    assert.equal(await sameBytes(image, rp), true, `${what}: byte for byte`)
  }

  it('guest writes (in place, new blocks, a grown file) replicate from RCT after one hash scan; the replica equals the .vhdx', async () => {
    const cl = c as LocalCluster
    // off: the hash scan answers; started by the ownership host: one hash scan starts the RCT chain
    await cl.waitFor('the VM started and RCT rounds told', async () => { const k = await capture(); return k?.live === true && (k.toldAnswers ?? 0) >= 2 }, 120_000, 100)
    await waitInSync(cl, 'hv-a', 'web01', 'hv-b', 120_000)
    const scansAtStart = (await capture())?.scanAnswers ?? 0
    const sizeBefore = (await readFile(image)).length
    let p = 0x20
    for (let i = 0; i < 12; i++) {
      write(((i * 5) % 60) * MiB + 4096 * i, 4096 * (1 + (i % 3)), p++)
      await new Promise(resolve => setTimeout(resolve, 150))
    }
    await settledAndEqual('after the writes')
    assert.ok((await readFile(image)).length > sizeBefore, 'new blocks grew the file')
    const cap = await capture()
    assert.equal(cap?.source, 'told')
    assert.equal(cap?.live, true)
    assert.equal(cap?.scanAnswers, scansAtStart, 'no hash scan while RCT runs')
    assert.ok((cap?.toldAnswers ?? 0) >= 5, `told answers: ${String(cap?.toldAnswers)}`)
    const scans = (await readFile(logOf(cl, 'hv-a'), 'utf8')).split('\n').filter(l => l.includes('"msg":"scan"')).map(l => JSON.parse(l) as { file: string, source: string })
      .filter(s => s.file === image)
    const firstTold = scans.findIndex(s => s.source === 'told')
    assert.equal(scans[firstTold - 1]?.source, 'gap-scan', 'the RCT chain began with one hash scan')
    assert.equal(scans.slice(firstTold).filter(s => s.source !== 'told').length, 0, 'told ever since')
  })

  it('an RCT reset costs exactly one more hash scan, then RCT again; nothing is lost', async () => {
    const at = (await capture())?.scanAnswers ?? 0
    withLock(stateFile, () => { const s = loadState(stateFile); s.rct.epoch += 1; saveState(stateFile, s) })
    write(7 * MiB, 8192, 0x51)
    write(50 * MiB, 4096, 0x52)
    await settledAndEqual('after the reset')
    write(8 * MiB, 4096, 0x53)
    await settledAndEqual('told again')
    assert.equal(((await capture())?.scanAnswers ?? 0) - at, 1)
    assert.match(await readFile(logOf(c as LocalCluster, 'hv-a'), 'utf8'), /RCT id no longer known to Hyper-V/)
    assert.ok(Object.keys(fakeState().rct.snapshots).length <= 1, 'never a stack of checkpoints')
  })
})
