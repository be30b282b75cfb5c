import assert from 'node:assert/strict'
import { writeFile, chmod } from 'node:fs/promises'
import { join } from 'node:path'
import { loadConfig, parseConfigText, normalizeConfig } from '../../../config/load.ts'
import { createIdentity, createPsk } from '../../../config/identity.ts'
import { ConfigInvalidError } from '../../../config/errors.ts'
import { PROFILES } from '../../../config/profiles.ts'
import { parseRate, parseSize, parseDuration } from '../../../config/units.ts'
import { tempDir } from '../../helpers/tmp.ts'

const PEER_B = '12D3KooWF1XvGs24mitkz7ngPfJBh4nD9JV36xhTNdzw2Xmv4hyX'
const PEER_C = '12D3KooWAjUh2jAAU6qTR4p1gVLDUawMUnRuy6cWkAomL9meMrF2'

const base = (extra = ''): string => `
node:
  name: hv-a
  identity: identity.key
  listen: ["/ip4/127.0.0.1/tcp/7400"]
  dataDir: data
  api: "127.0.0.1:7401"
mesh:
  profile: lan
  peers:
    - name: hv-b
      id: ${PEER_B}
      addrs: ["/ip4/127.0.0.1/tcp/7500"]
    - name: witness-1
      id: ${PEER_C}
      addrs: ["/ip4/127.0.0.1/tcp/7600"]
      role: witness
${extra}`

function invalid (text: string): ConfigInvalidError {
  try { parseConfigText(text, '/x/vmesh.yaml') } catch (err) {
    assert.equal((err as Error).name, 'ConfigInvalidError')
    return err as ConfigInvalidError
  }
  assert.fail('expected ConfigInvalidError')
}

