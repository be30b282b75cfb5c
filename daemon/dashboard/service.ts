/**
 * The web dashboard, served by the control API's own listener (loopback) and, when configured,
 * by a TLS listener of its own (`dashboard.listen` + `dashboard.tls`) that hands every request
 * to the same ApiServer — so the pages and the API routes they call are the same on both.
 *
 *   vmesh dashboard ─POST /v1/dashboard/login (bearer)─▶ one-time URL
 *   browser ─GET /ui/login?t=─▶ SessionStore.redeem ─▶ Set-Cookie (HttpOnly, SameSite=Strict) + 303 /ui/
 *   browser ─GET /ui/ (+ app.js, style.css)           static files from ./static, session required
 *   browser ─GET /ui/events─▶ SseHub: 'state' (status + mesh view + progress) on change,
 *                                     'history' once, then 'event' per journal entry
 *   browser ─POST /v1/failover ... with the cookie + X-Vmesh-Request ─▶ the existing routes
 *
 * Plain HTTP serves the dashboard (and admits a session cookie) only to loopback clients; any
 * other client must come through the TLS listener. The state is rebuilt at most every
 * `tickMs` while a page is open and sent only when it changed; a member change, a summary from
 * a peer or a journal entry rebuilds it at once (debounced), so a death reaches the page without
 * waiting for the tick.
 */
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { readFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { TLSSocket } from 'node:tls'
import type { Clock, TimerHandle } from '../../common/clock.ts'
import { VmeshError } from '../../common/errors.ts'
import type { Logger } from '../log.ts'
import type { RawHandler, RouteRegistry } from '../api/routes.ts'
import type { StatusDocument } from '../status.ts'
import type { EventJournal } from '../events/journal.ts'
import type { MeshEvent } from '../events/types.ts'
import type { MeshStatusView } from './mesh-status.ts'
import { SessionStore, SESSION_COOKIE, clearedCookie, csrfProblem, parseCookies, sessionCookie } from './sessions.ts'
import { SseHub } from './sse.ts'
import { progressItems, type ProgressItem } from './progress.ts'
import { CsrfRefusedError, DashboardInsecureError, LoginTokenInvalidError, SessionRequiredError } from './errors.ts'

// The pages are plain files beside this module; the compiled tree (dist/, `npm run build`) does
// not copy them, so from there they are read from the source tree, which ships with it.
const HERE = dirname(fileURLToPath(import.meta.url))
const STATIC_DIR = [join(HERE, 'static'), join(HERE, '..', '..', '..', 'daemon', 'dashboard', 'static')].find(d => existsSync(d)) ?? join(HERE, 'static')
const STATIC_FILES: Record<string, string> = {
  '/ui/': 'index.html',
  '/ui/app.js': 'app.js',
  '/ui/style.css': 'style.css'
}
const CONTENT_TYPES: Record<string, string> = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' }
const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY'
}

export interface DashboardComponents {
  clock: Clock
  log: Logger
  api: Pick<RouteRegistry, 'route' | 'clientErrors'> & {
    publicPrefix: (prefix: string, handler: RawHandler) => void
    authenticator: (fn: (req: IncomingMessage) => boolean) => void
    dispatch: (req: IncomingMessage, res: ServerResponse) => void
    readonly port: number
  }
  status: { status: () => StatusDocument }
  /** Every node's summary (MeshStatusService); 'change' when a peer's summary or a member changed. */
  meshStatus: { view: () => MeshStatusView, on: (e: 'change', fn: () => void) => unknown, off: (e: 'change', fn: () => void) => unknown }
  /** The event history (EventJournal). */
  journal: Pick<EventJournal, 'since' | 'lastSeq'> & { on: (e: 'event', fn: (ev: MeshEvent) => void) => unknown, off: (e: 'event', fn: (ev: MeshEvent) => void) => unknown }
  /** Random bytes for tokens (tests inject their own). */
  randomBytes?: (n: number) => Uint8Array
}

export interface DashboardSettings {
  /** The control API's host (the loopback URL `vmesh dashboard` prints). */
  apiHost: string
  /** Optional TLS listener for remote browsers. */
  listen?: { host: string, port: number }
  tls?: { certPath: string, keyPath: string }
  /** Base URL printed for the TLS listener (default https://<listen host>:<port>). */
  publicUrl?: string
  /** @default 60_000 */
  loginTtlMs?: number
  /** @default 12 h */
  sessionTtlMs?: number
  /** Longest interval between two state pushes while a page is open. @default 1000 */
  tickMs?: number
}

