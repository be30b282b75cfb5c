/**
 * Runs one external command: argv array (never a shell, unless argv[0] is the shell itself),
 * a timeout, an AbortSignal, bounded output. The child gets its own process group so a
 * timeout or abort kills the whole tree (a `sh -c` script's children included) instead of
 * leaving grandchildren that hold the pipes open.
 *
 * Non-zero exit is not an error here: drivers decide what an exit code means (`status` uses
 * exit 1 for "not running"). Only "could not run", "timed out" and "aborted" throw.
 */
import { spawn } from 'node:child_process'
import type { Clock } from '../../common/clock.ts'
import { systemClock } from '../../common/clock.ts'
import { AbortedError } from '../../common/errors.ts'
import { HypervisorSpawnError, HypervisorTimeoutError } from './errors.ts'

export interface RunOptions {
  /** Working directory. @default process.cwd() */
  cwd?: string
  /** Kill the command (and its process group) after this long. */
  timeoutMs: number
  signal?: AbortSignal
  /** Added to the inherited environment. */
  env?: Record<string, string>
  /** Written to stdin, which is then closed. @default stdin is closed at once */
  input?: string
  /** Bytes of stdout kept; more sets `truncated`. @default 16 MiB */
  maxStdoutBytes?: number
  /** Windows: hand the arguments to CreateProcess unquoted (cmd.exe /s /c "..."). @default false */
  windowsVerbatimArguments?: boolean
}

export interface RunResult {
  /** Exit status, or null when the command died of a signal. */
  code: number | null
  stdout: string
  /** The last 64 KiB of stderr. */
  stderr: string
  /** stdout was longer than `maxStdoutBytes` and was cut. */
  truncated: boolean
}

/** The injectable seam: drivers call this, tests pass a fake that replays recorded output. */
export type CommandRunner = (argv: string[], opts: RunOptions) => Promise<RunResult>

const STDERR_KEEP = 64 * 1024
/** After the kill, how long to wait for the pipes to close before giving up on them. */
const CLOSE_GRACE_MS = 2000
/** After a normal exit, how long to wait for output still in the pipes. */
const EXIT_DRAIN_MS = 250

/** A runner whose timeouts run on `clock`. */
export function createRunner (clock: Clock = systemClock): CommandRunner {
  return async (argv, opts) => await runCommand(argv, opts, clock)
}

export const defaultRunner: CommandRunner = createRunner(systemClock)

async function runCommand (argv: string[], opts: RunOptions, clock: Clock): Promise<RunResult> {
  const [cmd, ...args] = argv
  if (cmd === undefined || cmd === '') throw new HypervisorSpawnError('(empty argv)', { cause: new Error('empty command') })
  if (opts.signal?.aborted === true) throw new AbortedError(`${cmd} not started: aborted`, { cause: opts.signal.reason })
  const maxOut = opts.maxStdoutBytes ?? 16 * 1024 * 1024
  const win = process.platform === 'win32'
  return await new Promise<RunResult>((resolve, reject) => {
    let child
    try {
      child = spawn(cmd, args, {
        cwd: opts.cwd,
        env: opts.env !== undefined ? { ...process.env, ...opts.env } : process.env,
        stdio: ['pipe', 'pipe', 'pipe'],
        detached: !win,
        windowsHide: true,
        ...(opts.windowsVerbatimArguments === true ? { windowsVerbatimArguments: true } : {})
      })
    } catch (err) {
      reject(new HypervisorSpawnError(cmd, { cause: err })); return
    }
    const out: Buffer[] = []
    let outBytes = 0
    let truncated = false
    let err = ''
    let settled = false
    let failure: Error | undefined
    let graceTimer: ReturnType<Clock['setTimeout']> | undefined

    const killTree = (): void => {
      try {
        if (!win && child.pid !== undefined) process.kill(-child.pid, 'SIGKILL')
        else child.kill('SIGKILL')
      } catch { /* already gone */ }
    }
    const finish = (code: number | null): void => {
      if (settled) return
      settled = true
      clock.clearTimeout(timer)
      clock.clearTimeout(graceTimer)
      opts.signal?.removeEventListener('abort', onAbort)
      if (failure !== undefined) { reject(failure); return }
      resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: err, truncated })
    }
    const fail = (e: Error): void => {
      if (failure !== undefined || settled) return
      failure = e
      killTree()
      // a grandchild that ignores the kill could keep the pipes open: do not wait forever
      graceTimer = clock.setTimeout(() => { finish(null) }, CLOSE_GRACE_MS)
    }
    const onAbort = (): void => { fail(new AbortedError(`${cmd} aborted`, { cause: opts.signal?.reason })) }
    const timer = clock.setTimeout(() => { fail(new HypervisorTimeoutError(cmd, opts.timeoutMs)) }, opts.timeoutMs)
    opts.signal?.addEventListener('abort', onAbort, { once: true })

    child.stdout.on('data', (b: Buffer) => {
      if (outBytes >= maxOut) { truncated = true; return }
      const keep = b.length <= maxOut - outBytes ? b : b.subarray(0, maxOut - outBytes)
      if (keep.length < b.length) truncated = true
      out.push(keep)
      outBytes += keep.length
    })
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (s: string) => {
      err += s
      if (err.length > 2 * STDERR_KEEP) err = err.slice(err.length - STDERR_KEEP)
    })
    child.stdin.on('error', () => { /* the command may exit without reading its input */ })
    child.stdin.end(opts.input ?? '')
    child.on('error', (e) => {
      if (failure === undefined && !settled) { failure = new HypervisorSpawnError(cmd, { cause: e }); finish(null) }
    })
    const done = (code: number | null): void => {
      if (err.length > STDERR_KEEP) err = err.slice(err.length - STDERR_KEEP)
      finish(code)
    }
    child.on('close', done)
    child.on('exit', (code) => {
      // a background grandchild (`daemon &` in a start script) may inherit the pipes and keep
      // them open for its whole life: take what has arrived shortly after the exit and go
      if (settled || failure !== undefined) return
      graceTimer = clock.setTimeout(() => {
        child.stdout.destroy(); child.stderr.destroy()
        done(code)
      }, EXIT_DRAIN_MS)
    })
  })
}
