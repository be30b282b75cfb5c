/**
 * Fence actions: how to turn one VM off, as plain JSON data. A driver describes the action
 * (its `fenceAction(vm)`); the watchdog process receives it over its pipe and executes it with
 * `executeFence` when a deadline passes, without the daemon. The command and libvirt drivers
 * also use `executeFence` for their own `turnOff`, so the daemon and the watchdog turn VMs off
 * the same way.
 *
 * `command` runs `off`; exit 0 is success. If it fails and `verify` is given, the verify
 * command decides whether the VM is off anyway (turning off an off VM is success).
 * `kill` SIGKILLs every process that has `match` as one of its arguments: the one named by
 * `pidFile` (checked first, so a reused pid is left alone) and, on Linux, any other whose
 * program name starts with `program` — found in /proc, so a VM can be fenced before the daemon
 * knows its pid file (the watchdog is armed before the start). Then it waits for them to go.
 */
import { readdir, readFile } from 'node:fs/promises'
import { basename } from 'node:path'
import type { Clock } from '../../common/clock.ts'
import type { CommandRunner } from './run.ts'
import { HypervisorCommandFailedError, HypervisorTimeoutError, tail } from './errors.ts'
import { hostOs, processAlive, shellInvocation, type OsKind } from '../../common/platform/index.ts'

export type FenceCommand =
  | { kind: 'shell', command: string, cwd?: string, env?: Record<string, string> }
  | { kind: 'exec', argv: string[], cwd?: string, env?: Record<string, string> }

/** Any clause that holds means "the VM is off". Patterns are RegExp sources. */
export interface OffWhen { exitCode?: number, stdout?: string, stderr?: string }

export type FenceAction =
  | { kind: 'command', off: FenceCommand, timeoutMs: number, verify?: { command: FenceCommand, offWhen: OffWhen } }
  | { kind: 'kill', match: string, pidFile?: string, program?: string, timeoutMs: number }

export type FenceOutcome = 'off' | 'already-off'

/** `os`: whose shell runs `shell` commands (the host executing the fence). @default hostOs */
export interface FenceDeps { run: CommandRunner, clock: Clock, signal?: AbortSignal, os?: OsKind }

/** The argv of a fence command: a `shell` command runs in /bin/sh, or cmd.exe on Windows. */
export function fenceArgv (c: FenceCommand, os: OsKind = hostOs): string[] {
  return c.kind === 'shell' ? shellInvocation(c.command, os).argv : c.argv
}

async function runFenceCommand (c: FenceCommand, timeoutMs: number, deps: FenceDeps): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const os = deps.os ?? hostOs
  return await deps.run(fenceArgv(c, os), {
    timeoutMs,
    ...(c.kind === 'shell' && os === 'win32' ? { windowsVerbatimArguments: true } : {}),
    ...(c.cwd !== undefined ? { cwd: c.cwd } : {}),
    ...(c.env !== undefined ? { env: c.env } : {}),
    ...(deps.signal !== undefined ? { signal: deps.signal } : {}),
    maxStdoutBytes: 64 * 1024
  })
}

function offWhenHolds (w: OffWhen, r: { code: number | null, stdout: string, stderr: string }): boolean {
  if (w.exitCode !== undefined && r.code === w.exitCode) return true
  if (w.stdout !== undefined && new RegExp(w.stdout, 'm').test(r.stdout)) return true
  if (w.stderr !== undefined && new RegExp(w.stderr, 'm').test(r.stderr)) return true
  return false
}

/** Turns the VM off as `action` says. Throws typed hypervisor errors when it could not. */
export async function executeFence (action: FenceAction, deps: FenceDeps): Promise<FenceOutcome> {
  if (action.kind === 'kill') return await killMatching(action, deps)
  const r = await runFenceCommand(action.off, action.timeoutMs, deps)
  if (r.code === 0) return 'off'
  if (action.verify !== undefined) {
    const v = await runFenceCommand(action.verify.command, action.timeoutMs, deps)
    if (offWhenHolds(action.verify.offWhen, v)) return 'already-off'
  }
  throw new HypervisorCommandFailedError(fenceArgv(action.off, deps.os)[0] ?? '?', r.code, tail(r.stderr), 'turn off')
}

/** The pid in a pid file, or undefined when there is none. */
export async function readPidFile (file: string): Promise<number | undefined> {
  let text: string
  try { text = await readFile(file, 'utf8') } catch { return undefined }
  const m = /^\s*(\d{1,10})\s*$/.exec(text.slice(0, 64))
  if (m == null) return undefined
  const pid = Number(m[1])
  return pid > 1 ? pid : undefined
}

