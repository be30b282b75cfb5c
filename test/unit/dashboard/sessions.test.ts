import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { SessionStore, csrfProblem, parseCookies, sessionCookie, clearedCookie, SESSION_COOKIE } from '../../../daemon/dashboard/sessions.ts'

describe('daemon/dashboard/sessions: one-time login, session cookie, CSRF rule', () => {
  it('a login token is spent once and gives a session', () => {
    const clock = new ManualClock(0)
    const s = new SessionStore({ clock })
    const { token, expiresInMs } = s.issueLogin()
    assert.equal(expiresInMs, 60_000)
    assert.match(token, /^[A-Za-z0-9_-]{43}$/)
    const { sid, maxAgeSec } = s.redeem(token)
    assert.equal(maxAgeSec, 43_200)
    assert.ok(s.valid(sid))
    assert.throws(() => s.redeem(token), { name: 'LoginTokenInvalidError', code: 'ERR_LOGIN_TOKEN_INVALID' })
    assert.throws(() => s.redeem('guess'), { name: 'LoginTokenInvalidError' })
    assert.equal(s.valid(token), false, 'a login token is not a session')
  })

  it('a login token expires after loginTtlMs, a session after sessionTtlMs', () => {
    const clock = new ManualClock(0)
    const s = new SessionStore({ clock }, { loginTtlMs: 1000, sessionTtlMs: 5000 })
    const late = s.issueLogin().token
    clock.advance(1001)
    assert.throws(() => s.redeem(late), (e: Error) => e.name === 'LoginTokenInvalidError' && /expired/.test(e.message))
    assert.throws(() => s.redeem(late), (e: Error) => /not valid/.test(e.message), 'an expired token is gone too')
    const { sid } = s.redeem(s.issueLogin().token)
    clock.advance(5000)
    assert.ok(s.valid(sid))
    clock.advance(1)
    assert.equal(s.valid(sid), false)
    assert.equal(s.counts.sessions, 0)
  })

  it('tables are bounded: the oldest login or session goes first; revoke ends a session', () => {
    const clock = new ManualClock(0)
    const s = new SessionStore({ clock }, { maxLogins: 2, maxSessions: 2 })
    const t1 = s.issueLogin().token
    const t2 = s.issueLogin().token
    const t3 = s.issueLogin().token
    assert.throws(() => s.redeem(t1), { name: 'LoginTokenInvalidError' })
    const a = s.redeem(t2).sid
    const b = s.redeem(t3).sid
    const c = s.redeem(s.issueLogin().token).sid
    assert.deepEqual([s.valid(a), s.valid(b), s.valid(c)], [false, true, true])
    s.revoke(b)
    assert.equal(s.valid(b), false)
    assert.equal(s.valid(undefined), false)
    assert.equal(s.valid(''), false)
  })

  it('tokens come from the injected random bytes', () => {
    const s = new SessionStore({ clock: new ManualClock(0), randomBytes: (n) => new Uint8Array(n).fill(7) })
    assert.equal(s.issueLogin().token, Buffer.alloc(32, 7).toString('base64url'))
  })

  it('the cookie is HttpOnly, SameSite=Strict, path /, Secure only over TLS', () => {
    assert.equal(sessionCookie('abc', 60, false), `${SESSION_COOKIE}=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=60`)
    assert.equal(sessionCookie('abc', 60, true), `${SESSION_COOKIE}=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure`)
    assert.match(clearedCookie(true), /Max-Age=0; Secure$/)
    const m = parseCookies(`theme=dark; ${SESSION_COOKIE}=s1; ${SESSION_COOKIE}=s2; junk; =x`)
    assert.equal(m.get(SESSION_COOKIE), 's1')
    assert.equal(m.get('theme'), 'dark')
    assert.equal(parseCookies(undefined).size, 0)
  })

  it('a state-changing request needs the custom header and, when sent, its own origin', () => {
    const req = (method: string, headers: Record<string, string>): { method: string, headers: Record<string, string> } => ({ method, headers: { host: '127.0.0.1:7401', ...headers } })
    assert.equal(csrfProblem(req('GET', {}), 'http'), undefined)
    assert.equal(csrfProblem(req('HEAD', {}), 'http'), undefined)
    assert.match(csrfProblem(req('POST', {}), 'http') ?? '', /x-vmesh-request/)
    assert.match(csrfProblem(req('POST', { 'x-vmesh-request': 'yes' }), 'http') ?? '', /x-vmesh-request/)
    assert.equal(csrfProblem(req('POST', { 'x-vmesh-request': '1' }), 'http'), undefined)
    assert.equal(csrfProblem(req('POST', { 'x-vmesh-request': '1', origin: 'http://127.0.0.1:7401' }), 'http'), undefined)
    assert.match(csrfProblem(req('POST', { 'x-vmesh-request': '1', origin: 'http://evil.example' }), 'http') ?? '', /origin/)
    assert.match(csrfProblem(req('POST', { 'x-vmesh-request': '1', origin: 'http://127.0.0.1:7401' }), 'https') ?? '', /origin/, 'scheme counts')
  })
})
