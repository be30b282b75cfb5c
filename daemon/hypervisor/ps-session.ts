/**
 * One long-lived PowerShell child for the Hyper-V driver, instead of one powershell.exe per
 * call (a cold powershell.exe + Hyper-V module load costs about a second of CPU).
 *
 * Flow: the child is `powershell.exe -NoProfile -NonInteractive -Command -`, which reads
 * statements from stdin and runs each complete line. Every request is ONE ASCII line:
 *
 *   & { <runner> } '<id>' '<base64 of the UTF-8 script>'
 *
 * The runner decodes the script, runs it as a script block with $ErrorActionPreference Stop,
 * and prints exactly one frame line: `<SENTINEL> <id> <base64 of UTF-8 JSON {id,code,out,err,errorId}>`.
 * Base64 on both directions keeps the console code page out of the way (a VM name with
 * non-ASCII characters survives) and makes a frame impossible to forge from a cmdlet's own
 * output; anything else the child prints (warnings, a banner) is ignored.
 *
 * Requests run one at a time (one runspace). A request that times out, is aborted, or during
 * which the child dies kills the child; the caller gets a typed error and the next request
 * spawns a fresh child. The child is unref'd while idle so a CLI process can exit.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import type { Clock, TimerHandle } from '../../common/clock.ts'
import { AbortedError } from '../../common/errors.ts'
import { HypervisorOutputError, HypervisorSpawnError, HypervisorTimeoutError, PowerShellSessionError } from './errors.ts'

export const FRAME_SENTINEL = '<<vmesh-ps-reply>>'

/**
 * Runs the decoded script; a script signals a status with `vmeshExit N` (a throw the runner
 * recognises, so `exit` never ends the long-lived child). One line: `-Command -` executes
 * stdin line by line and a multi-line block is parsed unreliably by Windows PowerShell 5.1.
 */
export const RUNNER = [
  'param($i, $b)',
  "$ErrorActionPreference = 'Stop'",
  "$ProgressPreference = 'SilentlyContinue'",
  'Remove-TypeData System.Array -ErrorAction SilentlyContinue',
  "function vmeshExit([int]$c) { throw ('vmesh-exit:' + $c) }",
  "$code = 0; $out = ''; $err = ''; $eid = ''",
  // try and catch in ONE element: a `;` between them ends the try statement (a parse error)
  'try { $sb = [ScriptBlock]::Create([Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($b))); $out = (@(& $sb) | ForEach-Object { [string]$_ }) -join "`n" } ' +
    "catch { if ($_.Exception.Message -match '^vmesh-exit:(\\d+)$') { $code = [int]$Matches[1] } else { $code = 1; $err = $_.Exception.Message; $eid = [string]$_.FullyQualifiedErrorId } }",
  '$r = [pscustomobject]@{ id = $i; code = $code; out = $out; err = $err; errorId = $eid } | ConvertTo-Json -Compress',
  `[Console]::Out.WriteLine('${FRAME_SENTINEL} ' + $i + ' ' + [Convert]::ToBase64String([Text.Encoding]::UTF8.GetBytes($r)))`,
  '[Console]::Out.Flush()'
].join('; ')

/** The one line sent for a request. */
export function requestLine (id: string, script: string): string {
  return `& { ${RUNNER} } '${id}' '${Buffer.from(script, 'utf8').toString('base64')}'\n`
}

export interface PsReply {
  /** 0 ok, 1 a PowerShell exception (err, errorId), other: the script's vmeshExit status. */
  code: number
  /** The script's pipeline output, each object as a string, joined with \n. */
  out: string
  err: string
  errorId: string
}

/** Decodes one frame's payload; throws HypervisorOutputError on anything malformed. */
export function decodeFrame (b64: string, id: string): PsReply {
  let v: unknown
  try { v = JSON.parse(Buffer.from(b64, 'base64').toString('utf8')) } catch (err) { throw new HypervisorOutputError('powershell session', 'reply frame is not JSON', { cause: err }) }
  if (typeof v !== 'object' || v === null) throw new HypervisorOutputError('powershell session', 'reply frame is not an object')
  const o = v as Record<string, unknown>
  if (o.id !== id) throw new HypervisorOutputError('powershell session', `reply for request ${String(o.id)}, expected ${id}`)
  if (typeof o.code !== 'number' || !Number.isInteger(o.code)) throw new HypervisorOutputError('powershell session', 'reply frame has no integer code')
  const str = (x: unknown): string => typeof x === 'string' ? x : x === null || x === undefined ? '' : String(x)
  return { code: o.code, out: str(o.out), err: str(o.err), errorId: str(o.errorId) }
}

export interface PowerShellSessionInit {
  /** The PowerShell executable (tests pass a scripted fake). @default 'powershell.exe' */
  executable?: string
  /** Working directory of the child. */
  cwd?: string
}

export interface PsRunOptions { timeoutMs: number, signal?: AbortSignal }

interface Pending {
  id: string
  resolve: (r: PsReply) => void
  reject: (e: Error) => void
  timer: TimerHandle | undefined
  onAbort: () => void
  signal: AbortSignal | undefined
}

const STDERR_KEEP = 4096
const MAX_LINE = 64 * 1024 * 1024

export class PowerShellSession {
  private child: ChildProcessWithoutNullStreams | undefined
  private pending: Pending | undefined
  private queue: Promise<unknown> = Promise.resolve()
  private buf = ''
  private stderr = ''
  private spawned = 0
  readonly executable: string

