import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { fillTemplate, placeholdersIn, psQuote, shQuote } from '../../../daemon/hypervisor/quote.ts'

const NASTY = ["plain", "with space", "it's", "a'b'c", '$HOME', '`id`', '$(id)', 'semi;colon', 'new\nline', 'back\\slash', '"dq"', '*?[glob]', '-dash', '', 'ünïcødé ✓', "'", "''"]

describe('hypervisor/quote', () => {
  it('shQuote: /bin/sh hands every value back byte for byte', function () {
    for (const s of NASTY) {
      const r = spawnSync('/bin/sh', ['-c', `printf '%s' ${shQuote(s)}`], { encoding: 'utf8' })
      assert.equal(r.status, 0)
      assert.equal(r.stdout, s, `value ${JSON.stringify(s)}`)
    }
  })

  it('shQuote refuses NUL', () => {
    assert.throws(() => shQuote('a\0b'), { code: 'ERR_HYPERVISOR_CONFIG' })
  })

  it('psQuote doubles single quotes, including the typographic ones PowerShell also accepts', () => {
    assert.equal(psQuote("it's"), "'it''s'")
    assert.equal(psQuote('a\u2019b'), "'a\u2019\u2019b'")
    assert.equal(psQuote('$(Stop-Computer)'), "'$(Stop-Computer)'")
    assert.equal(psQuote(''), "''")
  })

  it('fillTemplate quotes each value and joins files with spaces', () => {
    const out = fillTemplate('./start {vm} {epoch} {dir} {files}', { vm: "web'01", epoch: 7, dir: '/r/web 01', files: ['/a b.vhdx', "/c'd"] })
    assert.equal(out, "./start 'web'\\''01' '7' '/r/web 01' '/a b.vhdx' '/c'\\''d'")
    const r = spawnSync('/bin/sh', ['-c', `printf '[%s]' ${fillTemplate('{vm} {files}', { vm: 'x y', files: ['1 2', '3'] })}`], { encoding: 'utf8' })
    assert.equal(r.stdout, '[x y][1 2][3]')
  })

  it('fillTemplate leaves other braces alone and refuses placeholders it has no value for', () => {
    assert.equal(fillTemplate("awk '{print $1}' ${HOME} {vm}", { vm: 'a' }), "awk '{print $1}' ${HOME} 'a'")
    assert.throws(() => fillTemplate('stop {dir}', { vm: 'a' }), { code: 'ERR_HYPERVISOR_CONFIG' })
    assert.deepEqual([...placeholdersIn('{vm} {epoch} {x} {files}')].sort(), ['epoch', 'files', 'vm'])
  })
})
