/**
 * The DR keys of the config: node site and capacity (with the reserve), peers' sites, and per
 * VM memory, vCPUs, startAfter and its timeout — and the VM-spec announcement carrying them
 * (v2 only when used, so an older peer still learns the policies of VMs that do not use them).
 */
import assert from 'node:assert/strict'
import { normalizeConfig, parseConfigText } from '../../../config/load.ts'
import { ConfigInvalidError } from '../../../config/errors.ts'
import { homeVmSpec, wireVmSpec } from '../../../daemon/ownership/spec.ts'
import { decodeVmSpecs, encodeVmSpecs } from '../../../protocol/vmspec/codec.ts'

const ID = '12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA'
const text = (vms: string): string => `
node: { name: hv-a, site: east, capacity: { memoryMiB: 65536, vcpus: 32, reserveMemoryMiB: 4096 } }
mesh:
  peers:
    - { name: hv-b, id: ${ID}, addrs: ["/ip4/192.0.2.2/tcp/7400"], site: west }
vms:
${vms}`

describe('config: sites, capacity, demand and start order', () => {
  it('normalizes every key with its unit in the name', () => {
    const c = normalizeConfig(parseConfigText(text(`
  - { name: db, disks: [db.vhdx], replicateTo: [hv-b], priority: 10, memoryMiB: 8192, vcpus: 4 }
  - { name: app, disks: [app.vhdx], replicateTo: [hv-b], memoryMiB: 2048, startAfter: [db], startAfterTimeout: 45s }`), '/x/vmesh.yaml').raw, '/x/vmesh.yaml')
    assert.equal(c.node.site, 'east')
    assert.deepEqual(c.node.capacity, { memoryMiB: 65536, vcpus: 32, reserveMemoryMiB: 4096 })
    assert.equal(c.mesh.peers[0]?.site, 'west')
    const [db, app] = c.vms
    assert.equal(db?.memoryMiB, 8192)
    assert.equal(db?.vcpus, 4)
    assert.deepEqual(db?.startAfter, [])
    assert.equal(db?.startAfterTimeoutMs, 120_000)
    assert.deepEqual(app?.startAfter, ['db'])
    assert.equal(app?.startAfterTimeoutMs, 45_000)
    assert.deepEqual(homeVmSpec(app as NonNullable<typeof app>, 'hv-a'), { name: 'app', home: 'hv-a', replicateTo: ['hv-b'], failover: 'auto', startOrder: 0, priority: 0, memoryMiB: 2048, startAfter: ['db'], startAfterTimeoutMs: 45_000 })
  })

  it('refuses a VM that starts after itself, a name twice, and a negative memory', () => {
    for (const [vms, path] of [
      ['  - { name: db, disks: [db.vhdx], startAfter: [db] }', 'vms[0].startAfter[0]'],
      ['  - { name: db, disks: [db.vhdx], startAfter: [x, x] }', 'vms[0].startAfter'],
      ['  - { name: db, disks: [db.vhdx], memoryMiB: -1 }', 'vms[0].memoryMiB']
    ] as const) {
      assert.throws(() => parseConfigText(text(vms), '/x/vmesh.yaml'), (err: unknown) => err instanceof ConfigInvalidError && err.issues.some(i => i.path === path))
    }
  })

  it('VM specs travel as v1 unless a v2 field is used; v2 round-trips; a v1 node\'s message still decodes', () => {
    const plain = wireVmSpec({ name: 'web', home: 'hv-a', replicateTo: ['hv-b'] })
    const v1 = JSON.parse(new TextDecoder().decode(encodeVmSpecs({ v: 1, specs: [plain] })))
    assert.equal(v1.v, 1)
    const rich = wireVmSpec({ name: 'app', home: 'hv-a', replicateTo: ['hv-b'], memoryMiB: 2048, vcpus: 2, startAfter: ['db'], startAfterTimeoutMs: 5000 })
    const bytes = encodeVmSpecs({ v: 1, specs: [plain, rich] })
    const back = decodeVmSpecs(bytes)
    assert.equal(back.v, 2)
    assert.deepEqual(back.specs, [plain, rich])
    const oldNode = new TextEncoder().encode(JSON.stringify({ v: 1, specs: [plain] }))
    assert.deepEqual(decodeVmSpecs(oldNode).specs, [plain])
    // v2 fields in a message that says v1 are refused (a strict schema per version)
    assert.throws(() => decodeVmSpecs(new TextEncoder().encode(JSON.stringify({ v: 1, specs: [rich] }))), { name: 'VmSpecDecodeError' })
  })
})
