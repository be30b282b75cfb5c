/**
 * The watchdog process: `node --import tsx daemon/watchdog/main.ts [--retry-ms N]
 * [--max-attempts N] [--parent-poll-ms N] [--log-file PATH] [--state-file PATH]`, spawned by the daemon with an
 * IPC channel (client.ts). It holds fence deadlines and turns VMs off by itself when one
 * passes, whatever the daemon's event loop is doing (SIGSTOP, GC storm, crash).
 *
 *   IPC message ──decode──▶ WatchdogCore.step(now) ──▶ reports (IPC) + events (fence, exit)
 *   timer at core.nextDeadline() ──▶ WatchdogCore.tick(now)
 *   fence event ──▶ executeFence(action) ──▶ step(fence-done)
 *   IPC disconnect / parent pid changed / SIGTERM ──▶ step(parent-gone): fence what is armed
 *   when due (never earlier, never later), then exit
 *
 * With --state-file, the armed deadlines are kept in that file and a new watchdog takes them
 * over from its predecessor (handover.ts: SIGUSR2 on POSIX, a polled request file on Windows),
 * so a daemon restart neither loses nor duplicates them.
 *
 * Time is CLOCK_MONOTONIC (process.hrtime): the same clock for every process on the host.
 * Reports go over IPC (asynchronous: a stopped daemon that does not read cannot block this
 * process, as a full stdout pipe would) and to the log file when one is given.
 */
import { appendFileSync } from 'node:fs'
import { setPriority } from 'node:os'
import { systemClock } from '../../common/clock.ts'
import { errorMessage, VmeshError } from '../../common/errors.ts'
import { executeFence } from '../hypervisor/fence.ts'
import { createRunner } from '../hypervisor/run.ts'
import { WatchdogCore, type CoreInput, type CoreOutput } from './core.ts'
import { decodeRequest, WATCHDOG_PROTOCOL_VERSION, WatchdogProtocolError, type WatchdogReport } from './messages.ts'
import { HANDOVER_SIGNAL, handoverRequested, takeOver, writeHandoverState } from './handover.ts'
import { handoverMechanism, hostOs } from '../../common/platform/index.ts'

function monoNow (): number { return Number(process.hrtime.bigint()) / 1e6 }

function argValue (name: string): string | undefined {
  const i = process.argv.indexOf(name)
  return i >= 0 ? process.argv[i + 1] : undefined
}

function numArg (name: string, def: number): number {
  const v = argValue(name)
  const n = v === undefined ? def : Number(v)
  return Number.isFinite(n) && n > 0 ? n : def
}

const logFile = argValue('--log-file')
const stateFile = argValue('--state-file')
const parentPollMs = numArg('--parent-poll-ms', 200)
const core = new WatchdogCore({ retryMs: numArg('--retry-ms', 500), maxAttempts: numArg('--max-attempts', 5) })
const run = createRunner(systemClock)
const initialPpid = process.ppid
let timer: NodeJS.Timeout | undefined
let exiting = false

function log (fields: Record<string, unknown>): void {
  if (logFile === undefined) return
  try { appendFileSync(logFile, `${JSON.stringify({ time: new Date().toISOString(), pid: process.pid, ...fields })}\n`) } catch { /* logging must not stop fencing */ }
}

function send (r: WatchdogReport, done?: () => void): void {
  if (r.type === 'fenced' || r.type === 'fence-failed' || r.type === 'error') log({ ...r })
  if (process.send === undefined || !process.connected) { done?.(); return }
  try {
    process.send(r, undefined, {}, () => { done?.() })
  } catch {
    done?.()
  }
}

let savedState = ''
function saveState (): void {
  if (stateFile === undefined) return
  const arms = core.snapshot()
  const text = JSON.stringify(arms)
  if (text === savedState) return
  try { writeHandoverState(stateFile, process.pid, arms, hostOs); savedState = text } catch (err) { log({ type: 'state-write-failed', error: errorMessage(err) }) }
}

