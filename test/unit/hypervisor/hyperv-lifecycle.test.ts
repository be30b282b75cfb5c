/**
 * The Hyper-V driver's VM lifecycle against a scripted fake of the Hyper-V cmdlets
 * (test/fixtures/hypervisor/fake-powershell.mjs): a real child process speaking the session
 * protocol, keeping a fake inventory in a JSON file. Restart at home, failover, demotion,
 * failback and a second failover must never trip on a duplicate VM ID.
 */
import assert from 'node:assert/strict'
import { chmod, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { HypervDriver } from '../../../daemon/hypervisor/hyperv.ts'
import { ManualClock } from '../../../common/clock.ts'
import { defaultRunner } from '../../../daemon/hypervisor/run.ts'
import { executeFence } from '../../../daemon/hypervisor/fence.ts'
import { discover } from '../../../daemon/hypervisor/discover.ts'
import { tempDir } from '../../helpers/tmp.ts'
import { FIXTURES } from './fake-runner.ts'

const ID = '6f9619ff-8b86-d011-b42d-00cf4fc964ff'
const NAME = "web 01 (o'brien)"
const HOME = 'D:\\Hyper-V\\web 01'
const SRC_BASE = `${HOME}\\Virtual Hard Disks\\web 01.vhdx`
const SRC_LEAF = `${HOME}\\Virtual Hard Disks\\web 01_8A1B.avhdx`
const SRC_VMCX = `${HOME}\\Virtual Machines\\${ID.toUpperCase()}.vmcx`
const SRC_VMGS = `${HOME}\\Virtual Machines\\${ID.toUpperCase()}.vmgs`
const REP = "R:\\vmesh\\hv1\\web 01 (o'brien)"
const REP_BASE = `${REP}\\web 01.vhdx`
const REP_LEAF = `${REP}\\web 01_8A1B.avhdx`
const REP_VMCX = `${REP}\\${ID.toUpperCase()}.vmcx`
const REP_VMGS = `${REP}\\${ID.toUpperCase()}.vmgs`

interface FakeVm { Name: string, Id: string, State: string, AutomaticStartAction: string, ConfigurationLocation: string, Drives: string[] }
interface FakeState { vms: FakeVm[], fs: Record<string, { kind: string, ParentPath?: string, [k: string]: unknown }>, log?: Array<{ pid: number, op: string, mode: string }>, faults?: Record<string, { kind: string, times: number }>, imports?: number, removes?: number }

/** The home host: the VM registered in place, on a checkpoint chain (leaf .avhdx → base .vhdx). */
const homeHost = (state = 'Running'): FakeState => ({
  vms: [{ Name: NAME, Id: ID, State: state, AutomaticStartAction: 'StartIfRunning', ConfigurationLocation: HOME, Drives: [SRC_LEAF] }],
  fs: {
    [SRC_VMCX]: { kind: 'vmcx', Id: ID, Name: NAME, Drives: [SRC_LEAF], AutomaticStartAction: 'StartIfRunning' },
    [SRC_VMGS]: { kind: 'file' },
    [SRC_LEAF]: { kind: 'vhd', ParentPath: SRC_BASE },
    [SRC_BASE]: { kind: 'vhd', ParentPath: '' }
  }
})
/** A replica host: the replicated files (the .avhdx still names its parent by its SOURCE path), nothing registered. */
const replicaFs = (): FakeState['fs'] => ({
  [REP_VMCX]: { kind: 'vmcx', Id: ID, Name: NAME, Drives: [SRC_LEAF], AutomaticStartAction: 'StartIfRunning' },
  [REP_VMGS]: { kind: 'file' },
  [REP_LEAF]: { kind: 'vhd', ParentPath: SRC_BASE },
  [REP_BASE]: { kind: 'vhd', ParentPath: '' }
})
const replicaFiles = { disks: [REP_LEAF, REP_BASE], files: [REP_VMCX, REP_VMGS], dir: REP, sourceMap: { [SRC_LEAF]: REP_LEAF, [SRC_BASE]: REP_BASE, [SRC_VMCX]: REP_VMCX, [SRC_VMGS]: REP_VMGS } }
const homeFiles = { disks: [SRC_LEAF, SRC_BASE], files: [SRC_VMCX, SRC_VMGS], dir: 'C:\\vmesh\\data\\run\\web 01' }

describe('hypervisor/hyperv lifecycle (scripted fake of the Hyper-V cmdlets)', function () {
  this.timeout(30_000)
  let dir: string
  let cleanup: () => Promise<void>
  let clock: ManualClock
  let drivers: HypervDriver[]
  beforeEach(async () => { ({ dir, cleanup } = await tempDir('vmesh-hyperv-fake-')); clock = new ManualClock(); drivers = [] })
  afterEach(async () => { for (const d of drivers) await d.close(); await cleanup() })

  const statePath = (host: string): string => join(dir, `${host}.json`)
  const readState = async (host: string): Promise<FakeState> => JSON.parse(await readFile(statePath(host), 'utf8')) as FakeState
  const writeState = async (host: string, s: FakeState): Promise<void> => { await writeFile(statePath(host), JSON.stringify(s)) }
  /** A driver on `host` whose powershell is the fake (through a tiny wrapper: the injectable executable path). */
  const host = async (name: string, s: FakeState): Promise<HypervDriver> => {
    await writeState(name, s)
    const exe = join(dir, `${name}-powershell`)
    const q = (x: string): string => `'${x.replace(/'/g, "'\\''")}'`
    await writeFile(exe, `#!/bin/sh\nexec ${q(process.execPath)} ${q(join(FIXTURES, 'fake-powershell.mjs'))} --state ${q(statePath(name))} "$@"\n`)
    await chmod(exe, 0o755)
    const d = new HypervDriver({ powershell: exe }, { cwd: dir, stateDir: join(dir, `${name}-state`), clock, run: defaultRunner })
    drivers.push(d)
    return d
  }
  const vm = async (h: string): Promise<FakeVm | undefined> => (await readState(h)).vms.find(v => v.Name === NAME)

  it('discovery reports the whole .avhdx chain and the configuration files; protect-time Set-VM turns automatic start off', async () => {
    const d = await host('a', homeHost())
    const [v] = await discover(d)
    assert.equal(v?.name, NAME)
    assert.equal(v?.id, ID)
    assert.equal(v?.state, 'running')
    assert.deepEqual(v?.disks, [SRC_LEAF, SRC_BASE], 'leaf and its parent')
    assert.deepEqual(v?.files, [SRC_VMCX, SRC_VMGS])
    await d.preventAutoStart(NAME)
    assert.equal((await vm('a'))?.AutomaticStartAction, 'Nothing')
    // a missing parent is still reported (the VM needs it) but ends its chain; list does not fail
    const st = await readState('a')
    st.fs[SRC_BASE] = { kind: 'vhd', ParentPath: 'D:\\gone\\grandparent.vhdx' }
    await writeState('a', st)
    assert.deepEqual((await d.list())[0]?.disks, [SRC_LEAF, SRC_BASE, 'D:\\gone\\grandparent.vhdx'])
  })

  it('restart at home: the registered VM is started in place — no import, AutomaticStartAction Nothing', async () => {
    const d = await host('a', homeHost('Off'))
    await d.start(NAME, homeFiles, 1)
    const s = await readState('a')
    assert.equal(s.imports ?? 0, 0)
    assert.equal(s.vms.length, 1)
    assert.deepEqual([s.vms[0]?.State, s.vms[0]?.AutomaticStartAction], ['Running', 'Nothing'])
    await assert.rejects(d.start(NAME, homeFiles, 2), { name: 'VmAlreadyRunningError' })
  })

  it('restart at home with a config that lists only the base disk (written before a checkpoint): still started in place', async () => {
    const d = await host('a', homeHost('Off'))
    await d.start(NAME, { ...homeFiles, disks: [SRC_BASE] }, 1)
    const s = await readState('a')
    assert.equal(s.imports ?? 0, 0)
    assert.equal(s.removes ?? 0, 0)
    assert.equal(s.vms[0]?.State, 'Running')
  })

  it('failover, demotion, second failover to the same host: imported, released (files kept), imported again', async () => {
    const d = await host('b', { vms: [], fs: replicaFs() })
    await d.start(NAME, replicaFiles, 1)
    let s = await readState('b')
    assert.equal(s.imports, 1)
    assert.deepEqual(s.vms[0]?.Drives, [REP_LEAF], 'the drive points at the replica leaf')
    assert.equal(s.fs[REP_LEAF]?.ParentPath, REP_BASE, 'the replica .avhdx is re-parented onto the replica base')
    assert.equal(s.vms[0]?.AutomaticStartAction, 'Nothing')
    assert.equal(await d.isRunning(NAME), true)

    await d.release(NAME) // demoted: the VM moved back home
    s = await readState('b')
    assert.deepEqual(s.vms, [])
    assert.ok(s.fs[REP_VMCX] !== undefined && s.fs[REP_VMGS] !== undefined, 'Remove-VM deleted the configuration files; release put them back')
    assert.equal(await d.isRunning(NAME), false)
    await d.release(NAME) // idempotent

    await d.start(NAME, replicaFiles, 3) // the second failover here
    s = await readState('b')
    assert.equal(s.imports, 2)
    assert.equal(s.vms.length, 1)
    assert.equal(s.vms[0]?.State, 'Running')
  })

  it('a registration on the same files starts in place; one found by ID under another name is removed (files kept) and imported', async () => {
    const d = await host('b', { vms: [], fs: replicaFs() })
    await d.start(NAME, replicaFiles, 1)
    await d.turnOff(NAME)
    // a start on the same files now finds the registration and starts it (no import)
    await d.start(NAME, replicaFiles, 2)
    assert.equal((await readState('b')).imports, 1)
    await d.turnOff(NAME)
    // renamed by hand: by-name calls no longer find it, so it is unregistered and imported under its name (the fake refuses a duplicate ID, as Hyper-V does)
    const s = await readState('b')
    s.vms[0]!.Name = 'renamed by hand'
    await writeState('b', s)
    await d.start(NAME, replicaFiles, 3) // found by ID under another name: removed (files kept), imported
    const after = await readState('b')
    assert.deepEqual(after.vms.map(v => v.Name), [NAME])
    assert.equal(after.imports, 2)
  })

  it('failback: home was demoted without release (daemon crash) — its stale registration on the old files is removed, the replica imported', async () => {
    const st = homeHost('Off')
    Object.assign(st.fs, replicaFs())
    const d = await host('a', st)
    await d.start(NAME, replicaFiles, 4)
    const s = await readState('a')
    assert.equal(s.removes, 1)
    assert.equal(s.imports, 1)
    assert.deepEqual(s.vms.map(v => [v.Name, v.Drives, v.State, v.AutomaticStartAction]), [[NAME, [REP_LEAF], 'Running', 'Nothing']])
    assert.ok(s.fs[SRC_VMCX] !== undefined, 'the home configuration is kept')
  })

  it('failback after a clean demotion: released at home, then the home files start again by import', async () => {
    const d = await host('a', homeHost('Running'))
    await d.release(NAME)
    assert.deepEqual((await readState('a')).vms, [])
    await d.start(NAME, homeFiles, 5)
    const s = await readState('a')
    assert.equal(s.imports, 1)
    assert.deepEqual(s.vms.map(v => [v.Drives, v.State, v.AutomaticStartAction]), [[[SRC_LEAF], 'Running', 'Nothing']])
  })

  it('another VM with the name is a VmNameConflictError and nothing changes; a cmdlet exception is HypervisorCmdletError with its message', async () => {
    const st = homeHost('Off')
    st.vms[0]!.Id = '11111111-2222-3333-4444-555555555555'
    const d = await host('a', { ...st, fs: { ...st.fs, ...replicaFs() } })
    await assert.rejects(d.start(NAME, replicaFiles, 1), { name: 'VmNameConflictError', code: 'ERR_VM_NAME_CONFLICT' })
    assert.equal((await readState('a')).imports ?? 0, 0)
    const e = await host('e', { vms: [], fs: {} })
    await assert.rejects(e.start(NAME, replicaFiles, 1), (err: Error & { cmdletMessage?: string, errorId?: string }) =>
      err.name === 'HypervisorCmdletError' && (err.cmdletMessage ?? '').startsWith('Could not find the path') && (err.errorId ?? '').includes('CompareVM'))
  })

  it('one PowerShell process answers many status calls; one Get-VM per cache period for all VMs', async () => {
    const st = homeHost('Running')
    st.vms.push({ Name: 'db 02', Id: '22222222-2222-3333-4444-555555555555', State: 'Off', AutomaticStartAction: 'Nothing', ConfigurationLocation: HOME, Drives: [] })
    const d = await host('a', st)
    for (let poll = 0; poll < 5; poll++) {
      assert.equal(await d.isRunning(NAME), true)
      assert.equal(await d.isRunning('db 02'), false)
      assert.equal(await d.isRunning('ghost'), false)
      clock.advance(2000)
    }
    const log = (await readState('a')).log ?? []
    assert.equal(log.filter(l => l.op === 'status').length, 5, 'one Get-VM per poll, not per VM')
    assert.equal(new Set(log.map(l => l.pid)).size, 1, 'one process')
    assert.equal(d.session?.spawnCount, 1)
  })

  it('the session dying mid-call is a PowerShellSessionError; the next call runs in a fresh session', async () => {
    const st = homeHost('Running')
    st.faults = { status: { kind: 'die', times: 1 } }
    const d = await host('a', st)
    await assert.rejects(d.isRunning(NAME), { name: 'PowerShellSessionError', code: 'ERR_POWERSHELL_SESSION' })
    assert.equal(await d.isRunning(NAME), true)
    assert.equal(d.session?.spawnCount, 2)
    const pids = new Set(((await readState('a')).log ?? []).map(l => l.pid))
    assert.equal(pids.size, 2)
  })

  it('a malformed reply frame is HypervisorOutputError; a hung cmdlet times out (HypervisorTimeoutError); both restart the session', async () => {
    const st = homeHost('Running')
    st.faults = { status: { kind: 'garbage', times: 1 }, lookup: { kind: 'hang', times: 1 } }
    const d = await host('a', st)
    await assert.rejects(d.isRunning(NAME), { name: 'HypervisorOutputError' })
    assert.equal(await d.isRunning(NAME), true)
    const p = d.start(NAME, homeFiles, 1)
    const caught = p.catch((err: Error) => err)
    // wait (real time: a child process) until the fake holds the request, then let virtual time pass
    for (let i = 0; i < 500; i++) {
      if (((await readState('a')).log ?? []).some(l => l.op === 'lookup')) break
      await new Promise(resolve => setTimeout(resolve, 10))
    }
    clock.advance(120_001)
    assert.equal(((await caught) as Error).name, 'HypervisorTimeoutError')
    assert.equal(await d.isRunning(NAME), true)
    assert.equal(d.session?.spawnCount, 3)
  })

  it('a PowerShell that cannot be started is HypervisorSpawnError, every time (no stuck session)', async () => {
    const d = new HypervDriver({ powershell: join(dir, 'no-such-powershell.exe') }, { cwd: dir, stateDir: join(dir, 'x-state'), clock, run: defaultRunner })
    drivers.push(d)
    await assert.rejects(d.isRunning(NAME), { name: 'HypervisorSpawnError' })
    await assert.rejects(d.list(), { name: 'HypervisorSpawnError' })
  })

  it('turnOff is not queued behind a hung session call: it runs in its own process', async () => {
    const st = homeHost('Running')
    st.faults = { lookup: { kind: 'hang', times: 1 } }
    const d = await host('a', st)
    const hung = d.start(NAME, homeFiles, 1).catch((err: Error) => err)
    for (let i = 0; i < 500; i++) {
      if (((await readState('a')).log ?? []).some(l => l.op === 'lookup')) break
      await new Promise(resolve => setTimeout(resolve, 10))
    }
    await d.turnOff(NAME)
    assert.equal((await vm('a'))?.State, 'Off')
    clock.advance(120_001)
    assert.equal(((await hung) as Error).name, 'HypervisorTimeoutError')
  })

  it('the watchdog\'s fence runs the same turn-off as its own powershell process, without the session', async () => {
    const d = await host('a', homeHost('Saved'))
    const s0 = await readState('a')
    s0.vms.push({ ...s0.vms[0]!, Id: '33333333-2222-3333-4444-555555555555', State: 'Running' }) // a duplicate left running
    await writeState('a', s0)
    await executeFence(await d.fenceAction(NAME), { run: defaultRunner, clock })
    const s = await readState('a')
    assert.deepEqual(s.vms.map(v => v.State), ['Off', 'Off'])
    assert.deepEqual((s.log ?? []).map(l => l.mode), ['standalone'])
    assert.equal(d.session?.spawnCount, 0)
  })
})