  constructor (private readonly components: { clock: Clock }, private readonly init: PowerShellSessionInit = {}) {
    this.executable = init.executable ?? 'powershell.exe'
  }

  /** How many children were spawned so far (one for many requests unless one died). */
  get spawnCount (): number { return this.spawned }

  /** The current child's pid, if one runs. */
  get pid (): number | undefined { return this.child?.pid }

  /** Runs `script`; requests are serialized. */
  async run (script: string, opts: PsRunOptions): Promise<PsReply> {
    const next = this.queue.then(async () => await this.runNow(script, opts))
    this.queue = next.catch(() => {})
    return await next
  }

  /** Ends the child (stdin closed, then killed). A later run() starts a new one. */
  async close (): Promise<void> {
    await this.queue
    this.kill()
  }

  private ensureChild (): ChildProcessWithoutNullStreams {
    if (this.child !== undefined) return this.child
    let child: ChildProcessWithoutNullStreams
    try {
      child = spawn(this.executable, ['-NoProfile', '-NonInteractive', '-Command', '-'], {
        ...(this.init.cwd !== undefined ? { cwd: this.init.cwd } : {}),
        stdio: ['pipe', 'pipe', 'pipe'],
        windowsHide: true
      })
    } catch (err) { throw new HypervisorSpawnError(this.executable, { cause: err }) }
    this.spawned++
    this.child = child
    this.buf = ''
    this.stderr = ''
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (s: string) => { if (this.child === child) this.onStdout(s) })
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (s: string) => {
      if (this.child !== child) return
      this.stderr += s
      if (this.stderr.length > 2 * STDERR_KEEP) this.stderr = this.stderr.slice(-STDERR_KEEP)
    })
    child.stdin.on('error', () => { /* reported through exit */ })
    const gone = (detail: string, cause?: unknown): void => {
      if (this.child !== child) return
      this.child = undefined
      this.failPending(new PowerShellSessionError(this.executable, `${detail}${this.stderr.trim() !== '' ? `: ${this.stderr.trim().slice(-500)}` : ''}`, cause !== undefined ? { cause } : undefined))
    }
    child.on('error', (e) => {
      if (this.child !== child) return
      this.child = undefined
      this.failPending(new HypervisorSpawnError(this.executable, { cause: e }))
    })
    child.on('exit', (code, signal) => { gone(`the PowerShell session ended (exit ${code ?? signal ?? '?'})`) })
    return child
  }

  private async runNow (script: string, opts: PsRunOptions): Promise<PsReply> {
    if (opts.signal?.aborted === true) throw new AbortedError('PowerShell request not sent: aborted', { cause: opts.signal.reason })
    const child = this.ensureChild()
    child.ref()
    ;(child.stdout as unknown as { ref?: () => void }).ref?.()
    ;(child.stderr as unknown as { ref?: () => void }).ref?.()
    const id = randomBytes(6).toString('hex')
    try {
      return await new Promise<PsReply>((resolve, reject) => {
        const { clock } = this.components
        const p: Pending = {
          id,
          resolve,
          reject,
          timer: undefined,
          signal: opts.signal,
          onAbort: () => { this.failPending(new AbortedError('PowerShell request aborted', { cause: opts.signal?.reason })); this.kill() }
        }
        p.timer = clock.setTimeout(() => { this.failPending(new HypervisorTimeoutError(this.executable, opts.timeoutMs)); this.kill() }, opts.timeoutMs)
        opts.signal?.addEventListener('abort', p.onAbort, { once: true })
        this.pending = p
        child.stdin.write(requestLine(id, script))
      })
    } finally {
      const c = this.child
      if (c !== undefined) {
        c.unref()
        ;(c.stdout as unknown as { unref?: () => void }).unref?.()
        ;(c.stderr as unknown as { unref?: () => void }).unref?.()
      }
    }
  }

  private onStdout (s: string): void {
    this.buf += s
    let nl: number
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).replace(/\r$/, '')
      this.buf = this.buf.slice(nl + 1)
      this.onLine(line)
    }
    if (this.buf.length > MAX_LINE) {
      this.failPending(new HypervisorOutputError('powershell session', 'a line longer than 64 MiB'))
      this.kill()
    }
  }

  private onLine (line: string): void {
    if (!line.startsWith(`${FRAME_SENTINEL} `)) return // a banner, a warning: not a reply
    const [, id, b64] = line.split(' ')
    const p = this.pending
    if (p === undefined || id !== p.id) return // a late reply to a request that already failed
    let reply: PsReply
    try { reply = decodeFrame(b64 ?? '', p.id) } catch (err) { this.failPending(err as Error); this.kill(); return }
    this.settle(p)
    p.resolve(reply)
  }

  private settle (p: Pending): void {
    this.components.clock.clearTimeout(p.timer)
    p.signal?.removeEventListener('abort', p.onAbort)
    if (this.pending === p) this.pending = undefined
  }

  private failPending (err: Error): void {
    const p = this.pending
    if (p === undefined) return
    this.settle(p)
    p.reject(err)
  }

  private kill (): void {
    const c = this.child
    this.child = undefined
    if (c === undefined) return
    try { c.stdin.end() } catch {}
    try { c.kill('SIGKILL') } catch {}
    c.unref()
  }
}
