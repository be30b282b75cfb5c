/**
 * A sender's lifetime AbortSignal must not accumulate anything per session or per awaited
 * reply. The chaos soak's host daemons grew steadily; heap snapshots showed each sender's
 * lifetime signal holding one more dependant (a WeakRef in Node 20's internal
 * kDependantSignals set, only dropped when the signal aborts) per AbortSignal.any() call —
 * one per dial and one per awaited reply, for as long as the sender runs.
 */
import assert from 'node:assert/strict'
import { getEventListeners } from 'node:events'
import { ManualClock } from '../../../common/clock.ts'
import { TargetSender } from '../../../daemon/replication/sender.ts'
import type { SenderSource } from '../../../daemon/replication/source-view.ts'
import type { Logger } from '../../../daemon/log.ts'
import { FakeStream } from './fake-stream.ts'
import { FileKind } from '../../../protocol/delta/index.ts'

/** A logger that keeps the `err` of every "replication session ended" line. */
function recordingLog (): { log: Logger, ended: string[] } {
  const ended: string[] = []
  const log = { info: () => {}, warn: () => {}, error: () => {}, debug: (o: { err?: string }, msg: string) => { if (msg === 'replication session ended') ended.push(o.err ?? '') } } as unknown as Logger
  return { log, ended }
}

/** How many dependant signals Node keeps for `signal` (Node-internal; 0 where the field does not exist). */
function dependants (signal: AbortSignal): number {
  const sym = Object.getOwnPropertySymbols(signal).find(s => s.description === 'kDependantSignals')
  const set = sym === undefined ? undefined : (signal as unknown as Record<symbol, Set<unknown> | undefined>)[sym]
  return set?.size ?? 0
}

function source (): SenderSource {
  return {
    name: 'vm1',
    // never stat'ed successfully: the hello announces size 0, which is all these tests need
    files: [{ fileId: 1, path: '/nonexistent/vmesh-test/vm1.img', kind: FileKind.Disk }],
    blockSize: 4096,
    vm: { seed: 'full' },
    dirty: { dirtyBytes: async () => 0, inFlightBytes: async () => 0 }
  } as unknown as SenderSource
}

describe('replication/TargetSender lifetime signal', function () {
  this.timeout(30_000)

  it('stays bounded over many sessions whose target never answers (dial + awaited reply each)', async () => {
    const clock = new ManualClock()
    const { log, ended } = recordingLog()
    let dials = 0
    const sender = new TargetSender({
      clock,
      log,
      source: source(),
      dial: async (_peer, signal) => {
        dials++
        assert.equal(signal.aborted, false)
        return new FakeStream()
      }
    }, { target: 'b', nodeName: 'a' })
    sender.start()
    const signal = (sender as unknown as { ac: AbortController }).ac.signal
    // each session: dial, hello, no targetState within 30 s, then a backoff of at most 5 s
    // the hello stats the disk file (real I/O, which virtual time does not wait for): step until
    // enough sessions ran, giving the event loop a turn per step so the stat's callback lands —
    // without it 2000 steps could run out before the thread pool answered (45-55 of 60 sessions
    // seen on a busy machine)
    for (let i = 0; i < 20_000 && dials < 60; i++) {
      await clock.advanceAsync(5_000)
      await new Promise(resolve => setImmediate(resolve))
    }
    assert.ok(dials >= 60, `only ${dials} sessions ran: ${JSON.stringify(ended.slice(0, 3))}`)
    const waited = ended.filter(e => /no targetState .*within 30000 ms/.test(e)).length
    assert.ok(waited >= 50, `only ${waited} sessions timed out waiting for the target: ${JSON.stringify(ended.slice(0, 3))}`)
    assert.ok(dependants(signal) <= 1, `the lifetime signal holds ${dependants(signal)} dependant signals after ${dials} sessions`)
    assert.ok(getEventListeners(signal, 'abort').length <= 2, `${getEventListeners(signal, 'abort').length} abort listeners on the lifetime signal`)
    await sender.stop()
    assert.equal(getEventListeners(signal, 'abort').length, 0)
  })

  it('stop() ends a session that waits for the target, without advancing time', async () => {
    const clock = new ManualClock()
    const { log } = recordingLog()
    let dialSignal: AbortSignal | undefined
    const sender = new TargetSender({
      clock,
      log,
      source: source(),
      dial: async (_peer, signal) => { dialSignal = signal; return new FakeStream() }
    }, { target: 'b', nodeName: 'a' })
    sender.start()
    await clock.advanceAsync(1000)
    assert.ok(dialSignal !== undefined)
    // the session waits for targetState (30 s) on a signal linked to the lifetime one
    await sender.stop()
  })
})
