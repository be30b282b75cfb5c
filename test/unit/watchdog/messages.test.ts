import assert from 'node:assert/strict'
import { decodeReport, decodeRequest } from '../../../daemon/watchdog/messages.ts'

const action = { kind: 'kill', pidFile: '/r/web01.pid', match: 'guest=web01', timeoutMs: 5000 }

describe('watchdog/messages', () => {
  it('decodes valid requests and reports', () => {
    assert.deepEqual(decodeRequest({ type: 'arm', seq: 1, vm: 'web01', deadlineMonoMs: 123.5, action }), { type: 'arm', seq: 1, vm: 'web01', deadlineMonoMs: 123.5, action })
    assert.deepEqual(decodeRequest({ type: 'disarm', seq: 2, vm: 'web01', extra: 1 }), { type: 'disarm', seq: 2, vm: 'web01' })
    assert.deepEqual(decodeRequest({ type: 'ping', id: 0 }), { type: 'ping', id: 0 })
    assert.deepEqual(decodeRequest({ type: 'bye' }), { type: 'bye' })
    assert.deepEqual(decodeReport({ type: 'fenced', vm: 'a', seq: 1, monoMs: 5, outcome: 'off', attempt: 1, lateMs: 0.5 }), { type: 'fenced', vm: 'a', seq: 1, monoMs: 5, outcome: 'off', attempt: 1, lateMs: 0.5 })
  })

  it('refuses malformed requests with WatchdogProtocolError', () => {
    const bad: unknown[] = [
      null, [], 'arm', { type: 'reboot' },
      { type: 'arm', seq: 1, vm: 'a', deadlineMonoMs: Number.NaN, action },
      { type: 'arm', seq: 1, vm: 'a', deadlineMonoMs: Infinity, action },
      { type: 'arm', seq: 1, vm: 'a', deadlineMonoMs: '5', action },
      { type: 'arm', seq: -1, vm: 'a', deadlineMonoMs: 5, action },
      { type: 'arm', seq: 1.5, vm: 'a', deadlineMonoMs: 5, action },
      { type: 'arm', seq: 1, vm: '', deadlineMonoMs: 5, action },
      { type: 'arm', seq: 1, vm: 'x'.repeat(257), deadlineMonoMs: 5, action },
      { type: 'arm', seq: 1, vm: 'a', deadlineMonoMs: 5, action: { ...action, kind: 'nuke' } },
      { type: 'arm', seq: 1, vm: 'a', deadlineMonoMs: 5 },
      { type: 'disarm', seq: 1 },
      { type: 'ping' }
    ]
    for (const b of bad) assert.throws(() => decodeRequest(b), { name: 'WatchdogProtocolError', code: 'ERR_WATCHDOG_PROTOCOL' }, JSON.stringify(b)?.slice(0, 60))
  })

  it('refuses malformed reports', () => {
    for (const b of [{ type: 'hello', version: 1, pid: 1 }, { type: 'fenced', vm: 'a', seq: 1, monoMs: 5, outcome: 'maybe', attempt: 1, lateMs: 0 }, { type: 'fence-failed', vm: 'a', seq: 1, monoMs: 5, attempt: 1, code: 'x', message: 'y' }, { type: 'x' }]) {
      assert.throws(() => decodeReport(b), { name: 'WatchdogProtocolError' })
    }
  })
})
