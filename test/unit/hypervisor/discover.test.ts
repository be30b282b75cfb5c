import assert from 'node:assert/strict'
import { readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { discover, protectVm } from '../../../daemon/hypervisor/discover.ts'
import { parseConfigText } from '../../../config/load.ts'
import type { HypervisorDriver, VmInventory } from '../../../daemon/hypervisor/driver.ts'
import { tempDir } from '../../helpers/tmp.ts'

const PEER = '12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq'
const CONFIG = `# vmesh configuration for hv-a
node:
  name: hv-a                       # unique in the mesh
  listen: ["/ip4/0.0.0.0/tcp/7400"]
mesh:
  peers:
    # the other host
    - name: hv-b
      id: ${PEER}
      addrs: ["/ip4/192.0.2.12/tcp/7400"]
vms: []
# bandwidth:
#   limit: 100Mbit
`

const INVENTORY: VmInventory[] = [
  { name: 'web01', disks: ['/vms/web01/web01.vhdx'], files: ['/vms/web01/web01.vmcx'], state: 'running' },
  { name: 'db01', disks: ['/vms/db01.vhdx'], files: [], state: 'off' },
  { name: 'bad name!', disks: ['/vms/x.vhdx'], files: [], state: 'off' },
  { name: 'SQL 2019 (prod)', disks: ['D:\\vms\\sql.avhdx', 'D:\\vms\\sql.vhdx'], files: ['D:\\vms\\sql.vmcx'], state: 'off' },
  { name: 'trailing ', disks: ['/vms/t.vhdx'], files: [], state: 'off' }
]

function fakeDriver (vms: VmInventory[]): HypervisorDriver {
  return {
    kind: 'command',
    list: async () => vms,
    start: async () => {},
    turnOff: async () => {},
    isRunning: async () => false,
    fenceAction: async () => ({ kind: 'command', off: { kind: 'shell', command: 'true' }, timeoutMs: 1 })
  }
}

describe('hypervisor/discover', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let file: string
  beforeEach(async () => { ({ dir, cleanup } = await tempDir('vmesh-discover-')); file = join(dir, 'vmesh.yaml'); await writeFile(file, CONFIG, { mode: 0o640 }) })
  afterEach(async () => { await cleanup() })

  it('discover sorts by name and marks the VMs the config already protects', async () => {
    const out = await discover(fakeDriver(INVENTORY), { protectedNames: ['db01'] })
    assert.deepEqual(out.map(v => [v.name, v.protected]), [['SQL 2019 (prod)', false], ['bad name!', false], ['db01', true], ['trailing ', false], ['web01', false]])
    assert.deepEqual(out.find(v => v.name === 'web01')?.disks, ['/vms/web01/web01.vhdx'])
  })

  it('protectVm appends a vms entry, keeps comments and mode, and the result validates', async () => {
    const r = await protectVm(file, 'web01', INVENTORY, ['hv-b'])
    assert.deepEqual(r.vm, { name: 'web01', disks: ['/vms/web01/web01.vhdx'], files: ['/vms/web01/web01.vmcx'], replicateTo: ['hv-b'] })
    const text = await readFile(file, 'utf8')
    for (const c of ['# vmesh configuration for hv-a', '# unique in the mesh', '# the other host', '#   limit: 100Mbit']) assert.ok(text.includes(c), c)
    const { raw } = parseConfigText(text, file)
    assert.deepEqual(raw.vms.map(v => [v.name, v.disks, v.files, v.replicateTo]), [['web01', ['/vms/web01/web01.vhdx'], ['/vms/web01/web01.vmcx'], ['hv-b']]])
    assert.equal((await stat(file)).mode & 0o777, 0o640)
    await protectVm(file, 'db01', INVENTORY, ['hv-b'])
    assert.deepEqual(parseConfigText(await readFile(file, 'utf8'), file).raw.vms.map(v => v.name), ['web01', 'db01'])
  })

  it('refuses, leaving the file untouched: unknown VM, already protected, unknown peer, a name the schema refuses', async () => {
    await protectVm(file, 'web01', INVENTORY, ['hv-b'])
    const before = await readFile(file, 'utf8')
    await assert.rejects(protectVm(file, 'ghost', INVENTORY, ['hv-b']), { name: 'VmNotFoundError' })
    await assert.rejects(protectVm(file, 'web01', INVENTORY, ['hv-b']), { name: 'VmAlreadyProtectedError', code: 'ERR_VM_ALREADY_PROTECTED' })
    await assert.rejects(protectVm(file, 'db01', INVENTORY, ['hv-z']), { name: 'ConfigInvalidError', code: 'ERR_CONFIG_INVALID' })
    await assert.rejects(protectVm(file, 'bad name!', INVENTORY, ['hv-b']), { name: 'ConfigInvalidError' })
    await assert.rejects(protectVm(join(dir, 'missing.yaml'), 'db01', INVENTORY, ['hv-b']), { name: 'ConfigNotFoundError' })
    assert.equal(await readFile(file, 'utf8'), before)
  })

  it('names with spaces and parentheses are protected (whole disk chain); the driver turns automatic start off first', async () => {
    const told: string[] = []
    const r = await protectVm(file, 'SQL 2019 (prod)', INVENTORY, ['hv-b'], { driver: { preventAutoStart: async (vm) => { told.push(vm) } } })
    assert.deepEqual(told, ['SQL 2019 (prod)'])
    assert.deepEqual(r.vm.disks, ['D:\\vms\\sql.avhdx', 'D:\\vms\\sql.vhdx'])
    assert.deepEqual(parseConfigText(await readFile(file, 'utf8'), file).raw.vms.map(v => v.name), ['SQL 2019 (prod)'])
    const before = await readFile(file, 'utf8')
    await assert.rejects(protectVm(file, 'trailing ', INVENTORY, ['hv-b']), { name: 'ConfigInvalidError' }, 'a trailing space: Windows drops it from folder names')
    await assert.rejects(protectVm(file, 'db01', INVENTORY, ['hv-b'], { driver: { preventAutoStart: async () => { throw new Error('Set-VM: access denied') } } }), /access denied/)
    assert.equal(await readFile(file, 'utf8'), before, 'a failed Set-VM leaves the config untouched')
  })

  it('creates vms: when the config has none', async () => {
    await writeFile(file, CONFIG.replace('vms: []\n', ''))
    await protectVm(file, 'db01', INVENTORY, [])
    assert.deepEqual(parseConfigText(await readFile(file, 'utf8'), file).raw.vms.map(v => v.name), ['db01'])
  })
})
