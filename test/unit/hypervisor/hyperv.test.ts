import assert from 'node:assert/strict'
import { join } from 'node:path'
import { HypervDriver, vmcxId } from '../../../daemon/hypervisor/hyperv.ts'
import { decodeScript, jsonList, standalone, stateName, stringList } from '../../../daemon/hypervisor/hyperv-scripts.ts'
import { decodeFrame, requestLine, RUNNER, FRAME_SENTINEL } from '../../../daemon/hypervisor/ps-session.ts'
import { ManualClock } from '../../../common/clock.ts'
import { tempDir } from '../../helpers/tmp.ts'
import { fail, fakeRunner, fakeTransport, fixture, ok, psFail, psOk, type PsReplyLike } from './fake-runner.ts'

const PS = ['powershell.exe', '-NoProfile', '-NonInteractive', '-EncodedCommand']
const opOf = (script: string): string => /^# vmesh-op: (\S+)/.exec(script)?.[1] ?? '?'

describe('hypervisor/hyperv (recorded PowerShell output)', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let clock: ManualClock
  beforeEach(async () => { ({ dir, cleanup } = await tempDir('vmesh-hyperv-')); clock = new ManualClock() })
  afterEach(async () => { await cleanup() })
  const make = (respond: (script: string, n: number) => PsReplyLike): { d: HypervDriver, scripts: string[] } => {
    const { transport, scripts } = fakeTransport(respond)
    const { run } = fakeRunner(() => { throw new Error('no process per call') })
    return { d: new HypervDriver({}, { cwd: dir, stateDir: join(dir, 'state'), clock, run }, transport), scripts }
  }

  it('list: an array (5.1 layout, CRLF, numeric states)', async () => {
    const { d, scripts } = make(() => psOk(fixture('hyperv/list-two.json')))
    const vms = await d.list()
    assert.equal(opOf(scripts[0] as string), 'list')
    assert.match(scripts[0] as string, /Get-VMHardDiskDrive -VM \$vm/)
    assert.match(scripts[0] as string, /Get-VHD -Path \$p -ErrorAction SilentlyContinue\)\.ParentPath/, 'walks each disk chain')
    assert.deepEqual(vms, [
      {
        name: 'web01', state: 'running', id: '6f9619ff-8b86-d011-b42d-00cf4fc964ff',
        disks: ['D:\\Hyper-V\\web01\\Virtual Hard Disks\\web01.vhdx', 'D:\\Hyper-V\\web01\\Virtual Hard Disks\\web01-data.vhdx'],
        files: ['D:\\Hyper-V\\web01\\Virtual Machines\\6F9619FF-8B86-D011-B42D-00CF4FC964FF.vmcx', 'D:\\Hyper-V\\web01\\Virtual Machines\\6F9619FF-8B86-D011-B42D-00CF4FC964FF.vmgs', 'D:\\Hyper-V\\web01\\Virtual Machines\\6F9619FF-8B86-D011-B42D-00CF4FC964FF.vmrs']
      },
      {
        name: 'sql 2019 (test)', state: 'off', id: '0b2c8e1a-77d4-4f0e-9a55-3c1d2e4f5a6b',
        disks: ['C:\\Users\\Public\\Documents\\Hyper-V\\Virtual hard disks\\sql 2019 (test).vhdx'],
        files: ['C:\\ProgramData\\Microsoft\\Windows\\Hyper-V\\Virtual Machines\\0B2C8E1A-77D4-4F0E-9A55-3C1D2E4F5A6B.vmcx', 'C:\\ProgramData\\Microsoft\\Windows\\Hyper-V\\Virtual Machines\\0B2C8E1A-77D4-4F0E-9A55-3C1D2E4F5A6B.vmrs']
      }
    ])
  })

  it('list: a checkpoint chain is reported whole (leaf .avhdx files, then the base .vhdx)', async () => {
    const [v] = await make(() => psOk(fixture('hyperv/list-chain.json'))).d.list()
    assert.equal(v?.name, 'web 01')
    assert.deepEqual(v?.disks.map(p => p.split('\\').at(-1)), ['web 01_5E2C1A7B-0D3F-4B8E-9C21-7A6B5C4D3E2F.avhdx', 'web 01_1C0F9A2B-3D4E-4F50-8A61-B2C3D4E5F607.avhdx', 'web 01.vhdx'])
    assert.equal(v?.files.length, 3)
  })

  it('list: one VM prints a bare object; 5.1 array quirks ({value,Count}, a lone string) are read', async () => {
    const { d } = make(() => psOk(fixture('hyperv/list-one.json')))
    assert.deepEqual(await d.list(), [{
      name: 'dc01', state: 'other', id: '9d4c3b2a-1f0e-4d8c-b7a6-5e4f3d2c1b0a',
      disks: ['E:\\VMs\\dc01\\dc01.vhdx'], files: ['E:\\VMs\\dc01\\Virtual Machines\\9D4C3B2A-1F0E-4D8C-B7A6-5E4F3D2C1B0A.vmcx']
    }])
  })

  it('list: no VMs prints nothing; PS 7 -EnumsAsStrings states; null and [] lists', async () => {
    assert.deepEqual(await make(() => psOk(fixture('hyperv/list-empty.txt'))).d.list(), [])
    const vms = await make(() => psOk(fixture('hyperv/list-ps7-enums-as-strings.json'))).d.list()
    assert.deepEqual(vms.map(v => [v.name, v.state, v.disks.length, v.files.length]), [['web01', 'running', 1, 0], ['build', 'other', 0, 0]])
  })

  it('odd answers are typed: non-JSON and missing fields → HypervisorOutputError; an exception → HypervisorCmdletError with the cmdlet\'s message', async () => {
    await assert.rejects(make(() => psOk('{ "Name": ')).d.list(), { name: 'HypervisorOutputError' })
    await assert.rejects(make(() => psOk('[{ "State": 2 }]')).d.list(), { name: 'HypervisorOutputError' })
    await assert.rejects(make(() => psOk('[{ "Name": "a" }]')).d.list(), { name: 'HypervisorOutputError' }, 'State missing')
    await assert.rejects(make(() => psOk('[{ "Name": "a", "State": 2, "Disks": [1] }]')).d.list(), { name: 'HypervisorOutputError' })
    await assert.rejects(make(() => psOk('[{ "Id": "x" }]')).d.isRunning('a'), { name: 'HypervisorOutputError' })
    await assert.rejects(make(() => psFail(1, "The term 'Get-VM' is not recognized as the name of a cmdlet", 'CommandNotFoundException')).d.list(),
      { name: 'HypervisorCmdletError', code: 'ERR_HYPERVISOR_CMDLET', cmdletMessage: "The term 'Get-VM' is not recognized as the name of a cmdlet", errorId: 'CommandNotFoundException' } as object)
  })

  it('isRunning: one Get-VM for every VM, cached per poll; Off and Saved are not running; unknown is false; two of a name is an error', async () => {
    const { d, scripts } = make(() => psOk(fixture('hyperv/status-all.json')))
    assert.equal(await d.isRunning('web01'), true)
    assert.equal(await d.isRunning('sql 2019 (test)'), false)
    assert.equal(await d.isRunning('dc01'), false)
    assert.equal(await d.isRunning('ghost'), false)
    await assert.rejects(d.isRunning('twin'), { name: 'HypervisorCommandFailedError' })
    assert.equal(scripts.length, 1, 'one call answered all five')
    assert.equal(opOf(scripts[0] as string), 'status')
    clock.advance(1000)
    await d.isRunning('web01')
    assert.equal(scripts.length, 2, 'the cache lasts statusCacheMs')
    assert.deepEqual(await make(() => psOk(fixture('hyperv/status-none.json'))).d.isRunning('web01'), false)
  })

  it('a failed status call is not cached', async () => {
    const { d, scripts } = make((_s, n) => n === 0 ? psFail(1, 'The Virtual Machine Management service is not running') : psOk(fixture('hyperv/status-all.json')))
    await assert.rejects(d.isRunning('web01'), { name: 'HypervisorCmdletError' })
    assert.equal(await d.isRunning('web01'), true)
    assert.equal(scripts.length, 2)
  })

  it('turnOff: its own powershell.exe (not queued behind the session), Stop-VM -TurnOff -Force (saved state discarded), by exact quoted name; a failure is an error', async () => {
    const { run, calls } = fakeRunner(() => ok())
    const { transport, scripts } = fakeTransport(() => psOk())
    const d = new HypervDriver({}, { cwd: dir, stateDir: join(dir, 'state'), clock, run }, transport)
    await d.turnOff("o'brien [test]*")
    assert.equal(scripts.length, 0)
    assert.deepEqual(calls[0]?.argv.slice(0, 4), PS)
    const s = decodeScript(calls[0]?.argv[4] as string)
    assert.match(s, /Stop-VM -VM \$v -TurnOff -Force/)
    assert.match(s, /Remove-VMSavedState/)
    assert.ok(s.includes("$_.Name -eq 'o''brien [test]*'"), 'the name is one quoted literal')
    assert.doesNotMatch(s, /Get-VM -Name/, 'Get-VM -Name takes wildcards')
    const failing = new HypervDriver({}, { cwd: dir, stateDir: join(dir, 'state'), clock, run: fakeRunner(() => fail(1, fixture('hyperv/stop-failed.stderr.txt'))).run }, transport)
    await assert.rejects(failing.turnOff('web01'), { name: 'HypervisorCommandFailedError', exitCode: 1 } as object)
  })

  const files = {
    disks: ['R:\\vmesh\\web01\\web01.vhdx', "R:\\vmesh\\web01\\web01-data's.vhdx"],
    files: ['R:\\vmesh\\web01\\6F9619FF-8B86-D011-B42D-00CF4FC964FF.vmrs', 'R:\\vmesh\\web01\\6F9619FF-8B86-D011-B42D-00CF4FC964FF.vmcx'],
    dir: 'R:\\vmesh\\web01',
    sourceMap: { 'D:\\Hyper-V\\web01\\Virtual Hard Disks\\web01-data.vhdx': "R:\\vmesh\\web01\\web01-data's.vhdx" }
  }

  it('start, nothing registered: lookup by name and the .vmcx ID, then Compare-VM -Register, disks to replicas, chains re-parented, Import-VM, AutomaticStartAction Nothing, Start-VM', async () => {
    const { d, scripts } = make((s) => opOf(s) === 'lookup' ? psOk('[]') : psOk(fixture('hyperv/start-ok.json')))
    await d.start('web01', files, 3)
    assert.deepEqual(scripts.map(opOf), ['lookup', 'import'])
    assert.ok((scripts[0] as string).includes("[string]$_.Id -eq '6f9619ff-8b86-d011-b42d-00cf4fc964ff'"))
    const s = scripts[1] as string
    assert.ok(s.includes("Compare-VM -Path 'R:\\vmesh\\web01\\6F9619FF-8B86-D011-B42D-00CF4FC964FF.vmcx' -Register"))
    assert.ok(s.includes("$replicas = @('R:\\vmesh\\web01\\web01.vhdx', 'R:\\vmesh\\web01\\web01-data''s.vhdx')"))
    assert.ok(s.includes("$map = @{ 'D:\\Hyper-V\\web01\\Virtual Hard Disks\\web01-data.vhdx' = 'R:\\vmesh\\web01\\web01-data''s.vhdx' }"))
    const order = ['Compare-VM -Path', 'Set-VMHardDiskDrive', 'Set-VHD -Path $child -ParentPath $to', 'Compare-VM -CompatibilityReport', 'Import-VM -CompatibilityReport', 'Set-VM -VM $vm -AutomaticStartAction Nothing', 'Start-VM -VM']
    const at = order.map(x => s.indexOf(x))
    assert.ok(at.every((x, i) => x > 0 && (i === 0 || x > (at[i - 1] as number))), `order ${at.join(',')}`)
  })

  it('start, registered on these files (restart at home, start after turnOff): Start-VM in place, no import', async () => {
    const { d, scripts } = make((s) => opOf(s) === 'lookup' ? psOk(fixture('hyperv/lookup-registered-off.json')) : psOk(fixture('hyperv/start-ok.json')))
    await d.start('web01', files, 3)
    assert.deepEqual(scripts.map(opOf), ['lookup', 'start-registered'])
    const s = scripts[1] as string
    assert.ok(s.includes("$vm = Get-VM -Id '6f9619ff-8b86-d011-b42d-00cf4fc964ff'"))
    assert.ok(s.indexOf('Set-VM -VM $vm -AutomaticStartAction Nothing') < s.indexOf('Start-VM -VM $vm'))
    assert.match(s, /Remove-VMSavedState/, 'a saved state over disks that moved on is discarded')
    assert.doesNotMatch(s, /Import-VM|Compare-VM/)
  })

  it('start, registered with a checkpoint chain whose base is among the files (a single drive prints a bare string): Start-VM in place', async () => {
    const { d, scripts } = make((s) => opOf(s) === 'lookup' ? psOk(fixture('hyperv/lookup-home-chain.json')) : psOk(fixture('hyperv/start-ok.json')))
    await d.start('web01', { disks: ['D:\\Hyper-V\\web01\\Virtual Hard Disks\\web01.vhdx'], files: ['D:\\Hyper-V\\web01\\Virtual Machines\\6F9619FF-8B86-D011-B42D-00CF4FC964FF.vmcx'], dir: 'C:\\run' }, 3)
    assert.deepEqual(scripts.map(opOf), ['lookup', 'start-registered'])
    assert.match(scripts[0] as string, /Get-VHD -Path \$p -ErrorAction SilentlyContinue\)\.ParentPath/)
  })

  it('start, registered on other files (failback onto a stale registration): Remove-VM by ID (files kept), then import', async () => {
    const { d, scripts } = make((s) => opOf(s) === 'lookup' ? psOk(fixture('hyperv/lookup-stale-home.json')) : opOf(s) === 'release' ? psOk(fixture('hyperv/release-ok.json')) : psOk(fixture('hyperv/start-ok.json')))
    await d.start('web01', files, 3)
    assert.deepEqual(scripts.map(opOf), ['lookup', 'release', 'import'])
    assert.ok((scripts[1] as string).includes("Where-Object { [string]$_.Id -eq '6f9619ff-8b86-d011-b42d-00cf4fc964ff' }"))
  })

  it('start: refused without a .vmcx, below the highest epoch, when running, over another VM of the name; Hyper-V errors keep their message', async () => {
    const { d } = make(() => psOk('[{"Name":"web01","Id":"6f9619ff-8b86-d011-b42d-00cf4fc964ff","State":2,"Drives":[]}]'))
    await assert.rejects(d.start('web01', { ...files, files: ['R:\\a.vmrs'] }, 1), { name: 'VmFilesError' })
    await assert.rejects(d.start('web01', files, 2), { name: 'VmAlreadyRunningError' })
    await assert.rejects(d.start('web01', files, 1), { name: 'StaleEpochError' })
    await assert.rejects(make(() => psOk(fixture('hyperv/lookup-other-vm.json'))).d.start('web01', files, 2), { name: 'VmNameConflictError' })
    const dup = make((s) => opOf(s) === 'lookup' ? psOk('[]') : psFail(1, fixture('hyperv/import-duplicate-id.err.txt').trim(), 'ObjectAlreadyExists,Microsoft.HyperV.PowerShell.Commands.CompareVM'))
    await assert.rejects(dup.d.start('web01', files, 2), { name: 'HypervisorCmdletError', cmdletMessage: 'Identifier already exists.' } as object)
    const inc = make((s) => opOf(s) === 'lookup' ? psOk('[]') : psFail(1, fixture('hyperv/start-incompatible.stderr.txt').trim()))
    await assert.rejects(inc.d.start('web01', files, 2), (err: Error & { cmdletMessage?: string }) => err.name === 'HypervisorCmdletError' && (err.cmdletMessage ?? '').includes('40010'))
  })

  it('release: turned off, configuration files copied aside, Remove-VM, files put back; preventAutoStart: Set-VM -AutomaticStartAction Nothing', async () => {
    const { d, scripts } = make((s) => opOf(s) === 'release' ? psOk(fixture('hyperv/release-ok.json')) : psOk())
    await d.release('sql 2019 (test)')
    const s = scripts[0] as string
    assert.ok(s.includes("$_.Name -eq 'sql 2019 (test)'"))
    const order = ['Stop-VM -VM $v -TurnOff', 'Copy-Item -LiteralPath $f -Destination $keep', 'Remove-VM -VM $v -Force', 'Copy-Item -LiteralPath (Join-Path $keep']
    const at = order.map(x => s.indexOf(x))
    assert.ok(at.every((x, i) => x > 0 && (i === 0 || x > (at[i - 1] as number))), `order ${at.join(',')}`)
    await d.preventAutoStart('sql 2019 (test)')
    assert.match(scripts[1] as string, /Set-VM -VM \$v -AutomaticStartAction Nothing/)
  })

  it('the fence action is the same turn-off script, standalone, as plain argv (exit codes instead of the session\'s throws)', async () => {
    const { d } = make(() => psOk())
    const a = await d.fenceAction('web01')
    assert.equal(a.kind, 'command')
    if (a.kind !== 'command' || a.off.kind !== 'exec') throw new Error('shape')
    assert.deepEqual(a.off.argv.slice(0, 4), PS)
    const s = decodeScript(a.off.argv[4] as string)
    assert.match(s, /Stop-VM -VM \$v -TurnOff -Force/)
    assert.match(s, /function vmeshExit\(\[int\]\$c\) \{ exit \$c \}/)
    assert.match(s, /catch \{\n {2}\[Console\]::Error\.WriteLine\(\$_\.Exception\.Message\)\n {2}exit 1/)
  })

  it('session protocol: one ASCII request line; a frame decodes; malformed frames are HypervisorOutputError', () => {
    const line = requestLine('abc123', "Get-VM | Where-Object { $_.Name -eq 'ü ß' }")
    assert.equal(line.split('\n').length, 2, 'one line')
    assert.ok(/^[\x20-\x7e]+\n$/.test(line), 'ASCII only: the console code page cannot mangle it')
    assert.ok(!RUNNER.includes('\n'))
    assert.doesNotMatch(RUNNER, /\}\s*;\s*(catch|finally|else)/, 'a `;` before catch/else ends the statement: a PowerShell parse error')
    assert.ok(RUNNER.includes(FRAME_SENTINEL))
    const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64')
    assert.deepEqual(decodeFrame(b64({ id: 'x', code: 0, out: 'o', err: null, errorId: '' }), 'x'), { code: 0, out: 'o', err: '', errorId: '' })
    assert.throws(() => decodeFrame(Buffer.from('{"id":').toString('base64'), 'x'), { name: 'HypervisorOutputError' })
    assert.throws(() => decodeFrame(b64({ id: 'y', code: 0 }), 'x'), { name: 'HypervisorOutputError' })
    assert.throws(() => decodeFrame(b64({ id: 'x', code: '0' }), 'x'), { name: 'HypervisorOutputError' })
    assert.throws(() => decodeFrame(b64([1]), 'x'), { name: 'HypervisorOutputError' })
  })

  it('helpers: state names, lists, the .vmcx ID, standalone wrapping', () => {
    assert.equal(stateName(2), 'Running')
    assert.equal(stateName(32786), 'OffCritical')
    assert.equal(stateName('Saved'), 'Saved')
    assert.equal(stateName(77), 'Unknown(77)')
    assert.deepEqual(jsonList('\uFEFF  ', 'x'), [])
    assert.throws(() => jsonList('42', 'x'), { name: 'HypervisorOutputError' })
    assert.deepEqual(stringList(null, 'x'), [])
    assert.deepEqual(stringList({ value: ['a'], Count: 1 }, 'x'), ['a'])
    assert.throws(() => stringList({ value: { value: ['a'] } }, 'x'), { name: 'HypervisorOutputError' })
    assert.equal(vmcxId('R:\\x y\\6F9619FF-8B86-D011-B42D-00CF4FC964FF.VMCX'), '6f9619ff-8b86-d011-b42d-00cf4fc964ff')
    assert.equal(vmcxId('R:\\x\\config.vmcx'), undefined)
    assert.match(standalone('# vmesh-op: x\nGet-VM'), /try \{\n {2}# vmesh-op: x\n {2}Get-VM\n\} catch/)
  })
})
