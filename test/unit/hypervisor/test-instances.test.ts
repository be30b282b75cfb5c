/**
 * Isolated test instances (`vmesh failover --test`) in every driver: the clone runs under its
 * own name, without a network, and never admits or records an epoch.
 */
import assert from 'node:assert/strict'
import { access, chmod, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ManualClock, systemClock } from '../../../common/clock.ts'
import { CommandDriver } from '../../../daemon/hypervisor/command.ts'
import { QemuDriver, withoutNetwork } from '../../../daemon/hypervisor/qemu.ts'
import { LibvirtDriver } from '../../../daemon/hypervisor/libvirt.ts'
import { HypervDriver } from '../../../daemon/hypervisor/hyperv.ts'
import { domainDisks, elementText, isolatedTestXml } from '../../../daemon/hypervisor/libvirt-parse.ts'
import { EPOCH_FILE } from '../../../daemon/hypervisor/epochs.ts'
import { supportsTestInstances } from '../../../daemon/hypervisor/driver.ts'
import { defaultRunner, type RunResult } from '../../../daemon/hypervisor/run.ts'
import { tempDir } from '../../helpers/tmp.ts'
import { fail, fakeRunner, fakeTransport, fixture, ok, psFail, psOk, type PsReplyLike } from './fake-runner.ts'

async function exists (p: string): Promise<boolean> { try { await access(p); return true } catch { return false } }

