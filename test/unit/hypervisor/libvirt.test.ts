import assert from 'node:assert/strict'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LibvirtDriver } from '../../../daemon/hypervisor/libvirt.ts'
import { domainDisks, elementText, parseDomblklist, parseDomstate, parseNames, rewriteDomainXml } from '../../../daemon/hypervisor/libvirt-parse.ts'
import { executeFence } from '../../../daemon/hypervisor/fence.ts'
import { ManualClock } from '../../../common/clock.ts'
import type { RunResult } from '../../../daemon/hypervisor/run.ts'
import { tempDir } from '../../helpers/tmp.ts'
import { fail, fakeRunner, fixture, ok } from './fake-runner.ts'

const V = ['virsh', '-c', 'qemu:///system']

/** Answers virsh calls from the recorded outputs. */
function recorded (argv: string[]): RunResult {
  const args = argv.slice(3).join(' ')
  switch (args) {
    case 'list --all --name': return ok(fixture('libvirt/list-all-name.txt'))
    case 'domblklist web01 --details': return ok(fixture('libvirt/domblklist-web01.txt'))
    case 'domblklist db01 --details': return ok(fixture('libvirt/domblklist-db01.txt'))
    case 'domstate web01': return ok(fixture('libvirt/domstate-running.txt'))
    case 'domstate db01': return ok(fixture('libvirt/domstate-shut-off.txt'))
    case 'dumpxml web01 --inactive': return ok(fixture('libvirt/dumpxml-web01.xml'))
    case 'dumpxml db01 --inactive': return ok(fixture('libvirt/dumpxml-db01.xml'))
    default: return fail(1, `unexpected ${args}`)
  }
}