/** True when `pid` is alive and (where /proc exists) one of its arguments equals `match`. */
export async function pidMatches (pid: number, match: string, os: OsKind = hostOs): Promise<boolean> {
  if (!processAlive(pid, { os: os === 'linux' ? 'other' : os })) return false
  if (os !== 'linux') return true
  let cmdline: string
  try { cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8') } catch { return false }
  // a zombie has an empty command line: it is dead for our purposes
  if (cmdline === '') return false
  return cmdline.split('\0').includes(match)
}

/** Pids (Linux /proc) whose program name starts with `program` and whose arguments include `match`. */
export async function findProcesses (program: string, match: string, procRoot = '/proc'): Promise<number[]> {
  let entries: string[]
  try { entries = await readdir(procRoot) } catch { return [] }
  const out: number[] = []
  for (const e of entries.slice(0, 100_000)) {
    if (!/^\d+$/.test(e)) continue
    let cmdline: string
    try { cmdline = await readFile(`${procRoot}/${e}/cmdline`, 'utf8') } catch { continue }
    const argv = cmdline.split('\0')
    if (basename(argv[0] ?? '').startsWith(program) && argv.includes(match)) out.push(Number(e))
  }
  return out
}

async function killMatching (a: Extract<FenceAction, { kind: 'kill' }>, deps: FenceDeps): Promise<FenceOutcome> {
  const pids = new Set<number>()
  if (a.pidFile !== undefined) {
    const pid = await readPidFile(a.pidFile)
    if (pid !== undefined && await pidMatches(pid, a.match, deps.os)) pids.add(pid)
  }
  if (a.program !== undefined && (deps.os ?? hostOs) === 'linux') {
    for (const pid of await findProcesses(a.program, a.match)) if (pid !== process.pid) pids.add(pid)
  }
  if (pids.size === 0) return 'already-off'
  for (const pid of pids) {
    try { process.kill(pid, 'SIGKILL') } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw new HypervisorCommandFailedError('kill', null, (err as Error).message, 'turn off')
    }
  }
  const start = deps.clock.now()
  const anyLeft = async (): Promise<boolean> => {
    for (const pid of pids) if (await pidMatches(pid, a.match, deps.os)) return true
    return false
  }
  for (let i = 0; i < 100_000 && deps.clock.now() - start < a.timeoutMs; i++) {
    if (!(await anyLeft())) return 'off'
    await deps.clock.sleep(5, deps.signal)
  }
  if (!(await anyLeft())) return 'off'
  throw new HypervisorTimeoutError(`kill ${[...pids].join(' ')}`, a.timeoutMs)
}

const MAX_STR = 16 * 1024
const MAX_ARGV = 256

function checkString (v: unknown, what: string, max = MAX_STR): string | null {
  if (typeof v !== 'string') return `${what} must be a string`
  if (v.length > max) return `${what} is longer than ${max}`
  if (v.includes('\0')) return `${what} contains NUL`
  return null
}

function checkEnv (v: unknown): string | null {
  if (v === undefined) return null
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'env must be an object'
  const entries = Object.entries(v)
  if (entries.length > 64) return 'env has too many entries'
  for (const [k, x] of entries) { const p = checkString(k, 'env key', 256) ?? checkString(x, `env.${k}`); if (p !== null) return p }
  return null
}

function checkCommand (v: unknown, what: string): string | null {
  if (typeof v !== 'object' || v === null) return `${what} must be an object`
  const c = v as Record<string, unknown>
  if (c.cwd !== undefined) { const p = checkString(c.cwd, `${what}.cwd`, 4096); if (p !== null) return p }
  const e = checkEnv(c.env); if (e !== null) return `${what}.${e}`
  if (c.kind === 'shell') return checkString(c.command, `${what}.command`)
  if (c.kind === 'exec') {
    if (!Array.isArray(c.argv) || c.argv.length < 1 || c.argv.length > MAX_ARGV) return `${what}.argv must be 1..${MAX_ARGV} strings`
    for (const [i, a] of c.argv.entries()) { const p = checkString(a, `${what}.argv[${i}]`); if (p !== null) return p }
    return null
  }
  return `${what}.kind must be "shell" or "exec"`
}

function checkPattern (v: unknown, what: string): string | null {
  if (v === undefined) return null
  const p = checkString(v, what, 1024); if (p !== null) return p
  try { new RegExp(v as string) } catch { return `${what} is not a valid pattern` }
  return null
}

function checkTimeout (v: unknown): string | null {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 && v <= 600_000 ? null : 'timeoutMs must be in (0, 600000]'
}

/** Null when `v` is a well-formed FenceAction; otherwise what is wrong (for untrusted input). */
export function checkFenceAction (v: unknown): string | null {
  if (typeof v !== 'object' || v === null) return 'action must be an object'
  const a = v as Record<string, unknown>
  if (a.kind === 'kill') {
    const p = checkString(a.match, 'match', 1024) ?? checkTimeout(a.timeoutMs)
    if (p !== null) return p
    if (a.match === '') return 'match must not be empty'
    if (a.pidFile !== undefined) { const q = checkString(a.pidFile, 'pidFile', 4096); if (q !== null) return q }
    if (a.program !== undefined) { const q = checkString(a.program, 'program', 256); if (q !== null) return q; if (a.program === '') return 'program must not be empty' }
    if (a.pidFile === undefined && a.program === undefined) return 'kill needs a pidFile or a program'
    return null
  }
  if (a.kind !== 'command') return 'action.kind must be "command" or "kill"'
  const p = checkCommand(a.off, 'off') ?? checkTimeout(a.timeoutMs)
  if (p !== null) return p
  if (a.verify === undefined) return null
  if (typeof a.verify !== 'object' || a.verify === null) return 'verify must be an object'
  const ver = a.verify as Record<string, unknown>
  const q = checkCommand(ver.command, 'verify.command')
  if (q !== null) return q
  if (typeof ver.offWhen !== 'object' || ver.offWhen === null) return 'verify.offWhen must be an object'
  const w = ver.offWhen as Record<string, unknown>
  if (w.exitCode !== undefined && !Number.isInteger(w.exitCode)) return 'verify.offWhen.exitCode must be an integer'
  return checkPattern(w.stdout, 'verify.offWhen.stdout') ?? checkPattern(w.stderr, 'verify.offWhen.stderr')
}