export interface DashboardState {
  node: string
  atWallMs: number
  status: StatusDocument
  mesh: MeshStatusView
  progress: ProgressItem[]
}

export class DashboardService {
  readonly sessions: SessionStore
  private readonly hub: SseHub
  private tls?: HttpsServer
  private tick?: TimerHandle
  private soon?: TimerHandle
  private lastState = ''
  private started = false
  private readonly onJournal = (e: MeshEvent): void => { this.hub.broadcast('event', e); this.pushSoon() }
  private readonly onMesh = (): void => { this.pushSoon() }

  constructor (private readonly components: DashboardComponents, private readonly settings: DashboardSettings) {
    this.sessions = new SessionStore({ clock: components.clock, ...(components.randomBytes !== undefined ? { randomBytes: components.randomBytes } : {}) }, {
      ...(settings.loginTtlMs !== undefined ? { loginTtlMs: settings.loginTtlMs } : {}),
      ...(settings.sessionTtlMs !== undefined ? { sessionTtlMs: settings.sessionTtlMs } : {})
    })
    this.hub = new SseHub({ clock: components.clock })
    const { api } = components
    api.clientErrors(['ERR_CSRF_REFUSED'])
    api.route('POST', '/v1/dashboard/login', () => this.loginUrls())
    api.authenticator((req) => this.sessionAdmits(req))
    api.publicPrefix('/ui/', async (req, res) => { await this.serve(req, res) })
  }

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    this.components.journal.on('event', this.onJournal)
    this.components.meshStatus.on('change', this.onMesh)
    const { listen, tls } = this.settings
    if (listen !== undefined && tls !== undefined) {
      const [cert, key] = await Promise.all([readFile(tls.certPath), readFile(tls.keyPath)])
      const server = createHttpsServer({ cert, key }, (req, res) => { this.components.api.dispatch(req, res) })
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(listen.port, listen.host, () => { server.off('error', reject); resolve() })
      })
      this.tls = server
    }
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    this.components.journal.off('event', this.onJournal)
    this.components.meshStatus.off('change', this.onMesh)
    this.components.clock.clearTimeout(this.tick)
    this.components.clock.clearTimeout(this.soon)
    this.tick = undefined
    this.soon = undefined
    this.hub.closeAll()
    const s = this.tls
    this.tls = undefined
    if (s !== undefined) { s.closeAllConnections(); await new Promise<void>(resolve => s.close(() => resolve())) }
  }

  /** Port of the TLS listener (0 when none). */
  get tlsPort (): number { const a = this.tls?.address(); return typeof a === 'object' && a !== null ? a.port : 0 }

  /** One-time login URLs: loopback always, the TLS listener's when configured. */
  loginUrls (): { url: string, urls: string[], expiresInMs: number } {
    const { token, expiresInMs } = this.sessions.issueLogin()
    const path = `/ui/login?t=${token}`
    const host = this.settings.apiHost === '0.0.0.0' ? '127.0.0.1' : this.settings.apiHost.includes(':') ? `[${this.settings.apiHost}]` : this.settings.apiHost
    const urls = [`http://${host}:${this.components.api.port}${path}`]
    if (this.tls !== undefined && this.settings.listen !== undefined) {
      const base = this.settings.publicUrl ?? `https://${this.settings.listen.host === '0.0.0.0' ? '127.0.0.1' : this.settings.listen.host}:${this.tlsPort}`
      urls.push(base.replace(/\/+$/, '') + path)
    }
    return { url: urls[urls.length - 1] as string, urls, expiresInMs }
  }

  /** The session cookie as a credential for the API routes the page calls. */
  private sessionAdmits (req: IncomingMessage): boolean {
    const sid = parseCookies(req.headers.cookie).get(SESSION_COOKIE)
    if (sid === undefined || !this.sessions.valid(sid) || !transportOk(req)) return false
    const problem = csrfProblem(req, isTls(req) ? 'https' : 'http')
    if (problem !== undefined) throw new CsrfRefusedError(problem)
    return true
  }

  private async serve (req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      if (!transportOk(req)) throw new DashboardInsecureError()
      const url = new URL(req.url ?? '/', 'http://localhost')
      const method = req.method ?? 'GET'
      if (method === 'GET' && url.pathname === '/ui/login') { this.login(req, res, url.searchParams.get('t') ?? ''); return }
      const sid = parseCookies(req.headers.cookie).get(SESSION_COOKIE)
      if (!this.sessions.valid(sid)) throw new SessionRequiredError()
      const csrf = csrfProblem(req, isTls(req) ? 'https' : 'http')
      if (csrf !== undefined) throw new CsrfRefusedError(csrf)
      if (method === 'POST' && url.pathname === '/ui/logout') {
        this.sessions.revoke(sid)
        res.writeHead(204, { 'set-cookie': clearedCookie(isTls(req)), ...SECURITY_HEADERS }).end()
        return
      }
      if (method === 'GET' && url.pathname === '/ui/events') { this.openStream(res); return }
      if (method === 'GET' && url.pathname === '/ui/state') { json(res, 200, this.state()); return }
      const file = method === 'GET' ? STATIC_FILES[url.pathname] : undefined
      if (file === undefined) { json(res, 404, { error: { name: 'NotFoundError', code: 'ERR_NOT_FOUND', message: `no page ${url.pathname}` } }); return }
      const body = await readFile(join(STATIC_DIR, file))
      res.writeHead(200, { 'content-type': CONTENT_TYPES[file.split('.').pop() as string] as string, 'content-length': body.byteLength, 'cache-control': 'no-cache', ...SECURITY_HEADERS })
      res.end(body)
    } catch (err) {
      const status = err instanceof SessionRequiredError ? 401 : err instanceof DashboardInsecureError || err instanceof CsrfRefusedError ? 403 : err instanceof LoginTokenInvalidError ? 401 : 500
      if (status === 500) this.components.log.warn({ err: String(err) }, 'dashboard request failed')
      if (res.headersSent) { res.destroy(); return }
      if (err instanceof VmeshError && (req.headers.accept ?? '').includes('text/html')) { page(res, status, err.message); return }
      json(res, status, { error: err instanceof VmeshError ? err.toJSON() : { name: 'Error', code: 'ERR_INTERNAL', message: String(err) } })
    }
  }

  private login (req: IncomingMessage, res: ServerResponse, token: string): void {
    const { sid, maxAgeSec } = this.sessions.redeem(token)
    // 303 to a URL without the token: it leaves the address bar and the history entry
    res.writeHead(303, { location: '/ui/#mesh', 'set-cookie': sessionCookie(sid, maxAgeSec, isTls(req)), 'cache-control': 'no-store', ...SECURITY_HEADERS })
    res.end()
  }

  private openStream (res: ServerResponse): void {
    const state = this.state()
    this.hub.open(res, [{ event: 'state', data: state }, { event: 'history', data: this.components.journal.since(0, 500) }])
    this.lastState = stateKey(state)
    if (this.tick === undefined) this.armTick()
  }

  state (): DashboardState {
    const status = this.components.status.status()
    const mesh = this.components.meshStatus.view()
    return { node: status.node.name, atWallMs: this.components.clock.wallNow(), status, mesh, progress: progressItems(mesh.nodes.map(n => n.summary)) }
  }

  private push (): void {
    if (this.hub.size === 0) return
    const state = this.state()
    const key = stateKey(state)
    if (key === this.lastState) return
    this.lastState = key
    this.hub.broadcast('state', state)
  }

  private pushSoon (): void {
    if (this.soon !== undefined || this.hub.size === 0) return
    this.soon = this.components.clock.setTimeout(() => { this.soon = undefined; this.push() }, 30)
  }

  private armTick (): void {
    this.tick = this.components.clock.setTimeout(() => {
      this.tick = undefined
      if (!this.started || this.hub.size === 0) return
      this.push()
      this.armTick()
    }, this.settings.tickMs ?? 1000)
  }
}

/** The state without its timestamp: a push only when something else changed. */
function stateKey (s: DashboardState): string { return JSON.stringify({ ...s, atWallMs: 0 }) }

function isTls (req: IncomingMessage): boolean { return (req.socket as TLSSocket).encrypted === true }

function isLoopback (addr: string | undefined): boolean {
  return addr !== undefined && (addr === '::1' || addr.startsWith('127.') || addr.startsWith('::ffff:127.'))
}

/** Plain HTTP only from loopback; anything over TLS. */
function transportOk (req: IncomingMessage): boolean { return isTls(req) || isLoopback(req.socket.remoteAddress) }

function json (res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...SECURITY_HEADERS })
  res.end(text)
}

function page (res: ServerResponse, status: number, message: string): void {
  const esc = message.replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`)
  const text = `<!doctype html><meta charset="utf-8"><title>vmesh</title><p>${esc}</p>`
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...SECURITY_HEADERS })
  res.end(text)
}
