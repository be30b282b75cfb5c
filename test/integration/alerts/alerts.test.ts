/**
 * Alerts end to end: three real daemons (hosts a, b and witness w) with vm1 (home a,
 * replicated to b, RPO target 4 s), every host configured with two sinks — a webhook (a local
 * HTTP receiver that checks the HMAC signature) and e-mail through a real SMTP server process
 * (Debian's aiosmtpd, STARTTLS required, a self-signed certificate made here with openssl).
 *
 *   1. the webhook receiver goes down; b is paused (SIGSTOP): a tells `host-dead:b` and
 *      `rpo-breach:vm1:b` by mail at once, while its status answers promptly (the down sink
 *      does not block the daemon); the receiver returns and gets both from the queue
 *   2. b resumes: the recoveries of both arrive
 *   3. a is killed: b (the reporter now) tells `host-dead:a`, within 5 s of b declaring it dead,
 *      and b, elected for vm1, tells `failover:vm1` and its recovery once vm1 runs there
 *   4. a restarts: b tells `host-dead:a`'s recovery
 * Every sink gets each (incident, type) exactly once.
 */
import assert from 'node:assert/strict'
import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { createServer, type Server } from 'node:http'
import { createHmac, timingSafeEqual } from 'node:crypto'
import { mkdir, open, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { LocalCluster, freePort } from '../../../daemon/cluster/local-cluster.ts'
import { installFakeVm, fakeVmHypervisor, crashVm, killAllVms } from '../../helpers/fake-vm.ts'
import { destroyKeepingFailures } from '../../helpers/keep.ts'
import type { AlertNotice } from '../../../daemon/alerts/types.ts'

const SECRET = 'shared-webhook-secret-for-the-test'
const PYTHON = '/usr/bin/python3' // Debian's, where python3-aiosmtpd is installed

interface Got { at: number, n: AlertNotice }

/** A webhook receiver that can go down and come back on the same port. */
class Receiver {
  readonly got: Got[] = []
  badSignatures = 0
  private server: Server | undefined
  constructor (readonly port: number) {}
  async up (): Promise<void> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const body = Buffer.concat(chunks)
        const want = Buffer.from(`sha256=${createHmac('sha256', SECRET).update(body).digest('hex')}`)
        const sig = Buffer.from(String(req.headers['x-vmesh-signature'] ?? ''))
        if (sig.length !== want.length || !timingSafeEqual(sig, want)) { this.badSignatures++; res.writeHead(401).end(); return }
        this.got.push({ at: Date.now(), n: JSON.parse(body.toString('utf8')) as AlertNotice })
        res.writeHead(204).end()
      })
    })
    await new Promise<void>((resolve, reject) => { this.server?.once('error', reject); this.server?.listen(this.port, '127.0.0.1', () => { resolve() }) })
  }
  async down (): Promise<void> {
    const s = this.server
    this.server = undefined
    if (s === undefined) return
    s.closeAllConnections()
    await new Promise<void>(resolve => s.close(() => { resolve() }))
  }
}

/** Messages the aiosmtpd Mailbox handler delivered to its maildir, with their vmesh headers. */
async function mails (maildir: string): Promise<Array<{ at: number, incident: string, type: string, kind: string, subject: string }>> {
  const dir = join(maildir, 'new')
  const out = []
  for (const f of await readdir(dir).catch(() => [] as string[])) {
    const text = await readFile(join(dir, f), 'utf8')
    const head = text.split(/\r?\n\r?\n/)[0] ?? ''
    const h = (name: string): string => new RegExp(`^${name}: (.*)$`, 'mi').exec(head)?.[1]?.trim() ?? ''
    out.push({ at: (await stat(join(dir, f))).mtimeMs, incident: h('X-Vmesh-Incident'), type: h('X-Vmesh-Type'), kind: h('X-Vmesh-Kind'), subject: h('Subject') })
  }
  return out.sort((x, y) => x.at - y.at)
}

