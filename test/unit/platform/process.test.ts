import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { cmdQuote, handoverMechanism, hostOs, independentChildOptions, processAlive, reloadSignal, shellInvocation, stopSignals } from '../../../common/platform/index.ts'

function errno (code: string): NodeJS.ErrnoException { return Object.assign(new Error(code), { code }) }

describe('platform: process control', () => {
  it('processAlive: ESRCH gone, EPERM alive; a Linux zombie counts as gone; no /proc on win32', () => {
    assert.equal(processAlive(7, { os: 'win32', kill: () => { throw errno('ESRCH') } }), false)
    assert.equal(processAlive(7, { os: 'win32', kill: () => { throw errno('EPERM') } }), true)
    assert.equal(processAlive(7, { os: 'win32', kill: () => {}, procStat: () => { throw new Error('no /proc on windows') } }), true)
    assert.equal(processAlive(7, { os: 'linux', kill: () => {}, procStat: () => '7 (node) Z 1 7' }), false)
    assert.equal(processAlive(7, { os: 'linux', kill: () => {}, procStat: () => '7 (node) S 1 7' }), true)
    assert.equal(processAlive(process.pid, { os: hostOs }), true)
  })

  it('the watchdog is detached on every system (win32: out of the job object that dies with the daemon)', () => {
    assert.deepEqual(independentChildOptions('win32'), { detached: true, windowsHide: true })
    assert.deepEqual(independentChildOptions('linux'), { detached: true, windowsHide: true })
  })

  it('signals: no SIGTERM or reload signal on win32; SIGUSR2 handover only on POSIX', () => {
    assert.deepEqual(stopSignals('linux'), ['SIGTERM', 'SIGINT'])
    assert.ok(!stopSignals('win32').includes('SIGTERM'))
    assert.equal(reloadSignal('linux'), 'SIGHUP')
    assert.equal(reloadSignal('win32'), undefined)
    assert.equal(handoverMechanism('linux'), 'signal')
    assert.equal(handoverMechanism('win32'), 'file')
  })
})

describe('platform: shell for command templates', () => {
  it('POSIX: /bin/sh -c; win32: cmd.exe /d /s /c "..." passed verbatim', () => {
    assert.deepEqual(shellInvocation('./stop.sh \'a\'', 'linux'), { argv: ['/bin/sh', '-c', './stop.sh \'a\''], windowsVerbatimArguments: false })
    assert.deepEqual(shellInvocation('stop.cmd "web 01"', 'win32'), { argv: ['cmd.exe', '/d', '/s', '/c', '"stop.cmd "web 01""'], windowsVerbatimArguments: true })
  })

  it('cmdQuote: double quotes; refuses what cmd cannot take literally; doubles a trailing backslash run', () => {
    assert.equal(cmdQuote('web 01'), '"web 01"')
    assert.equal(cmdQuote('C:\\vms\\a & b (x)^'), '"C:\\vms\\a & b (x)^"')
    assert.equal(cmdQuote('C:\\vms\\'), '"C:\\vms\\\\"')
    for (const bad of ['a"b', '%PATH%', 'a\nb', 'a\rb', 'a\0b']) assert.throws(() => cmdQuote(bad), { name: 'ShellQuoteError', code: 'ERR_SHELL_QUOTE' })
  })

  it('on the host, the shell hands quoted values back byte for byte', async function () {
    const values = hostOs === 'win32' ? ['web 01', 'a&b|c<d>e^f', 'C:\\vms\\x y\\', '(paren) !bang'] : ['web 01', "it's", 'a&b|c']
    for (const v of values) {
      const quote = hostOs === 'win32' ? cmdQuote : (s: string) => `'${s.replace(/'/g, "'\\''")}'`
      const cmd = hostOs === 'win32' ? `echo ${quote(v)}` : `printf '%s' ${quote(v)}`
      const sh = shellInvocation(cmd, hostOs)
      const out = await new Promise<string>((resolve, reject) => {
        const c = spawn(sh.argv[0] as string, sh.argv.slice(1), { windowsVerbatimArguments: sh.windowsVerbatimArguments, windowsHide: true })
        let s = ''
        c.stdout.on('data', (b: Buffer) => { s += b.toString('utf8') })
        c.on('error', reject)
        c.on('close', () => { resolve(s) })
      })
      // cmd's echo prints the quotes it was given; the inner text must be untouched
      assert.equal(hostOs === 'win32' ? out.trim() : out, hostOs === 'win32' ? quote(v) : v)
    }
  })
})
