import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { loadConfig, parseConfigText, normalizeConfig } from '../../../config/load.ts'
import { createIdentity } from '../../../config/identity.ts'
import type { ConfigInvalidError } from '../../../config/errors.ts'
import { tempDir } from '../../helpers/tmp.ts'

const base = (extra = ''): string => `
node:
  name: hv-a
  identity: identity.key
vms:
  - name: web01
    disks: ["/vms/web01.vhdx"]
    rpo: 2m
  - name: db01
    disks: ["/vms/db01.vhdx"]
${extra}`

const SINKS = `
alerts:
  stalledAfter: 2m
  sinks:
    - { type: webhook, name: hook, url: "https://hooks.example.org/x", secretFile: hook.secret, retryMin: 500ms, retryMax: 1m, timeout: 5s, queue: 50 }
    - { type: email, name: mail, host: smtp.example.org, from: "vmesh@example.org", to: ["ops@example.org"], user: vmesh, passwordFile: smtp.password, caFile: ca.pem }
`

function issues (text: string): string[] {
  try { parseConfigText(text, '/x/vmesh.yaml') } catch (err) {
    assert.equal((err as Error).name, 'ConfigInvalidError')
    return (err as ConfigInvalidError).issues.map(i => `${i.path}: ${i.message}`)
  }
  return assert.fail('expected ConfigInvalidError')
}

describe('config: alerts and the per-VM rpo', () => {
  it('rpo per VM (default 60 s), sinks with units in their names and paths made absolute', () => {
    const { raw } = parseConfigText(base(SINKS), '/x/vmesh.yaml')
    const c = normalizeConfig(raw, '/x/vmesh.yaml')
    assert.deepEqual(c.vms.map(v => v.rpoMs), [120_000, 60_000])
    assert.equal(c.alerts.stalledAfterMs, 120_000)
    assert.equal(c.alerts.clearAfterMs, 10_000)
    assert.deepEqual(c.alerts.sinks[0], { type: 'webhook', name: 'hook', url: 'https://hooks.example.org/x', secretFile: '/x/hook.secret', queueMax: 50, retryMinMs: 500, retryMaxMs: 60_000, timeoutMs: 5000 })
    const mail = c.alerts.sinks[1]
    assert.ok(mail?.type === 'email')
    assert.equal(mail.port, 587)
    assert.equal(mail.starttls, true)
    assert.equal(mail.passwordFile, '/x/smtp.password')
    assert.equal(mail.caFile, '/x/ca.pem')
  })

  it('no alerts key: no sinks, the defaults', () => {
    const c = normalizeConfig(parseConfigText(base(), '/x/vmesh.yaml').raw, '/x/vmesh.yaml')
    assert.deepEqual(c.alerts, { sinks: [], diskLowPercent: 10, diskFullPercent: 2, stalledAfterMs: 300_000, clearAfterMs: 10_000, evaluateIntervalMs: 1000 })
  })

  it('bad sinks are named with their key paths', () => {
    const has = (got: string[], re: RegExp): void => { assert.ok(got.some(i => re.test(i)), `${re} not in\n${got.join('\n')}`) }
    const shape = issues(base(`
alerts:
  sinks:
    - { type: webhook, name: a, url: "ftp://x/" }
    - { type: email, name: m, host: h, from: "not-an-address", to: [] }
    - { type: sms, name: s }
    - { type: webhook, name: w, url: "http://x/", secret: inline }
`))
    has(shape, /^alerts\.sinks\[0\]\.url: must be an http/)
    has(shape, /^alerts\.sinks\[1\]\.from/)
    has(shape, /^alerts\.sinks\[1\]\.to/)
    has(shape, /^alerts\.sinks\[2\]/)
    has(shape, /^alerts\.sinks\[3\]\.secret: unknown key/)
    // the cross-field rules (checked once the shapes are right)
    const cross = issues(base(`
alerts:
  diskLowPercent: 1
  diskFullPercent: 5
  sinks:
    - { type: webhook, name: a, url: "http://x/" }
    - { type: webhook, name: a, url: "http://x/", retryMin: 1m, retryMax: 1s }
    - { type: email, name: m, host: h, from: "v@example.org", to: ["o@example.org"], user: u }
`))
    has(cross, /^alerts\.sinks\[1\]\.name: duplicate sink name "a"/)
    has(cross, /^alerts\.sinks\[1\]\.retryMin: must not exceed retryMax/)
    has(cross, /^alerts\.sinks\[2\]\.user: user and passwordFile go together/)
    has(cross, /^alerts\.diskFullPercent: must not exceed/)
  })

  it('secret files are read at load, like the key files: a missing or too-open one is a config error', async () => {
    const { dir, cleanup } = await tempDir()
    try {
      await createIdentity(join(dir, 'identity.key'))
      const file = join(dir, 'vmesh.yaml')
      await writeFile(file, base(SINKS).replace('caFile: ca.pem', ''))
      await assert.rejects(loadConfig(file), (err: Error & { key?: string }) => err.name === 'ConfigKeyFileError' && err.key === 'alerts.sinks[0].secretFile')
      await writeFile(join(dir, 'hook.secret'), 's3cret\n', { mode: 0o644 })
      await assert.rejects(loadConfig(file), (err: Error & { key?: string }) => err.name === 'ConfigKeyFileError' && err.key === 'alerts.sinks[0].secretFile')
      await writeFile(join(dir, 'hook.secret'), 's3cret\n', { mode: 0o600 })
      const { chmod } = await import('node:fs/promises')
      await chmod(join(dir, 'hook.secret'), 0o600)
      await writeFile(join(dir, 'smtp.password'), 'pw', { mode: 0o600 })
      const loaded = await loadConfig(file)
      assert.deepEqual(loaded.secrets.alerts, { hook: 's3cret', mail: 'pw' })
    } finally { await cleanup() }
  })
})
