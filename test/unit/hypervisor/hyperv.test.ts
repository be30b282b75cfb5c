import assert from 'node:assert/strict'
import { join } from 'node:path'
import { HypervDriver } from '../../../daemon/hypervisor/hyperv.ts'
import { decodeScript, jsonList, stateName, stringList } from '../../../daemon/hypervisor/hyperv-scripts.ts'
import { ManualClock } from '../../../common/clock.ts'
import type { RunResult } from '../../../daemon/hypervisor/run.ts'
import { tempDir } from '../../helpers/tmp.ts'
import { fail, fakeRunner, fixture, ok } from './fake-runner.ts'

const PS = ['powershell.exe', '-NoProfile', '-NonInteractive', '-EncodedCommand']

function scriptOf (argv: string[]): string {
  assert.deepEqual(argv.slice(0, 4), PS)
  assert.equal(argv.length, 5)
  return decodeScript(argv[4] as string)
}

describe('hypervisor/hyperv (recorded PowerShell output)', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeEach(async () => { ({ dir, cleanup } = await tempDir('vmesh-hyperv-')) })
  afterEach(async () => { await cleanup() })
  const make = (respond: (script: string, n: number) => RunResult): { d: HypervDriver, calls: ReturnType<typeof fakeRunner>['calls'] } => {
    const { run, calls } = fakeRunner((argv, n) => respond(scriptOf(argv), n))
    return { d: new HypervDriver({}, { cwd: dir, stateDir: join(dir, 'state'), clock: new ManualClock(), run }), calls }
  }

  it('list: an array (5.1 layout, CRLF, numeric states)', async () => {
    const { d, calls } = make(() => ok(fixture('hyperv/list-two.json')))
    const vms = await d.list()
    const script = scriptOf(calls[0]?.argv as string[])
    assert.match(script, /Get-VM/)
    assert.match(script, /Get-VMHardDiskDrive -VM \$vm/)
    assert.match(script, /ConvertTo-Json/)
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

  it('list: one VM prints a bare object; 5.1 array quirks ({value,Count}, a lone string) are read', async () => {
    const { d } = make(() => ok(fixture('hyperv/list-one.json')))
    assert.deepEqual(await d.list(), [{
      name: 'dc01', state: 'other', id: '9d4c3b2a-1f0e-4d8c-b7a6-5e4f3d2c1b0a',
      disks: ['E:\\VMs\\dc01\\dc01.vhdx'], files: ['E:\\VMs\\dc01\\Virtual Machines\\9D4C3B2A-1F0E-4D8C-B7A6-5E4F3D2C1B0A.vmcx']
    }])
  })

  it('list: no VMs prints nothing; PS 7 -EnumsAsStrings states; null and [] lists', async () => {
    assert.deepEqual(await make(() => ok(fixture('hyperv/list-empty.txt'))).d.list(), [])
    const vms = await make(() => ok(fixture('hyperv/list-ps7-enums-as-strings.json'))).d.list()
    assert.deepEqual(vms.map(v => [v.name, v.state, v.disks.length, v.files.length]), [['web01', 'running', 1, 0], ['build', 'other', 0, 0]])
  })

  it('list: malformed output is HypervisorOutputError; a failing PowerShell is HypervisorCommandFailedError', async () => {
    await assert.rejects(make(() => ok('{ "Name": ')).d.list(), { name: 'HypervisorOutputError' })
    await assert.rejects(make(() => ok('[{ "State": 2 }]')).d.list(), { name: 'HypervisorOutputError' })
    await assert.rejects(make(() => ok('[{ "Name": "a", "Disks": [1] }]')).d.list(), { name: 'HypervisorOutputError' })
    await assert.rejects(make(() => fail(1, 'The term \'Get-VM\' is not recognized')).d.list(), { name: 'HypervisorCommandFailedError' })
  })

  it('isRunning: (Get-VM).State by exact name; Off and Saved are not running; unknown is false', async () => {
    const answers: Record<string, RunResult> = {
      web01: ok(fixture('hyperv/state-running.json')), db01: ok(fixture('hyperv/state-off.json')), dc01: ok(fixture('hyperv/state-saved.json')), ghost: fail(3), twin: fail(4)
    }
    const { d, calls } = make((script) => {
      const name = /\$_\.Name -eq '([^']*)'/.exec(script)?.[1] as string
      return answers[name] as RunResult
    })
    assert.equal(await d.isRunning('web01'), true)
    assert.equal(await d.isRunning('db01'), false)
    assert.equal(await d.isRunning('dc01'), false)
    assert.equal(await d.isRunning('ghost'), false)
    await assert.rejects(d.isRunning('twin'), { name: 'HypervisorCommandFailedError' })
    const s = scriptOf(calls[0]?.argv as string[])
    assert.match(s, /Where-Object \{ \$_\.Name -eq 'web01' \}/)
    assert.doesNotMatch(s, /Get-VM -Name/, 'Get-VM -Name takes wildcards')
  })

  it('turnOff: Stop-VM -TurnOff -Force (saved state discarded); a failure is an error', async () => {
    const { d, calls } = make(() => ok())
    await d.turnOff("o'brien [test]*")
    const s = scriptOf(calls[0]?.argv as string[])
    assert.match(s, /Stop-VM -VM \$v -TurnOff -Force/)
    assert.match(s, /Remove-VMSavedState/)
    assert.ok(s.includes("$_.Name -eq 'o''brien [test]*'"), 'the name is one quoted literal')
    await assert.rejects(make(() => fail(1, fixture('hyperv/stop-failed.stderr.txt'))).d.turnOff('web01'), { name: 'HypervisorCommandFailedError', exitCode: 1 } as object)
  })

  it('start: Compare-VM -Register on the replica .vmcx, disks to replicas, Import-VM, Start-VM', async () => {
    const { d, calls } = make(() => ok(fixture('hyperv/start-ok.json')))
    const files = {
      disks: ['R:\\vmesh\\web01\\web01.vhdx', "R:\\vmesh\\web01\\web01-data's.vhdx"],
      files: ['R:\\vmesh\\web01\\6F9619FF.vmrs', 'R:\\vmesh\\web01\\6F9619FF.vmcx'],
      dir: 'R:\\vmesh\\web01',
      sourceMap: { 'D:\\Hyper-V\\web01\\Virtual Hard Disks\\web01-data.vhdx': "R:\\vmesh\\web01\\web01-data's.vhdx" }
    }
    await d.start('web01', files, 3)
    assert.equal(calls.length, 1)
    const s = scriptOf(calls[0]?.argv as string[])
    assert.ok(s.includes("Compare-VM -Path 'R:\\vmesh\\web01\\6F9619FF.vmcx' -Register"))
    assert.ok(s.includes("$replicas = @('R:\\vmesh\\web01\\web01.vhdx', 'R:\\vmesh\\web01\\web01-data''s.vhdx')"))
    assert.ok(s.includes("$map = @{ 'D:\\Hyper-V\\web01\\Virtual Hard Disks\\web01-data.vhdx' = 'R:\\vmesh\\web01\\web01-data''s.vhdx' }"))
    const order = ['Compare-VM -Path', 'Set-VMHardDiskDrive', 'Compare-VM -CompatibilityReport', 'Import-VM -CompatibilityReport', 'Start-VM -VM']
    const at = order.map(x => s.indexOf(x))
    assert.ok(at.every((x, i) => x > 0 && (i === 0 || x > (at[i - 1] as number))), `order ${at.join(',')}`)
  })

  it('start: refused without a .vmcx, below the highest epoch, when running; incompatibilities are errors', async () => {
    const { d } = make(() => fail(5))
    await assert.rejects(d.start('web01', { disks: ['R:\\a.vhdx'], files: ['R:\\a.vmrs'], dir: 'R:\\' }, 1), { name: 'VmFilesError' })
    await assert.rejects(d.start('web01', { disks: ['R:\\a.vhdx'], files: ['R:\\a.VMCX'], dir: 'R:\\' }, 2), { name: 'VmAlreadyRunningError' })
    await assert.rejects(d.start('web01', { disks: ['R:\\a.vhdx'], files: ['R:\\a.vmcx'], dir: 'R:\\' }, 1), { name: 'StaleEpochError' })
    const { d: d2 } = make(() => fail(1, fixture('hyperv/start-incompatible.stderr.txt')))
    await assert.rejects(d2.start('web01', { disks: ['R:\\a.vhdx'], files: ['R:\\a.vmcx'], dir: 'R:\\' }, 2), (err: Error & { stderrTail?: string }) => err.name === 'HypervisorCommandFailedError' && (err.stderrTail ?? '').includes('40010'))
  })

  it('the fence action is the same turn-off script, as plain argv', async () => {
    const { d } = make(() => ok())
    const a = await d.fenceAction('web01')
    assert.equal(a.kind, 'command')
    if (a.kind !== 'command' || a.off.kind !== 'exec') throw new Error('shape')
    assert.match(scriptOf(a.off.argv), /Stop-VM -VM \$v -TurnOff -Force/)
  })

  it('helpers: state names, lists', () => {
    assert.equal(stateName(2), 'Running')
    assert.equal(stateName(32786), 'OffCritical')
    assert.equal(stateName('Saved'), 'Saved')
    assert.equal(stateName(77), 'Unknown(77)')
    assert.deepEqual(jsonList('\uFEFF  ', 'x'), [])
    assert.throws(() => jsonList('42', 'x'), { name: 'HypervisorOutputError' })
    assert.deepEqual(stringList(null, 'x'), [])
    assert.deepEqual(stringList({ value: ['a'], Count: 1 }, 'x'), ['a'])
    assert.throws(() => stringList({ value: { value: ['a'] } }, 'x'), { name: 'HypervisorOutputError' })
  })
})