describe('hypervisor test instances', function () {
  this.timeout(20_000)
  let dir: string
  let cleanup: () => Promise<void>
  beforeEach(async () => { ({ dir, cleanup } = await tempDir('vmesh-testinst-')) })
  afterEach(async () => { await cleanup() })
  const state = (): string => join(dir, 'state')

  describe('command', () => {
    // a fake hypervisor: VMs are files in run/ (present = running); every call is logged
    const SCRIPT = '#!/bin/sh\nop=$1; shift\nprintf "%s\\n" "$op $*" >> calls.log\nprintf "%s|%s|%s|%s\\n" "$VMESH_VM" "$VMESH_EPOCH" "$VMESH_TEST" "$VMESH_TEST_OF" >> env.log\ncase $op in\n  start) touch "run/$1" ;;\n  stop) rm -f "run/$1" ;;\n  status) [ -f "run/$1" ] ;;\nesac\n'
    const deps = (): ConstructorParameters<typeof CommandDriver>[1] => ({ cwd: dir, stateDir: state(), clock: systemClock, run: defaultRunner })
    beforeEach(async () => {
      await writeFile(join(dir, 'vm.sh'), SCRIPT); await chmod(join(dir, 'vm.sh'), 0o755)
      await mkdir(join(dir, 'run'))
    })
    const calls = async (): Promise<string[]> => (await readFile(join(dir, 'calls.log'), 'utf8')).trimEnd().split('\n')

    it('start with {test}: the test name, epoch 0, test 1; no epoch recorded; stop and status by test name', async () => {
      const d = new CommandDriver({ start: './vm.sh start {vm} {epoch} {test} {dir}', stop: './vm.sh stop {vm} {test}', status: './vm.sh status {vm}' }, deps())
      assert.ok(supportsTestInstances(d))
      await d.startTest('web01', 'web01-test', { disks: ['/t/files/web01.vhdx'], files: [], dir: '/t/instance' })
      assert.equal(await d.isTestRunning('web01-test'), true)
      assert.equal(await d.isRunning('web01'), false, 'the production VM is not started')
      assert.equal(await exists(join(state(), EPOCH_FILE)), false, 'no epoch is recorded')
      assert.equal(await d.highestEpoch('web01'), 0)
      await d.stopTest('web01-test')
      assert.equal(await d.isTestRunning('web01-test'), false)
      await d.stopTest('web01-test') // idempotent
      const c = await calls()
      assert.equal(c[0], 'status web01-test', 'checks that no clone runs yet')
      assert.equal(c[1], 'start web01-test 0 1 /t/instance')
      assert.ok(c.includes('stop web01-test 1'))
      assert.ok((await readFile(join(dir, 'env.log'), 'utf8')).includes('web01-test|0|1|web01'))
      // a production start fills {test} with 0
      await d.start('web01', { disks: [], files: [], dir: '/r' }, 3)
      assert.equal((await calls()).at(-1), 'start web01 3 0 /r')
    })

    it('testStart/testStop/testStatus are used when set', async () => {
      const d = new CommandDriver({ start: './vm.sh start {vm} {epoch}', stop: './vm.sh stop {vm}', status: './vm.sh status {vm}', testStart: './vm.sh start {vm} isolated {dir}', testStop: './vm.sh stop {vm} isolated', testStatus: './vm.sh status {vm}' }, deps())
      await d.startTest('web01', 'web01-test', { disks: [], files: [], dir: '/t/instance' })
      await d.stopTest('web01-test')
      assert.deepEqual((await calls()).filter(c => !c.startsWith('status')), ['start web01-test isolated /t/instance', 'stop web01-test isolated'])
    })

    it('refuses a test when the script cannot know it is one (no {test}, no testStart), before running anything', async () => {
      const d = new CommandDriver({ start: './vm.sh start {vm} {epoch}', stop: './vm.sh stop {vm}', status: './vm.sh status {vm}' }, deps())
      await assert.rejects(d.startTest('web01', 'web01-test', { disks: [], files: [], dir: '/t' }), { name: 'HypervisorUnsupportedError', code: 'ERR_HYPERVISOR_UNSUPPORTED' })
      assert.equal(await exists(join(dir, 'calls.log')), false)
    })

    it('a clone already running under the test name is refused; {epoch} is not available in testStart', async () => {
      const d = new CommandDriver({ start: './vm.sh start {vm} {test}', stop: './vm.sh stop {vm}', status: './vm.sh status {vm}' }, deps())
      await writeFile(join(dir, 'run', 'web01-test'), '')
      await assert.rejects(d.startTest('web01', 'web01-test', { disks: [], files: [], dir: '/t' }), { name: 'VmAlreadyRunningError', code: 'ERR_VM_ALREADY_RUNNING' })
      assert.throws(() => new CommandDriver({ start: 'x', stop: 'x', status: 'x', testStart: 'x {epoch}' }, deps()), { name: 'HypervisorConfigError' })
    })
  })

  describe('qemu', () => {
    const disk = async (): Promise<string> => {
      const p = join(dir, 'files', 'web01.vhdx')
      await mkdir(join(dir, 'files'), { recursive: true })
      const b = Buffer.alloc(1024); b.write('vhdxfile', 0, 'latin1')
      await writeFile(p, b)
      return p
    }

    it('withoutNetwork drops -nic/-net/-netdev and network cards, keeps everything else', () => {
      assert.deepEqual(withoutNetwork([
        '-nodefaults', '-netdev', 'bridge,id=n0,br=br0', '-device', 'virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01',
        '--nic', 'user', '-net', 'nic', '-device', 'driver=e1000,id=x', '-device', 'virtio-blk-pci,drive=d0', '-device', 'foo,netdev=n1', '-accel', 'tcg'
      ]), ['-nodefaults', '-device', 'virtio-blk-pci,drive=d0', '-accel', 'tcg'])
    })

    it('the clone\'s command line: test name, its own folder, the user\'s network args gone, -nic none', async () => {
      const d = new QemuDriver({ memoryMiB: 64, args: ['-accel', 'tcg', '-netdev', 'user,id=n0', '-device', 'e1000,netdev=n0'] }, { cwd: dir, stateDir: state(), clock: new ManualClock(), run: fakeRunner(() => ok()).run })
      const inst = join(dir, 'instance')
      const { argv } = await d.commandLine('web01-test', { disks: [await disk()], files: [], dir: inst }, { isolated: true })
      assert.deepEqual(argv.slice(0, 3), ['qemu-system-x86_64', '-name', 'guest=web01-test'])
      assert.ok(argv.includes(`${inst}/web01-test.pid`))
      assert.deepEqual(argv.slice(-4), ['-accel', 'tcg', '-nic', 'none'])
      assert.ok(!argv.includes('-netdev') && !argv.some(a => a.startsWith('e1000')))
      // without isolation (production) the user's args are untouched
      const prod = (await d.commandLine('web01', { disks: [await disk()], files: [], dir: inst })).argv
      assert.ok(prod.includes('-netdev') && !prod.includes('-nic'))
    })

    it('startTest runs that command line and never records an epoch; stopTest forgets the clone', async () => {
      const { run, calls } = fakeRunner(() => ok())
      const d = new QemuDriver({}, { cwd: dir, stateDir: state(), clock: new ManualClock(), run, procRoot: join(dir, 'noproc') })
      const inst = join(dir, 'instance')
      // the fake qemu "succeeds" without a live process: the driver notices
      await assert.rejects(d.startTest('web01', 'web01-test', { disks: [await disk()], files: [], dir: inst }), { name: 'HypervisorCommandFailedError' })
      assert.equal(calls.length, 1)
      const argv = calls[0]?.argv as string[]
      assert.ok(argv.includes('guest=web01-test'))
      assert.deepEqual(argv.slice(-2), ['-nic', 'none'])
      assert.equal(calls[0]?.opts.cwd, inst)
      assert.equal(await exists(join(state(), EPOCH_FILE)), false)
      assert.equal(await d.highestEpoch('web01'), 0)
      assert.deepEqual(await d.list(), [], 'a test clone is not a VM to discover')
      assert.equal(await d.isTestRunning('web01-test'), false)
      await d.stopTest('web01-test')
      const saved = JSON.parse(await readFile(join(state(), 'qemu-vms.json'), 'utf8')) as { vms: Record<string, unknown> }
      assert.deepEqual(Object.keys(saved.vms), [])
    })
  })

  describe('libvirt', () => {
    const V = ['virsh', '-c', 'qemu:///system']
    const setup = async (withNvram: boolean): Promise<{ files: { disks: string[], files: string[], dir: string }, inst: string }> => {
      const fdir = join(dir, 'files')
      await mkdir(fdir, { recursive: true })
      await writeFile(join(fdir, 'web01.xml'), fixture('libvirt/dumpxml-web01.xml'))
      const inst = join(dir, 'instance')
      return { files: { disks: [join(fdir, 'web01.vhdx'), join(fdir, 'web01 data.vhdx')], files: [join(fdir, 'web01.xml'), ...(withNvram ? [join(fdir, 'web01_VARS.fd')] : [])], dir: inst }, inst }
    }

    it('isolatedTestXml renames, drops the UUID and every interface, leaves the rest', () => {
      const xml = "<domain type='kvm'>\n  <name>web01</name>\n  <uuid>u-1</uuid>\n  <devices>\n    <interface type='network'>\n      <source network='default'/>\n    </interface>\n    <interface type='user'/>\n    <disk type='file' device='disk'><source file='/a'/></disk>\n  </devices>\n</domain>\n"
      assert.equal(isolatedTestXml(xml, 'web01-test'), "<domain type='kvm'>\n  <name>web01-test</name>\n  <devices>\n    <disk type='file' device='disk'><source file='/a'/></disk>\n  </devices>\n</domain>\n")
    })

    it('startTest: the replica XML renamed, no UUID, no <interface>, disks and NVRAM on the restored files → virsh create (transient)', async () => {
      const { files, inst } = await setup(true)
      const { run, calls } = fakeRunner((argv) => {
        const a = argv.slice(3).join(' ')
        if (a === 'domstate web01-test') return fail(1, fixture('libvirt/no-domain.stderr.txt').replace('ghost', 'web01-test'))
        if (a.startsWith('create ')) return ok(`Domain 'web01-test' created from ${inst}/web01-test.libvirt.xml\n\n`)
        return fail(1, `unexpected ${a}`)
      })
      const d = new LibvirtDriver({}, { cwd: dir, stateDir: state(), clock: new ManualClock(), run })
      await d.startTest('web01', 'web01-test', files)
      const path = join(inst, 'web01-test.libvirt.xml')
      assert.deepEqual(calls.map(c => c.argv), [[...V, 'domstate', 'web01-test'], [...V, 'create', path]])
      const xml = await readFile(path, 'utf8')
      assert.equal(elementText(xml, 'name'), 'web01-test')
      assert.equal(elementText(xml, 'uuid'), undefined)
      assert.doesNotMatch(xml, /<interface\b/)
      assert.match(fixture('libvirt/dumpxml-web01.xml'), /<interface\b/, 'the fixture had one')
      assert.deepEqual(domainDisks(xml).filter(x => x.device === 'disk').map(x => x.source), files.disks)
      assert.equal(elementText(xml, 'nvram'), files.files[1])
      assert.equal(await exists(join(state(), EPOCH_FILE)), false)
    })

    it('startTest refuses an NVRAM store that was not restored, and a clone that already runs', async () => {
      const { files } = await setup(false)
      const d = new LibvirtDriver({}, { cwd: dir, stateDir: state(), clock: new ManualClock(), run: fakeRunner(() => ok('running\n')).run })
      await assert.rejects(d.startTest('web01', 'web01-test', files), { name: 'VmFilesError', code: 'ERR_VM_FILES' })
      const { files: withNvram } = await setup(true)
      await assert.rejects(d.startTest('web01', 'web01-test', withNvram), { name: 'VmAlreadyRunningError' })
    })

    it('stopTest: virsh destroy of the test name; a clone that is gone is success', async () => {
      const r1 = fakeRunner(() => ok("Domain 'web01-test' destroyed\n"))
      await new LibvirtDriver({}, { cwd: dir, stateDir: state(), clock: new ManualClock(), run: r1.run }).stopTest('web01-test')
      assert.deepEqual(r1.calls.map(c => c.argv), [[...V, 'destroy', 'web01-test']])
      const r2 = fakeRunner(() => fail(1, "error: failed to get domain 'web01-test'\n"))
      await new LibvirtDriver({}, { cwd: dir, stateDir: state(), clock: new ManualClock(), run: r2.run }).stopTest('web01-test')
    })
  })

  describe('hyperv', () => {
    const make = (respond: (script: string) => PsReplyLike): { d: HypervDriver, scripts: string[] } => {
      const { transport, scripts } = fakeTransport((script) => respond(script))
      return { d: new HypervDriver({}, { cwd: dir, stateDir: state(), clock: new ManualClock(), run: fakeRunner(() => ok()).run }, transport), scripts }
    }
    const files = { disks: ['T:\\test\\web01\\files\\web01.vhdx'], files: ['T:\\test\\web01\\files\\6F9619FF.vmcx'], dir: 'T:\\test\\web01\\instance', sourceMap: { 'D:\\Hyper-V\\web01.vhdx': 'T:\\test\\web01\\files\\web01.vhdx' } }

    it('startTest: Import-VM -Copy -GenerateNewId into the test folder, adapters disconnected and checked, renamed, started', async () => {
      const { d, scripts } = make(() => psOk('{\r\n    "Name":  "web01-test",\r\n    "Id":  "1b2c",\r\n    "State":  2\r\n}\r\n'))
      await d.startTest('web01', 'web01-test', files)
      const s = scripts[0] as string
      assert.ok(s.includes("$_.Name -eq 'web01-test'"), 'refuses when a VM has the test name')
      assert.ok(s.includes("Compare-VM -Path 'T:\\test\\web01\\files\\6F9619FF.vmcx' -Copy -GenerateNewId -VirtualMachinePath 'T:\\test\\web01\\instance'"))
      assert.doesNotMatch(s, /-Register/)
      assert.ok(s.includes("$map = @{ 'D:\\Hyper-V\\web01.vhdx' = 'T:\\test\\web01\\files\\web01.vhdx' }"))
      const order = ['Compare-VM -Path', 'Set-VMHardDiskDrive', 'Get-VMNetworkAdapter -VM $report.VM | Disconnect-VMNetworkAdapter', 'Import-VM -CompatibilityReport', "Rename-VM -VM $vm -NewName 'web01-test'", 'Set-VM -VM $vm -AutomaticStartAction Nothing', 'Get-VMNetworkAdapter -VM $vm | Disconnect-VMNetworkAdapter', 'still connected', 'Start-VM -VM $vm', 'Remove-VM -VM $vm -Force']
      const at = order.map(x => s.indexOf(x))
      assert.ok(at.every((x, i) => x > 0 && (i === 0 || x > (at[i - 1] as number))), `order ${at.join(',')}`)
      assert.equal(await exists(join(state(), EPOCH_FILE)), false)
    })

    it('startTest: status 5 (a VM with the test name exists) → VmAlreadyRunningError; no .vmcx → VmFilesError', async () => {
      await assert.rejects(make(() => psFail(5)).d.startTest('web01', 'web01-test', files), { name: 'VmAlreadyRunningError' })
      await assert.rejects(make(() => psOk()).d.startTest('web01', 'web01-test', { ...files, files: [] }), { name: 'VmFilesError' })
      await assert.rejects(make(() => psFail(1, 'The operation failed.')).d.startTest('web01', 'web01-test', files), { name: 'HypervisorCmdletError' })
    })

    it('stopTest: Stop-VM -TurnOff and Remove-VM -Force of the VMs with exactly the test name', async () => {
      const { d, scripts } = make(() => psOk())
      await d.stopTest("o'brien-test")
      const s = scripts[0] as string
      assert.ok(s.includes("Where-Object { $_.Name -eq 'o''brien-test' }"))
      assert.ok(s.indexOf('Stop-VM -VM $v -TurnOff -Force') < s.indexOf('Remove-VM -VM $v -Force'))
      assert.doesNotMatch(s, /Get-VM -Name/)
      await assert.rejects(make(() => psFail(1, 'access denied')).d.stopTest('web01-test'), { name: 'HypervisorCmdletError' })
    })
  })
})
