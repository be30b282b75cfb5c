import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { aclProblem, icaclsProtectArgs, parseIcacls, secretFileProblem, protectSecretFile, type IcaclsRunner } from '../../../common/platform/index.ts'

const FIX = fileURLToPath(new URL('../../fixtures/icacls/', import.meta.url))
// listings in the format icacls prints on Windows Server 2019/2022 (CRLF, English group names)
const fixture = (name: string): string => readFileSync(FIX + name, 'utf8')

describe('platform: icacls listings', () => {
  it('parses a protected file: SYSTEM, Administrators and the owner, nothing inherited', () => {
    const e = parseIcacls(fixture('protected.txt'), 'C:\\ProgramData\\vmesh\\identity.key')
    assert.deepEqual(e.map(x => [x.principal, x.tokens]), [['NT AUTHORITY\\SYSTEM', ['F']], ['BUILTIN\\Administrators', ['F']], ['HV-A\\vmadmin', ['F']]])
    assert.equal(aclProblem(e, 'HV-A\\vmadmin'), null)
  })

  it('a fresh file under ProgramData inherits BUILTIN\\Users read: refused, naming who', () => {
    const e = parseIcacls(fixture('inherited-default.txt'), 'C:\\ProgramData\\vmesh\\identity.key')
    assert.equal(e.length, 5)
    assert.ok(e.every(x => x.inherited))
    const p = aclProblem(e, 'HV-A\\vmadmin')
    assert.match(p ?? '', /BUILTIN\\Users/)
    assert.match(p ?? '', /CREATOR OWNER/)
  })

  it('deny entries are fine; Authenticated Users read is not', () => {
    const e = parseIcacls(fixture('authenticated-users.txt'), 'C:\\vms\\keys\\mesh.psk')
    const deny = e.find(x => x.principal === 'Everyone')
    assert.equal(deny?.deny, true)
    assert.match(aclProblem(e, 'HV-A\\vmadmin') ?? '', /^ACL grants access to NT AUTHORITY\\Authenticated Users;/)
    assert.equal(aclProblem(e.filter(x => x.principal !== 'NT AUTHORITY\\Authenticated Users'), 'HV-A\\vmadmin'), null)
  })

  it('another user is refused even with the same user name on another domain', () => {
    const e = parseIcacls('C:\\k SYSTEM:(F)\r\n    OTHER\\bob:(R)\r\n', 'C:\\k')
    assert.match(aclProblem(e, 'HV-A\\alice') ?? '', /OTHER\\bob/)
    assert.equal(aclProblem(e.slice(0, 1), 'HV-A\\alice'), null)
  })

  it('output without the file (access denied, a stub icacls) is an ERR_ACL, never "fine"', () => {
    assert.throws(() => parseIcacls(fixture('denied.txt'), 'C:\\vmesh\\api.token'), { name: 'AclError', code: 'ERR_ACL' })
    assert.throws(() => parseIcacls('', 'C:\\vmesh\\api.token'), { code: 'ERR_ACL' })
    assert.throws(() => parseIcacls('C:\\k garbage\r\n', 'C:\\k'), { code: 'ERR_ACL' })
  })
})

describe('platform: secret files on win32 (icacls injected)', () => {
  it('protect runs icacls with inheritance removed and owner/SYSTEM/Administrators granted', async () => {
    const calls: string[][] = []
    const run: IcaclsRunner = async (args) => { calls.push(args); return { code: 0, stdout: 'processed file: C:\\k\r\nSuccessfully processed 1 files', stderr: '' } }
    await protectSecretFile('C:\\k', { os: 'win32', icacls: run, owner: 'HV-A\\vmadmin' })
    assert.deepEqual(calls, [icaclsProtectArgs('C:\\k', 'HV-A\\vmadmin')])
    assert.deepEqual(calls[0], ['C:\\k', '/inheritance:r', '/grant:r', '*S-1-5-18:(F)', '*S-1-5-32-544:(F)', 'HV-A\\vmadmin:(F)'])
    await protectSecretFile('/k', { os: 'linux', icacls: async () => { throw new Error('no icacls on linux') } })
  })

  it('the check reads the ACL, not the mode bits (Windows stats every file 0666)', async () => {
    const ok = await secretFileProblem('C:\\ProgramData\\vmesh\\identity.key', { os: 'win32', mode: 0o100666, owner: 'HV-A\\vmadmin', icacls: async () => ({ code: 0, stdout: fixture('protected.txt'), stderr: '' }) })
    assert.equal(ok, null)
    const bad = await secretFileProblem('C:\\ProgramData\\vmesh\\identity.key', { os: 'win32', mode: 0o100600, owner: 'HV-A\\vmadmin', icacls: async () => ({ code: 0, stdout: fixture('inherited-default.txt'), stderr: '' }) })
    assert.match(bad ?? '', /BUILTIN\\Users.*run: icacls "C:\\ProgramData\\vmesh\\identity.key" \/inheritance:r/)
    await assert.rejects(secretFileProblem('C:\\vmesh\\api.token', { os: 'win32', owner: 'x', icacls: async () => ({ code: 5, stdout: fixture('denied.txt'), stderr: 'Access is denied.' }) }), { code: 'ERR_ACL' })
  })

  it('linux keeps the mode check', async () => {
    assert.equal(await secretFileProblem('/k', { os: 'linux', mode: 0o100600 }), null)
    assert.equal(await secretFileProblem('/k', { os: 'linux', mode: 0o100644 }), 'permissions 644 are too open; run chmod 600')
  })
})
