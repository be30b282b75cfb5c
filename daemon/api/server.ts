/**
 * The local control API: HTTP on the configured loopback address, for the CLI and scripts.
 * Every request must carry `Authorization: Bearer <token>`; the token is random per daemon
 * start and written mode 0600 to `<dataDir>/api.token`, so only users who can read the data
 * directory can drive the daemon. Handlers return JSON; a thrown VmeshError becomes a JSON
 * error with its code (4xx for caller mistakes, 500 otherwise). `/metrics` (Prometheus) is
 * behind the same token.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { randomBytes, timingSafeEqual } from 'node:crypto'
import { mkdir, unlink } from 'node:fs/promises'
import { dirname } from 'node:path'
import { VmeshError, errorMessage } from '../../common/errors.ts'
import { hostOs, renameDurable, writeSecretFile } from '../../common/platform/index.ts'
import type { Logger } from '../log.ts'
import { BadRequestError, NotFoundError } from './errors.ts'

import type { Handler, RawHandler, RouteRegistry } from './routes.ts'
import type { Startable } from '../startable.ts'

export type { Handler, RawHandler } from './routes.ts'

export interface ApiServerInit {
  host: string
  port: number
  tokenPath: string
  /** Largest accepted request body. @default 1 MiB */
  maxBodyBytes?: number
}

export class ApiServer implements RouteRegistry, Startable {
  private server?: Server
  private token = ''
  private readonly routes = new Map<string, Handler>()
  private readonly raw = new Map<string, RawHandler>()
  private readonly prefixes: Array<[string, RawHandler]> = []
  private readonly authenticators: Array<(req: IncomingMessage) => boolean> = []

  constructor (private readonly components: { log: Logger }, private readonly init: ApiServerInit) {}

  /** Registers a JSON route, e.g. route('GET', '/v1/status', ...). */
  route (method: 'GET' | 'POST', path: string, handler: Handler): void { this.routes.set(`${method} ${path}`, handler) }

  /** Error codes a service raises for the caller's mistakes: answered 400 instead of 500. */
  clientErrors (codes: Iterable<string>): void { for (const c of codes) this.clientCodes.add(c) }

  private readonly clientCodes = new Set(CLIENT_ERROR_CODES)
  /** Registers a route that writes its own response (metrics text, streams). */
  rawRoute (method: 'GET' | 'POST', path: string, handler: RawHandler): void { this.raw.set(`${method} ${path}`, handler) }

  /** Routes under `prefix` that authenticate by themselves (the dashboard's login and pages). */
  publicPrefix (prefix: string, handler: RawHandler): void { this.prefixes.push([prefix, handler]) }

  /** Another credential besides the bearer token (the dashboard's session); may throw a VmeshError to refuse. */
  authenticator (fn: (req: IncomingMessage) => boolean): void { this.authenticators.push(fn) }

  /** Serves one request: the dashboard's TLS listener hands its requests here. */
  dispatch (req: IncomingMessage, res: ServerResponse): void { void this.handle(req, res) }

  get address (): string { return `${this.init.host}:${this.port}` }
  get port (): number {
    const a = this.server?.address()
    return typeof a === 'object' && a != null ? a.port : this.init.port
  }

  async start (): Promise<void> {
    if (this.server !== undefined) return
    this.token = randomBytes(32).toString('hex')
    await mkdir(dirname(this.init.tokenPath), { recursive: true, mode: 0o700 })
    const tmp = `${this.init.tokenPath}.tmp`
    // mode 0600 on POSIX; owner/SYSTEM/Administrators ACL on Windows (kept by the rename)
    await writeSecretFile(tmp, this.token + '\n', { os: hostOs, exclusive: false })
    await renameDurable(tmp, this.init.tokenPath, { os: hostOs })
    const server = createServer((req, res) => { void this.handle(req, res) })
    server.keepAliveTimeout = 5000
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.init.port, this.init.host, () => { server.off('error', reject); resolve() })
    })
    this.server = server
  }

  async stop (): Promise<void> {
    const s = this.server
    if (s === undefined) return
    this.server = undefined
    s.closeAllConnections()
    await new Promise<void>(resolve => s.close(() => resolve()))
    await unlink(this.init.tokenPath).catch(() => {})
  }

  private authorized (req: IncomingMessage): boolean {
    const h = req.headers.authorization
    if (typeof h !== 'string' || !h.startsWith('Bearer ')) return false
    const given = Buffer.from(h.slice(7).trim())
    const want = Buffer.from(this.token)
    return given.length === want.length && timingSafeEqual(given, want)
  }

  private async handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const ac = new AbortController()
    res.on('close', () => ac.abort())
    try {
      const pub = this.prefixes.find(([p]) => (req.url ?? '/').startsWith(p))
      if (pub !== undefined) { await pub[1](req, res); return }
      if (!this.authorized(req) && !this.authenticators.some(a => a(req))) { send(res, 401, { error: { name: 'ApiUnauthorizedError', code: 'ERR_API_UNAUTHORIZED', message: 'missing or wrong bearer token' } }); return }
      const url = new URL(req.url ?? '/', 'http://localhost')
      const key = `${req.method ?? 'GET'} ${url.pathname}`
      const raw = this.raw.get(key)
      if (raw !== undefined) { await raw(req, res); return }
      const handler = this.routes.get(key)
      if (handler === undefined) throw new NotFoundError(`no route ${key}`)
      const body = req.method === 'POST' ? await readJson(req, this.init.maxBodyBytes ?? 1024 * 1024) : undefined
      const result = await handler({ body, query: url.searchParams, signal: ac.signal })
      send(res, 200, result ?? { ok: true })
    } catch (err) {
      const status = err instanceof NotFoundError ? 404 : err instanceof BadRequestError || (err instanceof VmeshError && this.clientCodes.has(err.code)) ? 400 : 500
      const body = err instanceof VmeshError ? { error: err.toJSON() } : { error: { name: 'Error', code: 'ERR_INTERNAL', message: errorMessage(err) } }
      if (status === 500) this.components.log.warn({ err: errorMessage(err), url: req.url }, 'control API request failed')
      if (!res.headersSent) send(res, status, body); else res.destroy()
    }
  }
}

/** Errors that are the caller's (or the config file's) fault, answered with 400. */
const CLIENT_ERROR_CODES = new Set(['ERR_CONFIG_NOT_FOUND', 'ERR_CONFIG_PARSE', 'ERR_CONFIG_INVALID', 'ERR_CONFIG_KEY_FILE', 'ERR_USAGE', 'ERR_BAD_REQUEST'])

function send (res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

async function readJson (req: IncomingMessage, limit: number): Promise<unknown> {
  const chunks: Buffer[] = []
  let n = 0
  for await (const c of req) {
    n += (c as Buffer).length
    if (n > limit) throw new BadRequestError(`request body over ${limit} bytes`)
    chunks.push(c as Buffer)
  }
  if (n === 0) return {}
  try { return JSON.parse(Buffer.concat(chunks).toString('utf8')) } catch { throw new BadRequestError('request body is not JSON') }
}
