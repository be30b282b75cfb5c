/**
 * Dashboard login without a password: `vmesh dashboard` (holding the API token) asks the daemon
 * for a one-time login token; opening `/ui/login?t=TOKEN` spends it — single use, valid for
 * `loginTtlMs` — and answers with a session cookie (HttpOnly, SameSite=Strict, Secure over TLS)
 * and a redirect, so neither the API token nor the login token stays in the page.
 *
 * Tokens and session IDs are 32 random bytes; they are kept only as SHA-256 digests, looked up
 * by digest (a lookup's timing says nothing about a guess's prefix). Both tables are bounded:
 * the oldest entry goes first. Time is the injected Clock's monotonic `now()`.
 *
 * State-changing requests through a session must also carry `X-Vmesh-Request: 1` (a header a
 * cross-site form or image cannot set, and that a cross-origin script could only send after a
 * CORS preflight the daemon never grants) and, when the browser sends `Origin`, come from the
 * page's own origin: see `csrfProblem`.
 */
import { createHash, randomBytes } from 'node:crypto'
import type { Clock } from '../../common/clock.ts'
import { LoginTokenInvalidError } from './errors.ts'

export const SESSION_COOKIE = 'vmesh_session'
export const REQUEST_HEADER = 'x-vmesh-request'

export interface SessionStoreInit {
  /** How long a login link stays valid. @default 60_000 */
  loginTtlMs?: number
  /** How long a session lasts after login. @default 43_200_000 (12 h) */
  sessionTtlMs?: number
  /** Most sessions kept at once (the oldest is dropped). @default 64 */
  maxSessions?: number
  /** Most unspent login links kept at once. @default 16 */
  maxLogins?: number
}

export interface SessionStoreComponents {
  clock: Pick<Clock, 'now'>
  /** Random bytes for tokens. @default node:crypto randomBytes */
  randomBytes?: (n: number) => Uint8Array
}

function digest (s: string): string { return createHash('sha256').update(s).digest('hex') }

export class SessionStore {
  private readonly logins = new Map<string, number>()
  private readonly sessions = new Map<string, number>()
  readonly loginTtlMs: number
  readonly sessionTtlMs: number

  constructor (private readonly components: SessionStoreComponents, private readonly init: SessionStoreInit = {}) {
    this.loginTtlMs = init.loginTtlMs ?? 60_000
    this.sessionTtlMs = init.sessionTtlMs ?? 43_200_000
  }

  private token (): string { return Buffer.from((this.components.randomBytes ?? randomBytes)(32)).toString('base64url') }

  /** A new one-time login token. */
  issueLogin (): { token: string, expiresInMs: number } {
    this.prune()
    const token = this.token()
    this.logins.set(digest(token), this.components.clock.now() + this.loginTtlMs)
    trim(this.logins, this.init.maxLogins ?? 16)
    return { token, expiresInMs: this.loginTtlMs }
  }

  /** Spends a login token (once) for a new session ID; LoginTokenInvalidError when unknown, used or expired. */
  redeem (token: string): { sid: string, maxAgeSec: number } {
    const key = digest(token)
    const until = this.logins.get(key)
    this.logins.delete(key)
    if (until === undefined) throw new LoginTokenInvalidError('unknown')
    const now = this.components.clock.now()
    if (now > until) throw new LoginTokenInvalidError('expired')
    const sid = this.token()
    this.sessions.set(digest(sid), now + this.sessionTtlMs)
    trim(this.sessions, this.init.maxSessions ?? 64)
    return { sid, maxAgeSec: Math.floor(this.sessionTtlMs / 1000) }
  }

  /** True while `sid` names a live session. */
  valid (sid: string | undefined): boolean {
    if (sid === undefined || sid === '') return false
    const key = digest(sid)
    const until = this.sessions.get(key)
    if (until === undefined) return false
    if (this.components.clock.now() > until) { this.sessions.delete(key); return false }
    return true
  }

  /** Ends a session (logout). */
  revoke (sid: string | undefined): void { if (sid !== undefined) this.sessions.delete(digest(sid)) }

  get counts (): { logins: number, sessions: number } { return { logins: this.logins.size, sessions: this.sessions.size } }

  private prune (): void {
    const now = this.components.clock.now()
    for (const [k, until] of this.logins) if (now > until) this.logins.delete(k)
    for (const [k, until] of this.sessions) if (now > until) this.sessions.delete(k)
  }
}

/** Drops the oldest entries (Map keeps insertion order) beyond `max`. */
function trim (m: Map<string, number>, max: number): void {
  while (m.size > max) { const k = m.keys().next().value as string; m.delete(k) }
}

/** The cookies of a `Cookie:` header (first value of each name wins). */
export function parseCookies (header: string | undefined): Map<string, string> {
  const out = new Map<string, string>()
  if (header === undefined) return out
  for (const part of header.split(';')) {
    const i = part.indexOf('=')
    if (i <= 0) continue
    const name = part.slice(0, i).trim()
    if (!out.has(name)) out.set(name, part.slice(i + 1).trim())
  }
  return out
}

/** `Set-Cookie` for a session (`secure`: served over TLS). */
export function sessionCookie (sid: string, maxAgeSec: number, secure: boolean): string {
  return `${SESSION_COOKIE}=${sid}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAgeSec}${secure ? '; Secure' : ''}`
}

/** `Set-Cookie` that removes the session cookie. */
export function clearedCookie (secure: boolean): string {
  return `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0${secure ? '; Secure' : ''}`
}

/**
 * Why a request through a session may not change anything (undefined: it may). GET and HEAD
 * change nothing and pass; anything else needs `X-Vmesh-Request: 1`, and an `Origin` header,
 * when present, must be the page's own (`scheme://host` of the request).
 */
export function csrfProblem (req: { method?: string, headers: Record<string, string | string[] | undefined> }, scheme: 'http' | 'https'): string | undefined {
  const method = (req.method ?? 'GET').toUpperCase()
  if (method === 'GET' || method === 'HEAD') return undefined
  if (req.headers[REQUEST_HEADER] !== '1') return `a ${method} needs the ${REQUEST_HEADER} header`
  const origin = req.headers.origin
  if (origin === undefined) return undefined
  const host = req.headers.host
  if (typeof origin !== 'string' || typeof host !== 'string' || origin !== `${scheme}://${host}`) return `origin ${String(origin)} is not this dashboard's`
  return undefined
}
