import assert from 'node:assert/strict'
import { createDriver } from '../../../daemon/hypervisor/index.ts'
import { ManualClock } from '../../../common/clock.ts'
import { fakeRunner, ok } from './fake-runner.ts'

describe('hypervisor/createDriver', () => {
  const o = { cwd: '/etc/vmesh', stateDir: '/tmp/vmesh-state-unused', clock: new ManualClock(), run: fakeRunner(() => ok()).run }

  it('builds the driver the config names, with defaults for a missing section', () => {
    assert.equal(createDriver({ driver: 'none' }, o), undefined)
    assert.equal(createDriver({ driver: 'command', command: { start: 'a', stop: 'b', status: 'c', timeout: 1000 } }, o)?.kind, 'command')
    assert.equal(createDriver({ driver: 'qemu' }, o)?.kind, 'qemu')
    assert.equal(createDriver({ driver: 'libvirt', libvirt: { uri: 'qemu:///session', virsh: 'virsh' } }, o)?.kind, 'libvirt')
    assert.equal(createDriver({ driver: 'hyperv' }, o)?.kind, 'hyperv')
  })

  it('refuses the command driver without its commands', () => {
    assert.throws(() => createDriver({ driver: 'command' }, o), { name: 'HypervisorConfigError' })
  })
})
