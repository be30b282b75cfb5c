/**
 * What a host holds, as each hypervisor tells it: /proc/meminfo, `virsh nodeinfo`, Hyper-V
 * `Get-VMHost` through the driver's PowerShell session (recorded output), and how the daemon
 * combines it with `node.capacity` and the reserve.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { writeFile } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import { localHostResources, parseMeminfo, parseNodeinfo, parseVmHost } from '../../../daemon/hypervisor/capacity.ts'
import { HypervDriver } from '../../../daemon/hypervisor/hyperv.ts'
import { LibvirtDriver } from '../../../daemon/hypervisor/libvirt.ts'
import { resolveCapacity } from '../../../daemon/ownership/capacity.ts'
import type { HypervisorDriver } from '../../../daemon/hypervisor/driver.ts'
import { ManualClock } from '../../../common/clock.ts'
import { silentLogger } from '../../../daemon/log.ts'
import { tempDir } from '../../helpers/tmp.ts'
import { fakeRunner, fakeTransport, fixture, ok, psOk } from './fake-runner.ts'

const quiet = silentLogger()

describe('hypervisor/capacity', () => {
  it('/proc/meminfo: MemTotal in KiB to MiB; no MemTotal is a typed error', async () => {
    assert.equal(parseMeminfo('MemTotal:       16318480 kB\nMemFree:         1000 kB\n'), 15936)
    assert.throws(() => parseMeminfo('MemFree: 1 kB\n'), { name: 'HypervisorOutputError' })
    const { dir, cleanup } = await tempDir('vmesh-cap-')
    try {
      await writeFile(join(dir, 'meminfo'), 'MemTotal:        8388608 kB\n')
      assert.deepEqual(await localHostResources(join(dir, 'meminfo')), { memoryMiB: 8192, vcpus: availableParallelism() })
    } finally { await cleanup() }
  })

  it('virsh nodeinfo (recorded) through the libvirt driver', async () => {
    const { run, calls } = fakeRunner(() => ok(fixture('libvirt/nodeinfo.txt')))
    const d = new LibvirtDriver({}, { cwd: '/tmp', stateDir: '/tmp/nonexistent', clock: new ManualClock(), run })
    assert.deepEqual(await d.hostResources(), { memoryMiB: 64206, vcpus: 16 })
    assert.deepEqual(calls[0]?.argv, ['virsh', '-c', 'qemu:///system', 'nodeinfo'])
    assert.throws(() => parseNodeinfo('CPU(s): 4\n'), { name: 'HypervisorOutputError' })
  })

  it('Hyper-V Get-VMHost (recorded) through the PowerShell session', async () => {
    const { transport, scripts } = fakeTransport(() => psOk(fixture('hyperv/vmhost.json')))
    const d = new HypervDriver({}, { cwd: '/tmp', stateDir: '/tmp/nonexistent', clock: new ManualClock(), run: fakeRunner(() => { throw new Error('no process') }).run }, transport)
    assert.deepEqual(await d.hostResources(), { memoryMiB: 131072, vcpus: 24 })
    assert.match(scripts[0] as string, /^# vmesh-op: host/)
    assert.match(scripts[0] as string, /Get-VMHost \| Select-Object LogicalProcessorCount, MemoryCapacity \| ConvertTo-Json -Compress/)
    assert.throws(() => parseVmHost('{"LogicalProcessorCount":"x"}'), { name: 'HypervisorOutputError' })
    assert.throws(() => parseVmHost('{"LogicalProcessorCount":0,"MemoryCapacity":1073741824}'), { name: 'HypervisorOutputError' })
    assert.throws(() => parseVmHost('not json'), { name: 'HypervisorOutputError' })
  })

  it('resolveCapacity: config wins per dimension, the driver fills the rest, the reserve comes off', async () => {
    const told = { kind: 'command', hostResources: async () => ({ memoryMiB: 32768, vcpus: 16 }) } as unknown as HypervisorDriver
    assert.deepEqual(await resolveCapacity({ memoryMiB: 8192, vcpus: 4, reserveMemoryMiB: 1024 }, told, quiet), { memoryMiB: 7168, vcpus: 4 })
    assert.deepEqual(await resolveCapacity({ reserveMemoryMiB: 2048 }, told, quiet), { memoryMiB: 30720, vcpus: 16 })
    assert.deepEqual(await resolveCapacity(undefined, told, quiet), { memoryMiB: 32768, vcpus: 16 })
    assert.deepEqual(await resolveCapacity({ vcpus: 8, reserveMemoryMiB: 0 }, told, quiet), { memoryMiB: 32768, vcpus: 8 })
    const broken = { kind: 'command', hostResources: async () => { throw new Error('no') } } as unknown as HypervisorDriver
    assert.equal(await resolveCapacity(undefined, broken, quiet), null)
    assert.deepEqual(await resolveCapacity({ memoryMiB: 4096, reserveMemoryMiB: 0 }, broken, quiet), { memoryMiB: 4096, vcpus: Infinity })
    assert.equal(await resolveCapacity(undefined, undefined, quiet), null)
  })
})