describe('hypervisor/libvirt (recorded virsh output)', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeEach(async () => { ({ dir, cleanup } = await tempDir('vmesh-libvirt-')) })
  afterEach(async () => { await cleanup() })
  const make = (run: ReturnType<typeof fakeRunner>['run']): LibvirtDriver => new LibvirtDriver({}, { cwd: dir, stateDir: join(dir, 'state'), clock: new ManualClock(), run })

  it('parses virsh list, domblklist (spaces in paths, empty CD), domstate', () => {
    assert.deepEqual(parseNames(fixture('libvirt/list-all-name.txt')), ['web01', 'db01'])
    assert.deepEqual(parseDomblklist(fixture('libvirt/domblklist-web01.txt')), [
      { type: 'file', device: 'disk', target: 'vda', source: '/var/lib/libvirt/images/web01.vhdx' },
      { type: 'file', device: 'disk', target: 'vdb', source: '/var/lib/libvirt/images/web01 data.vhdx' },
      { type: 'file', device: 'cdrom', target: 'sda', source: null }
    ])
    // the older, unindented layout
    assert.deepEqual(parseDomblklist('Type       Device     Target     Source\n------------------------------------------------\nfile       disk       hda        /v/a.img\n'), [{ type: 'file', device: 'disk', target: 'hda', source: '/v/a.img' }])
    assert.equal(parseDomstate(fixture('libvirt/domstate-shut-off.txt')), 'shut off')
    assert.equal(elementText(fixture('libvirt/dumpxml-web01.xml'), 'uuid'), '3e3fce45-4f53-4fa7-bb32-11f34168b82b')
  })

  it('list: exact virsh calls, disks (not CDs), the persistent XML and NVRAM as files', async () => {
    const { run, calls } = fakeRunner(recorded)
    const vms = await make(run).list()
    assert.deepEqual(calls.map(c => c.argv), [
      [...V, 'list', '--all', '--name'],
      [...V, 'domblklist', 'web01', '--details'], [...V, 'domstate', 'web01'], [...V, 'dumpxml', 'web01', '--inactive'],
      [...V, 'domblklist', 'db01', '--details'], [...V, 'domstate', 'db01'], [...V, 'dumpxml', 'db01', '--inactive']
    ])
    assert.deepEqual(vms, [
      { name: 'web01', disks: ['/var/lib/libvirt/images/web01.vhdx', '/var/lib/libvirt/images/web01 data.vhdx'], files: ['/etc/libvirt/qemu/web01.xml', '/var/lib/libvirt/qemu/nvram/web01_VARS.fd'], state: 'running', id: '3e3fce45-4f53-4fa7-bb32-11f34168b82b' },
      { name: 'db01', disks: ['/dev/vg0/db01-root'], files: ['/etc/libvirt/qemu/db01.xml'], state: 'off', id: 'a7d1c0de-9a3b-4c1e-8f00-5b8e7e6d2c11' }
    ])
    for (const c of calls) assert.ok(c.opts.timeoutMs > 0)
  })

  it('a failing virsh is HypervisorCommandFailedError with its stderr', async () => {
    const { run } = fakeRunner(() => fail(1, 'error: failed to connect to the hypervisor'))
    await assert.rejects(make(run).list(), { name: 'HypervisorCommandFailedError', exitCode: 1, stderrTail: 'error: failed to connect to the hypervisor' } as object)
  })

  it('start: the saved XML with disks and NVRAM pointed at the replicas → define → start', async () => {
    const rdir = join(dir, 'replica', 'web01')
    await mkdir(rdir, { recursive: true })
    const xmlPath = join(rdir, 'web01.xml')
    await writeFile(xmlPath, fixture('libvirt/dumpxml-web01.xml'))
    const files = { disks: [join(rdir, 'web01.vhdx'), join(rdir, "web01_data's.vhdx")], files: [xmlPath, join(rdir, 'web01_VARS.fd')], dir: rdir }
    const { run, calls } = fakeRunner((argv) => {
      const a = argv.slice(3).join(' ')
      if (a === 'domstate web01') return fail(1, fixture('libvirt/no-domain.stderr.txt').replace('ghost', 'web01'))
      if (a.startsWith('define ')) return ok(fixture('libvirt/define-ok.txt'))
      if (a === 'start web01') return ok(fixture('libvirt/start-ok.txt'))
      return fail(1, `unexpected ${a}`)
    })
    await make(run).start('web01', { ...files, sourceMap: { '/var/lib/libvirt/images/web01 data.vhdx': join(rdir, "web01_data's.vhdx") } }, 2)
    const defined = join(rdir, 'web01.libvirt.xml')
    assert.deepEqual(calls.map(c => c.argv), [[...V, 'domstate', 'web01'], [...V, 'define', defined], [...V, 'start', 'web01']])
    const xml = await readFile(defined, 'utf8')
    assert.deepEqual(domainDisks(xml), [
      { device: 'disk', type: 'file', source: join(rdir, 'web01.vhdx') },
      { device: 'disk', type: 'file', source: join(rdir, "web01_data's.vhdx") },
      { device: 'cdrom', type: 'file', source: null }
    ])
    assert.ok(xml.includes(`<source file='${join(rdir, 'web01_data&apos;s.vhdx')}'/>`), 'attribute values are escaped')
    assert.equal(elementText(xml, 'nvram'), join(rdir, 'web01_VARS.fd'))
    // everything else is byte-identical
    const strip = (s: string): string => s.replace(/<source file='[^']*'\/>/g, '').replace(/<nvram[^>]*>[^<]*<\/nvram>/, '')
    assert.equal(strip(xml), strip(fixture('libvirt/dumpxml-web01.xml')))
  })

  it('start refuses: no XML among the files, an XML of another domain, a disk without a replica, a running VM', async () => {
    const rdir = join(dir, 'r'); await mkdir(rdir)
    const { run } = fakeRunner((argv) => argv.includes('domstate') ? ok('running\n') : ok())
    const d = make(run)
    await assert.rejects(d.start('web01', { disks: [join(rdir, 'web01.vhdx')], files: [], dir: rdir }, 1), { name: 'VmFilesError', code: 'ERR_VM_FILES' })
    await writeFile(join(rdir, 'db01.xml'), fixture('libvirt/dumpxml-db01.xml'))
    await assert.rejects(d.start('web01', { disks: [join(rdir, 'x.vhdx')], files: [join(rdir, 'db01.xml')], dir: rdir }, 1), { name: 'VmFilesError' })
    await writeFile(join(rdir, 'web01.xml'), fixture('libvirt/dumpxml-web01.xml'))
    await assert.rejects(d.start('web01', { disks: [join(rdir, 'web01.vhdx')], files: [join(rdir, 'web01.xml')], dir: rdir }, 1), { name: 'VmFilesError' }, 'two disks, one replica')
    await assert.rejects(d.start('web01', { disks: [join(rdir, 'web01.vhdx'), join(rdir, 'b.vhdx')], files: [join(rdir, 'web01.xml')], dir: rdir }, 1), { name: 'VmAlreadyRunningError', code: 'ERR_VM_ALREADY_RUNNING' })
    await assert.rejects(d.start('web01', { disks: [join(rdir, 'web01.vhdx'), join(rdir, 'b.vhdx')], files: [join(rdir, 'web01.xml')], dir: rdir }, 0), { name: 'StaleEpochError' })
  })

  it('a block-device disk becomes a file disk on its replica', () => {
    const { xml, unmapped } = rewriteDomainXml(fixture('libvirt/dumpxml-db01.xml'), () => '/r/db01-root', () => undefined)
    assert.deepEqual(unmapped, [])
    assert.deepEqual(domainDisks(xml), [
      { device: 'disk', type: 'file', source: '/r/db01-root' },
      { device: 'cdrom', type: 'file', source: '/var/lib/libvirt/iso/debian-12.iso' }
    ])
  })

  it('turnOff: destroy; "not running" or "no such domain" is success; still running is an error', async () => {
    const run1 = fakeRunner(() => ok(fixture('libvirt/destroy-ok.txt')))
    await make(run1.run).turnOff('web01')
    assert.deepEqual(run1.calls.map(c => c.argv), [[...V, 'destroy', 'web01']])

    const run2 = fakeRunner((argv) => argv.includes('destroy') ? fail(1, fixture('libvirt/destroy-not-running.stderr.txt')) : ok(fixture('libvirt/domstate-shut-off.txt')))
    await make(run2.run).turnOff('web01')
    assert.deepEqual(run2.calls.map(c => c.argv), [[...V, 'destroy', 'web01'], [...V, 'domstate', 'web01']])

    const run3 = fakeRunner(() => fail(1, fixture('libvirt/no-domain.stderr.txt')))
    await make(run3.run).turnOff('ghost')

    const run4 = fakeRunner((argv) => argv.includes('destroy') ? fail(1, 'error: Timed out during operation') : ok(fixture('libvirt/domstate-running.txt')))
    await assert.rejects(make(run4.run).turnOff('web01'), { name: 'HypervisorCommandFailedError' })
  })

  it('isRunning: paused counts as running, shut off and unknown do not', async () => {
    const states: Record<string, RunResult> = {
      a: ok(fixture('libvirt/domstate-running.txt')), b: ok(fixture('libvirt/domstate-paused.txt')),
      c: ok(fixture('libvirt/domstate-shut-off.txt')), ghost: fail(1, fixture('libvirt/no-domain.stderr.txt')), e: fail(1, 'error: internal error')
    }
    const { run } = fakeRunner((argv) => states[argv[4] as string] as RunResult)
    const d = make(run)
    assert.equal(await d.isRunning('a'), true)
    assert.equal(await d.isRunning('b'), true)
    assert.equal(await d.isRunning('c'), false)
    assert.equal(await d.isRunning('ghost'), false)
    await assert.rejects(d.isRunning('e'), { name: 'HypervisorCommandFailedError' })
  })

  it('the fence action is destroy verified by domstate, runnable by the watchdog as plain data', async () => {
    const { run } = fakeRunner(() => ok())
    const d = new LibvirtDriver({ uri: 'qemu+ssh://h/system', virsh: '/usr/bin/virsh' }, { cwd: dir, stateDir: dir, clock: new ManualClock(), run })
    const a = JSON.parse(JSON.stringify(await d.fenceAction('web01')))
    assert.deepEqual(a.off.argv, ['/usr/bin/virsh', '-c', 'qemu+ssh://h/system', 'destroy', 'web01'])
    const r2 = fakeRunner((argv) => argv.includes('destroy') ? fail(1, 'x') : ok('crashed\n'))
    assert.equal(await executeFence(a, { run: r2.run, clock: new ManualClock() }), 'already-off')
  })
})