describe('config: schema and errors', () => {
  it('accepts the README example config shape and normalizes units', () => {
    const { raw } = parseConfigText(base(`
hypervisor:
  driver: command
  command: { start: "./start {vm} {epoch} {dir}", stop: "./stop {vm}", status: "./status {vm}" }
vms:
  - name: web01
    disks: ["/vms/web01/web01.vhdx"]
    files: ["/vms/web01/web01.vmcx"]
    replicateTo: [hv-b]
    failover: auto
    blockSize: 64KiB
bandwidth:
  limit: 100Mbit
  schedule:
    - { days: mon-fri, from: "08:00", to: "18:00", limit: 10Mbit }
`), '/x/vmesh.yaml')
    assert.equal(raw.bandwidth.limit, 12_500_000)
    assert.deepEqual(raw.bandwidth.schedule[0]?.days, [1, 2, 3, 4, 5])
    assert.equal(raw.bandwidth.schedule[0]?.fromMinute, 480)
    assert.equal(raw.vms[0]?.blockSize, 65536)
    assert.equal(raw.mesh.peers[1]?.role, 'witness')
  })

  it('reports an unknown key with its path and line', () => {
    const err = invalid(base().replace('  dataDir: data', '  dataDir: data\n  dataDri: oops'))
    const issue = err.issues.find(i => i.path === 'node.dataDri')
    assert.ok(issue, JSON.stringify(err.issues))
    assert.equal(issue.line, 7)
  })

  it('reports wrong types with the key path', () => {
    const err = invalid(base().replace('profile: lan', 'profile: fast'))
    assert.ok(err.issues.some(i => i.path === 'mesh.profile'))
    const err2 = invalid(base().replace('listen: ["/ip4/127.0.0.1/tcp/7400"]', 'listen: "nope"'))
    assert.ok(err2.issues.some(i => i.path.startsWith('node.listen')))
  })

  it('refuses duplicate names and duplicate peer IDs', () => {
    const dupName = invalid(base().replace('name: witness-1', 'name: hv-b'))
    assert.ok(dupName.issues.some(i => i.path === 'mesh.peers[1].name'))
    const dupSelf = invalid(base().replace('name: hv-b', 'name: hv-a'))
    assert.ok(dupSelf.issues.some(i => i.path === 'mesh.peers[0].name'))
    const dupId = invalid(base().replace(PEER_C, PEER_B))
    assert.ok(dupId.issues.some(i => i.path === 'mesh.peers[1].id'))
  })

  it('refuses invalid peer IDs, multiaddrs, API addresses', () => {
    assert.ok(invalid(base().replace(PEER_B, '12D3KooWnotreal')).issues.some(i => i.path === 'mesh.peers[0].id'))
    assert.ok(invalid(base().replace('/ip4/127.0.0.1/tcp/7500', '/ip4/999.0.0.1/tcp/7500')).issues.some(i => i.path === 'mesh.peers[0].addrs[0]'))
    assert.ok(invalid(base().replace('"127.0.0.1:7401"', '"localhost"')).issues.some(i => i.path === 'node.api'))
  })

  it('checks VM rules: replicateTo names a host peer, not self or a witness; unique paths', () => {
    const e1 = invalid(base('vms:\n  - { name: a, disks: ["/d/a.vhdx"], replicateTo: [hv-z] }'))
    assert.ok(e1.issues.some(i => i.path === 'vms[0].replicateTo[0]'))
    const e2 = invalid(base('vms:\n  - { name: a, disks: ["/d/a.vhdx"], replicateTo: [witness-1] }'))
    assert.ok(e2.issues.some(i => i.path === 'vms[0].replicateTo[0]'))
    const e3 = invalid(base('vms:\n  - { name: a, disks: ["/d/a.vhdx"] }\n  - { name: b, disks: ["/d/a.vhdx"] }'))
    assert.ok(e3.issues.some(i => i.path === 'vms[1].disks[0]'))
    const e4 = invalid(base('vms:\n  - { name: a, disks: ["/d/a.vhdx"], blockSize: 3000 }'))
    assert.ok(e4.issues.some(i => i.path === 'vms[0].blockSize'))
  })

  it('changeSource: auto by default, qmp resolved against the config folder, qemu-bitmap needs a socket or the qemu driver', () => {
    const ok = parseConfigText(base('vms:\n  - { name: a, disks: ["/d/a.vhdx"] }\n  - { name: b, disks: ["/d/b.vhdx"], changeSource: qemu-bitmap, qmp: run/b.qmp }'), '/x/vmesh.yaml')
    const c = normalizeConfig(ok.raw, '/x/vmesh.yaml')
    assert.equal(c.vms[0]?.changeSource, 'auto')
    assert.equal(c.vms[0]?.qmpPath, undefined)
    assert.equal(c.vms[1]?.changeSource, 'qemu-bitmap')
    assert.equal(c.vms[1]?.qmpPath, '/x/run/b.qmp')
    const e = invalid(base('vms:\n  - { name: a, disks: ["/d/a.vhdx"], changeSource: qemu-bitmap }'))
    assert.ok(e.issues.some(i => i.path === 'vms[0].changeSource'))
    assert.ok(invalid(base('vms:\n  - { name: a, disks: ["/d/a.vhdx"], changeSource: rct }')).issues.some(i => i.path === 'vms[0].changeSource'))
    assert.doesNotThrow(() => parseConfigText(base('hypervisor: { driver: qemu }\nvms:\n  - { name: a, disks: ["/d/a.vhdx"], changeSource: qemu-bitmap }'), '/x/vmesh.yaml'))
    assert.doesNotThrow(() => parseConfigText(base('hypervisor: { driver: hyperv }\nvms:\n  - { name: a, disks: ["/d/a.vhdx"], changeSource: rct }'), '/x/vmesh.yaml'))
  })

  it('captureGap and pointCopyBudget: by source unless set, units normalized, bad values refused', () => {
    const ok = parseConfigText(base('vms:\n  - { name: a, disks: ["/d/a.vhdx"] }\n  - { name: b, disks: ["/d/b.vhdx"], captureGap: 2s, pointCopyBudget: 0 }\n  - { name: c, disks: ["/d/c.vhdx"], pointCopyBudget: 4MiB }'), '/x/vmesh.yaml')
    const c = normalizeConfig(ok.raw, '/x/vmesh.yaml')
    assert.equal(c.vms[0]?.captureGapMs, undefined)
    assert.equal(c.vms[0]?.pointCopyBudgetBytes, 16 * 1024 * 1024)
    assert.equal(c.vms[1]?.captureGapMs, 2000)
    assert.equal(c.vms[1]?.pointCopyBudgetBytes, 0)
    assert.equal(c.vms[2]?.pointCopyBudgetBytes, 4 * 1024 * 1024)
    assert.ok(invalid(base('vms:\n  - { name: a, disks: ["/d/a.vhdx"], captureGap: soon }')).issues.some(i => i.path === 'vms[0].captureGap'))
    assert.ok(invalid(base('vms:\n  - { name: a, disks: ["/d/a.vhdx"], pointCopyBudget: -1 }')).issues.some(i => i.path === 'vms[0].pointCopyBudget'))
  })

  it('refuses a YAML syntax error with a typed error and line', () => {
    assert.throws(() => parseConfigText('node:\n  name: [unclosed\n', '/x/v.yaml'), (err: Error) => err.name === 'ConfigParseError')
  })

  it('applies profiles and per-key overrides', async () => {
    const { dir, cleanup } = await tempDir()
    try {
      await createIdentity(join(dir, 'identity.key'))
      await writeFile(join(dir, 'vmesh.yaml'), base('').replace('profile: lan', 'profile: wan\n  detector: { probeIntervalMs: 1500 }'))
      const { config, secrets } = await loadConfig(join(dir, 'vmesh.yaml'))
      assert.equal(config.mesh.detector.probeIntervalMs, 1500)
      assert.equal(config.mesh.detector.suspicionMaxMs, PROFILES.wan.detector.suspicionMaxMs)
      assert.equal(config.node.dataDir, join(dir, 'data'))
      assert.ok(Object.isFrozen(config) && Object.isFrozen(config.mesh.peers[0]))
      assert.ok(secrets.peerId.toString().startsWith('12D3KooW'))
    } finally { await cleanup() }
  })

  it('refuses inconsistent timing overrides', () => {
    const err = invalid(base('ownership: { fenceMs: 6000 }'))
    assert.ok(err.issues.some(i => i.path === 'ownership.fenceMs'), err.message)
    const ok = parseConfigText(base(''), '/x/vmesh.yaml')
    assert.doesNotThrow(() => normalizeConfig(ok.raw, '/x/vmesh.yaml'))
  })
})

