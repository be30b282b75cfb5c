/**
 * The dashboard's HTTPS listener with a real certificate (made by openssl): the login link for
 * it sets a Secure cookie; pages, the event stream and the API routes are served through it
 * with the session; a POST without the dashboard's header is refused; the token is single-use.
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { EventEmitter } from 'node:events'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { request } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { systemClock } from '../../../common/clock.ts'
import { ApiServer } from '../../../daemon/api/server.ts'
import { silentLogger } from '../../../daemon/log.ts'
import { DashboardService } from '../../../daemon/dashboard/service.ts'
import { EventJournal } from '../../../daemon/events/journal.ts'
import type { StatusDocument } from '../../../daemon/status.ts'

interface Answer { status: number, headers: Record<string, string | string[] | undefined>, body: string }

describe('integration: dashboard over TLS', function () {
  this.timeout(30_000)
  let dir = ''
  let api: ApiServer | undefined
  let dash: DashboardService | undefined
  afterEach(async () => { await dash?.stop(); await api?.stop(); await rm(dir, { recursive: true, force: true }) })

  it('serves login, pages, the stream and the API through the HTTPS listener', async function () {
    dir = await mkdtemp(join(tmpdir(), 'vmesh-dash-tls-'))
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' })
    } catch { this.skip() }
    const ca = await readFile(join(dir, 'cert.pem'))
    const status: StatusDocument = { node: { name: 'a', peerId: 'P', role: 'host', uptimeMs: 1, profile: 'lan' }, members: [], vms: [], tests: [] }
    api = new ApiServer({ log: silentLogger() }, { host: '127.0.0.1', port: 0, tokenPath: join(dir, 'api.token') })
    api.route('GET', '/v1/status', () => status)
    api.route('POST', '/v1/echo', ({ body }) => ({ got: body }))
    const journal = new EventJournal({ clock: systemClock }, { node: 'a' })
    const meshStatus = Object.assign(new EventEmitter<{ change: [] }>(), { view: () => ({ node: 'a', atWallMs: 1, nodes: [] }) })
    dash = new DashboardService({ clock: systemClock, log: silentLogger(), api, status: { status: () => status }, meshStatus, journal }, {
      apiHost: '127.0.0.1', listen: { host: '127.0.0.1', port: 0 }, tls: { certPath: join(dir, 'cert.pem'), keyPath: join(dir, 'key.pem') }
    })
    await dash.start()
    await api.start()
    const { urls } = dash.loginUrls()
    assert.equal(urls.length, 2)
    const url = new URL(urls[1] as string)
    assert.equal(url.protocol, 'https:')

    const call = async (method: string, path: string, headers: Record<string, string> = {}, body?: string, firstChunkOnly = false): Promise<Answer> => await new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: Number(url.port), path, method, ca, headers: { ...headers, ...(body !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } : {}) } }, (res) => {
        let text = ''
        res.on('data', (c: Buffer) => { text += c.toString(); if (firstChunkOnly && text.includes('event: history')) { res.destroy(); resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }) } })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }))
      })
      req.on('error', reject)
      if (body !== undefined) req.write(body)
      req.end()
    })

    assert.equal((await call('GET', '/ui/')).status, 401)
    const login = await call('GET', url.pathname + url.search)
    assert.equal(login.status, 303)
    assert.equal(login.headers.location, '/ui/#mesh')
    const setCookie = String(login.headers['set-cookie'])
    assert.match(setCookie, /HttpOnly; SameSite=Strict; Max-Age=\d+; Secure$/)
    assert.equal((await call('GET', url.pathname + url.search)).status, 401, 'single use')
    const cookie = setCookie.split(';')[0] as string

    const page = await call('GET', '/ui/', { cookie })
    assert.equal(page.status, 200)
    assert.match(String(page.headers['content-security-policy']), /default-src 'none'; script-src 'self'/)
    assert.match(page.body, /<script type="module" src="\/ui\/app.js">/)
    assert.equal((await call('GET', '/ui/app.js', { cookie })).status, 200)
    assert.equal(JSON.parse((await call('GET', '/v1/status', { cookie })).body).node.name, 'a')
    const csrf = await call('POST', '/v1/echo', { cookie }, '{"x":1}')
    assert.equal(csrf.status, 400)
    assert.equal(JSON.parse(csrf.body).error.code, 'ERR_CSRF_REFUSED')
    assert.equal((await call('POST', '/v1/echo', { cookie, 'x-vmesh-request': '1', origin: 'https://evil.example' }, '{"x":1}')).status, 400)
    assert.deepEqual(JSON.parse((await call('POST', '/v1/echo', { cookie, 'x-vmesh-request': '1', origin: `https://127.0.0.1:${url.port}` }, '{"x":1}')).body), { got: { x: 1 } })
    journal.append({ kind: 'member', severity: 'critical', peer: 'b', text: 'b dead' })
    const stream = await call('GET', '/ui/events', { cookie }, undefined, true)
    assert.equal(stream.status, 200)
    assert.match(stream.body, /event: state\ndata: \{"node":"a"/)
    assert.match(stream.body, /event: history\ndata: \[\{.*"text":"b dead"/)
  })
})
