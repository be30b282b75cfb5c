import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { handoverRequested, handoverRequestFile, takeOver, writeHandoverState } from '../../../daemon/watchdog/handover.ts'
import type { InheritedArm } from '../../../daemon/watchdog/messages.ts'

const arm: InheritedArm = { vm: 'web 01', seq: 3, deadlineMonoMs: 1234.5, action: { kind: 'command', off: { kind: 'shell', command: 'stop.cmd "web 01"' }, timeoutMs: 5000 } }

describe('watchdog/handover across platforms', () => {
  let dir: string
  beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'vmesh-handover-')) })
  afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

  /** A predecessor (pid 100) that obeys a request file the way main.ts does: final state, then exit. */
  function predecessor (file: string, obey: boolean): { alive: (pid: number) => boolean, poll: () => void } {
    let alive = true
    return {
      alive: (pid) => pid === 100 && alive,
      poll: () => { if (obey && alive && handoverRequested(file, 100)) { writeHandoverState(file, 100, [arm], 'win32'); alive = false } }
    }
  }

  it('win32: asks through the request file (no SIGUSR2), adopts the final state, removes the request', async () => {
    const file = join(dir, 'watchdog.state')
    writeHandoverState(file, 100, [], 'win32')
    const p = predecessor(file, true)
    const logs: Array<Record<string, unknown>> = []
    let t = 0
    const arms = await takeOver(file, 200, {
      os: 'win32', waitMs: 2000, log: (f) => { logs.push(f) },
      alive: p.alive, isWatchdog: () => undefined,
      signal: () => { throw new Error('no signals on windows') },
      sleep: async (ms) => { t += ms; p.poll() }, now: () => t
    })
    assert.deepEqual(arms, [arm])
    assert.equal(logs.at(-1)?.type, 'handover')
    assert.equal(existsSync(handoverRequestFile(file)), false)
  })

  it('win32: an unanswered request (a reused pid, or a hung watchdog) adopts the deadlines rather than drop them', async () => {
    const file = join(dir, 'watchdog.state')
    writeHandoverState(file, 100, [arm], 'win32')
    const p = predecessor(file, false)
    const logs: Array<Record<string, unknown>> = []
    let t = 0
    const arms = await takeOver(file, 200, { os: 'win32', waitMs: 500, log: (f) => { logs.push(f) }, alive: p.alive, isWatchdog: () => undefined, sleep: async (ms) => { t += ms }, now: () => t })
    assert.deepEqual(arms, [arm])
    assert.equal(logs.at(-1)?.type, 'handover-unanswered')
  })

  it('linux: signals the predecessor (never writes a request file); a live non-watchdog pid is not signalled', async () => {
    const file = join(dir, 'watchdog.state')
    writeHandoverState(file, 100, [], 'linux')
    const sent: number[] = []
    let alive = true
    let t = 0
    const arms = await takeOver(file, 200, {
      os: 'linux', waitMs: 2000, log: () => {}, alive: (pid) => pid === 100 && alive, isWatchdog: () => true,
      signal: (pid) => { sent.push(pid); writeHandoverState(file, 100, [arm], 'linux'); alive = false },
      request: () => { throw new Error('linux uses the signal') },
      sleep: async (ms) => { t += ms }, now: () => t
    })
    assert.deepEqual(sent, [100])
    assert.deepEqual(arms, [arm])
    writeHandoverState(file, 100, [arm], 'linux')
    const reused = await takeOver(file, 200, { os: 'linux', waitMs: 2000, log: () => {}, alive: () => true, isWatchdog: () => false, signal: () => { throw new Error('must not signal a stranger') } })
    assert.deepEqual(reused, [arm])
  })

  it('a request file addressed to another pid, or written by ourselves, is ignored', async () => {
    const file = join(dir, 'watchdog.state')
    await writeFile(handoverRequestFile(file), JSON.stringify({ from: 300, to: 101 }))
    assert.equal(handoverRequested(file, 100), false)
    await writeFile(handoverRequestFile(file), JSON.stringify({ from: 100, to: 100 }))
    assert.equal(handoverRequested(file, 100), false)
    await writeFile(handoverRequestFile(file), 'garbage')
    assert.equal(handoverRequested(file, 100), false)
  })
})