describe('config: key files', () => {
  it('missing identity, wrong permissions and bad PSK are typed errors naming the key', async () => {
    const { dir, cleanup } = await tempDir()
    try {
      const file = join(dir, 'vmesh.yaml')
      await writeFile(file, base())
      await assert.rejects(loadConfig(file), (err: Error & { key?: string }) => err.name === 'ConfigKeyFileError' && err.key === 'node.identity')
      await createIdentity(join(dir, 'identity.key'))
      await chmod(join(dir, 'identity.key'), 0o644)
      await assert.rejects(loadConfig(file), (err: Error) => err.name === 'ConfigKeyFileError')
      await chmod(join(dir, 'identity.key'), 0o600)
      await writeFile(file, base().replace('profile: lan', 'profile: lan\n  psk: mesh.psk'))
      await writeFile(join(dir, 'mesh.psk'), 'garbage', { mode: 0o600 })
      await assert.rejects(loadConfig(file), (err: Error & { key?: string }) => err.name === 'ConfigKeyFileError' && err.key === 'mesh.psk')
      await writeFile(join(dir, 'vmesh.yaml'), base().replace('profile: lan', 'profile: lan\n  psk: mesh2.psk'))
      await createPsk(join(dir, 'mesh2.psk'))
      const { secrets } = await loadConfig(file)
      assert.ok(secrets.psk !== undefined && Buffer.from(secrets.psk).toString().startsWith('/key/swarm/psk/1.0.0/'))
    } finally { await cleanup() }
  })

  it('a missing config file is ConfigNotFoundError', async () => {
    await assert.rejects(loadConfig('/nonexistent/vmesh.yaml'), (err: Error) => err.name === 'ConfigNotFoundError')
  })
})

describe('config: units', () => {
  it('parses rates, sizes and durations', () => {
    assert.equal(parseRate('100Mbit'), 12_500_000)
    assert.equal(parseRate('10MB'), 10_000_000)
    assert.equal(parseRate('unlimited'), Infinity)
    assert.equal(parseRate('fast'), undefined)
    assert.equal(parseSize('64KiB'), 65536)
    assert.equal(parseSize('4MiB'), 4194304)
    assert.equal(parseSize('x'), undefined)
    assert.equal(parseDuration('30s'), 30000)
    assert.equal(parseDuration('2h'), 7_200_000)
    assert.equal(parseDuration(250), 250)
  })
})

describe('config: Windows paths in YAML', () => {
  it('a double-quoted Windows path whose \\v became a control character is refused, naming the key and line', () => {
    // every escape here is valid YAML, so nothing fails to parse: the path is silently changed
    const text = base('vms:\n  - name: web01\n    disks: ["C:\\vms\\new\\file.vhdx"]\n    replicateTo: [hv-b]')
    assert.throws(() => parseConfigText(text, '/x/vmesh.yaml'), (err: ConfigInvalidError) => {
      assert.equal(err.name, 'ConfigInvalidError')
      assert.equal(err.issues[0]?.path, 'vms[0].disks[0]')
      assert.match(err.issues[0]?.message ?? '', /U\+000B.*single quotes/)
      assert.equal(typeof err.issues[0]?.line, 'number')
      return true
    })
    // "C:\temp\a.vhdx": a tab, in a Windows path
    assert.throws(() => parseConfigText(base('vms:\n  - name: web01\n    disks: ["C:\\temp\\a.vhdx"]\n    replicateTo: [hv-b]'), '/x/vmesh.yaml'), { name: 'ConfigInvalidError' })
  })

  it('the same paths in single quotes, or with forward slashes, load as written', () => {
    const { raw } = parseConfigText(base("vms:\n  - name: web01\n    disks: ['C:\\vms\\web01.vhdx', \"C:/vms/data.vhdx\"]\n    replicateTo: [hv-b]"), '/x/vmesh.yaml')
    assert.deepEqual(raw.vms[0]?.disks, ['C:\\vms\\web01.vhdx', 'C:/vms/data.vhdx'])
  })
})