function apply (out: CoreOutput): void {
  let pending = out.send.length
  const exitEvent = out.events.some(e => e.type === 'exit')
  const maybeExit = (): void => { if (exitEvent && pending === 0) exit() }
  // a report that cannot be flushed (daemon stopped, socket full) must not keep us alive
  if (exitEvent) setTimeout(exit, 1000)
  for (const r of out.send) send(r, () => { pending--; maybeExit() })
  for (const e of out.events) {
    if (e.type === 'fence') {
      log({ type: 'fencing', vm: e.vm, attempt: e.attempt, startLateMs: Math.round((monoNow() - e.dueAt) * 1000) / 1000 })
      executeFence(e.action, { run, clock: systemClock }).then(
        outcome => { input({ type: 'fence-done', vm: e.vm, attempt: e.attempt, ok: true, outcome }) },
        (err: unknown) => {
          const code = err instanceof VmeshError ? err.code : 'ERR_FENCE'
          input({ type: 'fence-done', vm: e.vm, attempt: e.attempt, ok: false, code, message: errorMessage(err).slice(0, 2000) })
        }
      )
    }
  }
  saveState()
  schedule()
  maybeExit()
}

function input (i: CoreInput): void { apply(core.step(monoNow(), i)) }

function schedule (): void {
  if (timer !== undefined) clearTimeout(timer)
  timer = undefined
  const next = core.nextDeadline()
  if (next === undefined || exiting) return
  // Node timers may fire a little early against hrtime; tick() re-checks and we re-arm
  timer = setTimeout(() => { timer = undefined; apply(core.tick(monoNow())) }, Math.max(0, Math.ceil(next - monoNow())))
}

function exit (): void {
  if (exiting) return
  exiting = true
  log({ type: 'exit', orphaned: core.isOrphaned })
  if (timer !== undefined) clearTimeout(timer)
  process.exit(0)
}

let parentGone = false
function onParentGone (why: string): void {
  if (parentGone) return
  parentGone = true
  log({ type: 'parent-gone', why, armed: core.armed() })
  input({ type: 'parent-gone' })
}

if (process.send === undefined) {
  process.stderr.write('daemon/watchdog/main.ts must be spawned with an IPC channel (see daemon/watchdog/client.ts)\n')
  process.exit(2)
}

process.stderr.on('error', () => {})
process.on('message', (m: unknown) => {
  let req
  try {
    req = decodeRequest(m)
  } catch (err) {
    send({ type: 'error', code: err instanceof WatchdogProtocolError ? err.code : 'ERR_WATCHDOG_PROTOCOL', message: errorMessage(err) })
    return
  }
  input({ type: 'request', req })
})
process.on('disconnect', () => { onParentGone('ipc-disconnect') })
process.on('SIGTERM', () => { onParentGone('SIGTERM') })
function handOver (): void {
  // a successor took over: leave it our deadlines and go, without fencing anything
  if (stateFile === undefined) return
  savedState = ''
  saveState()
  log({ type: 'handed-over', armed: core.armed().length })
  process.exit(0)
}
// Windows has no SIGUSR2 (listening for it throws there): the successor's request file is polled below
if (handoverMechanism(hostOs) === 'signal') process.on(HANDOVER_SIGNAL, handOver)
process.on('SIGINT', () => {})
process.on('SIGHUP', () => {})
if (hostOs === 'win32') process.on('SIGBREAK', () => {})
process.on('uncaughtException', (err) => {
  // dying would drop every deadline; the core's state is intact, so keep going
  log({ type: 'uncaught', error: errorMessage(err) })
})
setInterval(() => {
  if (stateFile !== undefined && handoverRequested(stateFile, process.pid)) { handOver(); return }
  if (process.ppid !== initialPpid) { onParentGone('reparented'); return }
  try { process.kill(initialPpid, 0) } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') onParentGone('parent-exited')
  }
}, parentPollMs)

// ahead of ordinary work on a busy host (fence commands inherit it); needs privileges, else skipped
let nice: number | undefined
try { setPriority(0, -10); nice = -10 } catch { /* not permitted: stay at the default */ }
log({ type: 'start', ppid: initialPpid, nice })
const inherited = stateFile === undefined ? [] : await takeOver(stateFile, process.pid, { waitMs: 2000, log, os: hostOs })
apply(core.adopt(monoNow(), inherited))
send({ type: 'hello', version: WATCHDOG_PROTOCOL_VERSION, pid: process.pid, monoMs: monoNow(), inherited })
