/**
 * QmpSession against a scripted QMP server on a unix socket: one connection (one capabilities
 * handshake) for many commands, replies matched by id and events skipped, a reconnect after
 * the server went away (QEMU restarted), and typed errors for a hung or confused monitor
 * (virtual time for the timeout).
 */
import assert from 'node:assert/strict'
import { createServer, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import { ManualClock } from '../../../common/clock.ts'
import { QmpSession } from '../../../daemon/hypervisor/qmp-session.ts'
import { tempDir } from '../../helpers/tmp.ts'

interface Monitor { server: Server, connections: number, caps: number, commands: string[], sockets: Socket[], mode: 'ok' | 'silent' | 'wrong-id' }

async function monitor (path: string): Promise<Monitor> {
  const m: Monitor = { server: createServer(), connections: 0, caps: 0, commands: [], sockets: [], mode: 'ok' }
  m.server.on('connection', (s: Socket) => {
    m.connections++
    m.sockets.push(s)
    s.on('error', () => {})
    s.write('{"QMP": {"version": {}, "capabilities": []}}\r\n')
    let buf = ''
    s.setEncoding('utf8')
    s.on('data', (d: string) => {
      buf += d
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const msg = JSON.parse(buf.slice(0, nl)) as { execute: string, id?: string, arguments?: unknown }
        buf = buf.slice(nl + 1)
        if (msg.execute === 'qmp_capabilities') { m.caps++; s.write(`${JSON.stringify({ return: {}, id: msg.id })}\r\n`); continue }
        m.commands.push(msg.execute)
        if (m.mode === 'silent') continue
        // an event first: it must be skipped
        s.write('{"event": "BLOCK_JOB_READY", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}\r\n')
        s.write(`${JSON.stringify({ return: { echo: msg.arguments ?? null }, id: m.mode === 'wrong-id' ? 'other' : msg.id })}\r\n`)
      }
    })
  })
  await new Promise<void>(resolve => m.server.listen(path, resolve))
  return m
}

describe('hypervisor/QmpSession: one long-lived QMP connection per VM', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let n = 0
  before(async () => { ({ dir, cleanup } = await tempDir()) })
  after(async () => { await cleanup() })

  it('many commands over one connection and one handshake; replies matched by id, events skipped; reconnects after the server went away', async () => {
    const path = join(dir, `q${n++}.sock`)
    const m = await monitor(path)
    const s = new QmpSession({ clock: new ManualClock() }, { socket: path })
    try {
      const replies = await Promise.all([1, 2, 3, 4, 5].map(async i => await s.command('query-x', { i })))
      assert.deepEqual(replies.map(r => r.return), [1, 2, 3, 4, 5].map(i => ({ echo: { i } })), 'in order, each its own reply')
      assert.equal(m.connections, 1)
      assert.equal(m.caps, 1)
      // QEMU restarted: the old connection is gone; the next command connects again
      for (const sock of m.sockets) sock.destroy()
      // the command in flight when the close is noticed fails with a typed error; one sent after it reconnects
      // (the close itself, or the socket's reset: what the told runner takes for "QEMU unreachable")
      await s.command('query-y').then(() => {}, (err: Error & { code?: string }) => {
        assert.ok(err.name === 'HypervisorOutputError' || err.code === 'ECONNRESET' || err.code === 'EPIPE', `${err.name} ${err.code}`)
      })
      const r = await s.command('query-z')
      assert.deepEqual(r.return, { echo: null })
      assert.equal(m.connections, 2)
    } finally { s.close(); m.server.close() }
  })

  it('a hung monitor: HypervisorTimeoutError after timeoutMs (virtual), then a fresh connection; a reply for another id: HypervisorOutputError', async () => {
    const path = join(dir, `q${n++}.sock`)
    const m = await monitor(path)
    const clock = new ManualClock()
    const s = new QmpSession({ clock }, { socket: path, timeoutMs: 3000 })
    try {
      assert.deepEqual((await s.command('a')).return, { echo: null })
      m.mode = 'silent'
      const p = s.command('b')
      const rejected = assert.rejects(p, { name: 'HypervisorTimeoutError' })
      for (let i = 0; m.commands.length < 2 && i < 100_000; i++) await new Promise(resolve => setImmediate(resolve))
      clock.advance(3000)
      await rejected
      m.mode = 'wrong-id'
      await assert.rejects(s.command('c'), { name: 'HypervisorOutputError', message: /while none was awaited/ })
      assert.equal(m.connections, 2, 'the timed-out connection was dropped')
      m.mode = 'ok'
      assert.deepEqual((await s.command('d')).return, { echo: null })
      assert.equal(m.connections, 3)
    } finally { s.close(); m.server.close() }
  })

  it('disconnect(): the monitor is freed after the queued commands; the next command connects again', async () => {
    const path = join(dir, `q${n++}.sock`)
    const m = await monitor(path)
    const s = new QmpSession({ clock: new ManualClock() }, { socket: path })
    try {
      const closed = new Promise<void>(resolve => { m.server.once('connection', (sock: Socket) => { sock.once('close', () => { resolve() }) }) })
      const a = s.command('a')
      await s.disconnect()
      assert.deepEqual((await a).return, { echo: null }, 'queued before the disconnect: answered first')
      await closed
      assert.deepEqual((await s.command('b')).return, { echo: null })
      assert.equal(m.connections, 2)
      assert.equal(m.caps, 2)
    } finally { s.close(); m.server.close() }
  })

  it('closed: commands fail with HypervisorOutputError; an aborted signal: AbortedError', async () => {
    const path = join(dir, `q${n++}.sock`)
    const m = await monitor(path)
    const s = new QmpSession({ clock: new ManualClock() }, { socket: path })
    const ac = new AbortController()
    ac.abort()
    await assert.rejects(s.command('a', undefined, ac.signal), { name: 'AbortedError' })
    s.close()
    await assert.rejects(s.command('a'), { name: 'HypervisorOutputError', message: /session closed/ })
    m.server.close()
  })
})