async function waitPort (port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const ok = await new Promise<boolean>(resolve => { const s = connect(port, '127.0.0.1'); s.once('connect', () => { s.destroy(); resolve(true) }); s.once('error', () => { resolve(false) }) })
    if (ok) return
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port} after ${timeoutMs} ms`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

/** Every (incident, type) pair seen more than once. */
function duplicates (list: Array<{ incident: string, type: string }>): string[] {
  const seen = new Map<string, number>()
  for (const x of list) seen.set(`${x.incident} ${x.type}`, (seen.get(`${x.incident} ${x.type}`) ?? 0) + 1)
  return [...seen].filter(([, n]) => n > 1).map(([k, n]) => `${k} ×${n}`)
}

describe('integration: alerts by webhook and SMTP/STARTTLS from real daemons', function () {
  this.timeout(300_000)
  let c: LocalCluster | undefined
  let smtp: ChildProcess | undefined
  let receiver: Receiver | undefined
  after(async function () {
    smtp?.kill('SIGTERM')
    await receiver?.down()
    if (c !== undefined) await killAllVms(c.dir)
    await destroyKeepingFailures(this, c)
  })

  it('a host death, an RPO breach and a failover each arrive once with their recovery; a sink that is down does not block and gets its alerts when back', async () => {
    c = await LocalCluster.create({ nodes: [{ name: 'a' }, { name: 'b' }, { name: 'w', role: 'witness' }] })
    const cl = c
    // the SMTP server: STARTTLS with a self-signed certificate for 127.0.0.1, required
    const tls = join(cl.dir, 'tls')
    await mkdir(tls)
    await promisify(execFile)('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(tls, 'key.pem'), '-out', join(tls, 'cert.pem'), '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'])
    const maildir = join(cl.dir, 'maildir')
    const smtpPort = await freePort()
    smtp = spawn(PYTHON, ['-m', 'aiosmtpd', '-n', '-l', `127.0.0.1:${smtpPort}`, '--tlscert', join(tls, 'cert.pem'), '--tlskey', join(tls, 'key.pem'), '-c', 'aiosmtpd.handlers.Mailbox', maildir], { stdio: ['ignore', 'ignore', 'pipe'] })
    let smtpErr = ''
    smtp.stderr?.on('data', (d: Buffer) => { smtpErr += d.toString() })
    await waitPort(smtpPort, 20_000).catch((err) => { throw new Error(`${(err as Error).message}; aiosmtpd: ${smtpErr}`) })
    receiver = new Receiver(await freePort())
    await receiver.up()

    const script = await installFakeVm(cl.dir)
    const disk = join(cl.dir, 'vm1.img')
    await writeFile(disk, Buffer.alloc(1024 * 1024, 7))
    for (const name of ['a', 'b']) {
      const nd = cl.node(name).dir
      await writeFile(join(nd, 'webhook.secret'), SECRET + '\n', { mode: 0o600 })
      await cl.writeConfig(name, {
        hypervisor: fakeVmHypervisor(script, name),
        ...(name === 'a' ? { vms: [{ name: 'vm1', disks: [disk], replicateTo: ['b'], scanInterval: '500ms', rpo: '4s' }] } : {}),
        alerts: {
          clearAfter: '2s',
          sinks: [
            { type: 'webhook', name: 'hook', url: `http://127.0.0.1:${receiver.port}/vmesh`, secretFile: 'webhook.secret', retryMin: '200ms', retryMax: '1s', timeout: '2s' },
            { type: 'email', name: 'mail', host: '127.0.0.1', port: smtpPort, caFile: join(tls, 'cert.pem'), from: `vmesh@${name}.example.org`, to: ['ops@example.org'], retryMin: '200ms', retryMax: '1s', timeout: '5s' }
          ]
        }
      })
    }
    await cl.startAll()
    const running = async (node: string): Promise<boolean> => { try { return (await cl.status(node)).vms.some(v => v.name === 'vm1' && v.runningHere) } catch { return false } }
    await cl.waitFor('vm1 running on a', () => running('a'), 60_000, 100)
    await cl.waitFor('replica on b', async () => (await cl.status('b')).vms.some(v => v.name === 'vm1' && (v.replica?.appliedGeneration ?? 0) > 0), 60_000, 100)

    // `vmesh alert test`'s route: both sinks take a test notice
    const t = await cl.node('a').client.call<{ sinks: Array<{ sink: string, ok: boolean, error?: string }> }>('POST', '/v1/alerts/test', {}, { timeoutMs: 30_000 })
    assert.deepEqual(t.sinks.map(s => [s.sink, s.ok, s.error]), [['hook', true, undefined], ['mail', true, undefined]])
    await cl.waitFor('the test mail', async () => (await mails(maildir)).some(m => m.type === 'test'), 10_000, 100)
    assert.ok(receiver.got.some(g => g.n.type === 'test'))

    // 1. the webhook down, b paused
    await receiver.down()
    await cl.signal('b', 'SIGSTOP')
    // the VM writes on: a's new generations cannot reach b, so b's copy ages past the 4 s target
    // (a VM that writes nothing loses nothing: its RPO stays small)
    let writes = 0
    const writer = setInterval(() => { void (async () => { const fh = await open(disk, 'r+'); try { await fh.write(Buffer.alloc(4096, ++writes % 250), 0, 4096, (writes % 200) * 4096) } finally { await fh.close() } })() }, 300)
    await cl.waitFor('mail: host-dead:b and rpo-breach:vm1:b', async () => {
      const m = await mails(maildir)
      return m.some(x => x.type === 'alert' && x.kind === 'host-dead') && m.some(x => x.type === 'alert' && x.kind === 'rpo-breach')
    }, 60_000, 200).finally(() => { clearInterval(writer) })
    const t0 = Date.now()
    await cl.status('a')
    assert.ok(Date.now() - t0 < 1000, `a's status took ${Date.now() - t0} ms with its webhook down`)
    const queued = await cl.node('a').client.call<{ sinks: Array<{ sink: string, queued: number, failedAttempts: number }> }>('GET', '/v1/alerts')
    const hook = queued.sinks.find(s => s.sink === 'hook')
    assert.ok(hook !== undefined && hook.queued >= 2 && hook.failedAttempts > 0, JSON.stringify(queued.sinks))
    await receiver.up()
    await cl.waitFor('webhook: the queued alerts after it returned', async () => receiver !== undefined && receiver.got.some(g => g.n.type === 'alert' && g.n.key === 'host-dead:b') && receiver.got.some(g => g.n.type === 'alert' && g.n.key === 'rpo-breach:vm1:b'), 30_000, 100)

    // 2. b resumes: both recover
    await cl.signal('b', 'SIGCONT')
    await cl.waitFor('recoveries of host-dead:b and rpo-breach:vm1:b', async () => receiver !== undefined && receiver.got.some(g => g.n.type === 'recovery' && g.n.key === 'host-dead:b') && receiver.got.some(g => g.n.type === 'recovery' && g.n.key === 'rpo-breach:vm1:b'), 90_000, 100)

    // queues live in memory: what a has not delivered when it is killed is lost, so let both sinks drain first
    await cl.waitFor('mail: the recoveries of host-dead:b and rpo-breach:vm1:b', async () => {
      const m = await mails(maildir)
      return m.some(x => x.type === 'recovery' && x.kind === 'host-dead') && m.some(x => x.type === 'recovery' && x.kind === 'rpo-breach')
    }, 30_000, 200)

    // 3. a dies: b tells it (within 5 s of declaring it dead) and the failover to b
    const mark = receiver.got.length
    await cl.kill('a')
    await crashVm(cl.dir, 'a', 'vm1')
    const declaredAt = await cl.waitFor('b declares a dead', async () => (await cl.memberState('b', 'a')) === 'dead' ? Date.now() : undefined, 30_000, 50)
    const deadAlert = await cl.waitFor('webhook: host-dead:a', async () => receiver?.got.slice(mark).find(g => g.n.type === 'alert' && g.n.key === 'host-dead:a'), 30_000, 20)
    const latencyMs = deadAlert.at - declaredAt
    process.stderr.write(`host-dead alert delivered ${latencyMs} ms after b's status first showed a dead (polled every 50 ms)\n`)
    assert.equal(deadAlert.n.node, 'b')
    assert.ok(latencyMs <= 5000, `host-dead alert ${latencyMs} ms after detection`)
    await cl.waitFor('vm1 running on b', () => running('b'), 60_000, 100)
    await cl.waitFor('webhook: failover:vm1 started and done', async () => receiver !== undefined && receiver.got.some(g => g.n.type === 'alert' && g.n.key === 'failover:vm1') && receiver.got.some(g => g.n.type === 'recovery' && g.n.key === 'failover:vm1'), 30_000, 100)

    // 4. a returns: b tells the recovery
    await cl.start('a')
    await cl.waitFor('webhook: host-dead:a recovered', async () => receiver?.got.some(g => g.n.type === 'recovery' && g.n.key === 'host-dead:a'), 60_000, 100)
    await cl.waitFor('mail: the same recoveries', async () => {
      const m = await mails(maildir)
      return ['host-dead', 'failover', 'rpo-breach'].every(k => m.some(x => x.type === 'recovery' && x.kind === k)) && m.filter(x => x.type === 'recovery' && x.kind === 'host-dead').length >= 2
    }, 30_000, 200)
    await new Promise(resolve => setTimeout(resolve, 3000)) // anything late would be a duplicate

    const hooks = receiver.got.map(g => ({ incident: g.n.incident, type: g.n.type, key: g.n.key, node: g.n.node }))
    const mail = await mails(maildir)
    process.stderr.write(`webhook got:\n${hooks.map(h => `  ${h.node} ${h.type} ${h.key}`).join('\n')}\nmail got ${mail.length}\n`)
    assert.deepEqual(duplicates(hooks), [], 'webhook duplicates')
    assert.deepEqual(duplicates(mail), [], 'mail duplicates')
    assert.equal(receiver.badSignatures, 0)
    // an RPO can breach twice under load (two incidents, each once); deaths and the failover are one each
    for (const [key, node] of [['host-dead:b', 'a'], ['host-dead:a', 'b'], ['failover:vm1', 'b']] as const) {
      for (const type of ['alert', 'recovery']) {
        assert.equal(hooks.filter(h => h.key === key && h.type === type).length, 1, `${key} ${type} once`)
        assert.equal(hooks.find(h => h.key === key && h.type === type)?.node, node, `${key} told by ${node}`)
      }
    }
    for (const type of ['alert', 'recovery']) assert.ok(hooks.some(h => h.key === 'rpo-breach:vm1:b' && h.type === type && h.node === 'a'), `rpo-breach:vm1:b ${type} from a`)
    // the mail sink got the same notices as the webhook
    assert.deepEqual(mail.filter(m => m.type !== 'test').map(m => `${m.incident} ${m.type}`).sort(), hooks.filter(h => h.type !== 'test').map(h => `${h.incident} ${h.type}`).sort())
  })
})
