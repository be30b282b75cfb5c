/**
 * The pipe to one watchdog process. The real one spawns `daemon/watchdog/main.ts` detached
 * (POSIX: its own session, so a Ctrl-C or SIGHUP aimed at the daemon's terminal does not kill
 * the fencing; Windows: outside the job object that dies with the daemon — see
 * common/platform/process.ts) with an IPC channel; tests substitute an in-process fake.
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { WatchdogRequest } from './messages.ts'
import { isSource, siblingModule } from '../../common/module-path.ts'
import { hostOs, independentChildOptions } from '../../common/platform/index.ts'

export interface WatchdogChannel {
  readonly pid: number | undefined
  send: (msg: WatchdogRequest) => void
  onMessage: (fn: (m: unknown) => void) => void
  onExit: (fn: (code: number | null, signal: string | null) => void) => void
  /** Lines the process wrote on stderr (crash traces). */
  onStderr: (fn: (line: string) => void) => void
  /** SIGKILL (a hung watchdog). */
  kill: () => void
  /** Lets the daemon exit while the watchdog keeps running: closes IPC, unrefs the child. */
  release: () => void
}

export interface SpawnOptions {
  retryMs: number
  maxAttempts: number
  parentPollMs: number
  logFile?: string
  stateFile?: string
}

export type SpawnWatchdog = (o: SpawnOptions) => WatchdogChannel

export const WATCHDOG_MAIN = fileURLToPath(siblingModule(import.meta.url, './main'))
/** The repository root, where `--import tsx` resolves. */
const ROOT = fileURLToPath(new URL('../../', import.meta.url))

export function watchdogArgv (o: SpawnOptions): string[] {
  return [
    process.execPath, ...(isSource(import.meta.url) ? ['--import', 'tsx'] : []), WATCHDOG_MAIN,
    '--retry-ms', String(o.retryMs), '--max-attempts', String(o.maxAttempts), '--parent-poll-ms', String(o.parentPollMs),
    ...(o.logFile !== undefined ? ['--log-file', o.logFile] : []),
    ...(o.stateFile !== undefined ? ['--state-file', o.stateFile] : [])
  ]
}

export const spawnWatchdogProcess: SpawnWatchdog = (o) => {
  const [cmd, ...args] = watchdogArgv(o)
  const child = spawn(cmd as string, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe', 'ipc'], ...independentChildOptions(hostOs) })
  let errBuf = ''
  const errFns: Array<(l: string) => void> = []
  child.stderr?.setEncoding('utf8')
  child.stderr?.on('data', (s: string) => {
    errBuf = (errBuf + s).slice(-65536)
    for (let nl = errBuf.indexOf('\n'); nl >= 0; nl = errBuf.indexOf('\n')) {
      const line = errBuf.slice(0, nl)
      errBuf = errBuf.slice(nl + 1)
      for (const f of errFns) f(line)
    }
  })
  child.on('error', () => { /* reported through exit */ })
  return {
    get pid () { return child.pid },
    send: (msg) => { if (child.connected) child.send(msg, (err) => { if (err != null) { /* the exit handler deals with a dead child */ } }) },
    onMessage: (fn) => { child.on('message', fn) },
    onExit: (fn) => { child.on('exit', (code, signal) => { fn(code, signal) }) },
    onStderr: (fn) => { errFns.push(fn) },
    kill: () => { try { child.kill('SIGKILL') } catch { /* gone */ } },
    release: () => {
      if (child.connected) child.disconnect()
      child.stderr?.destroy()
      child.unref()
    }
  }
}
