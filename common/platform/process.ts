/**
 * Process control that differs between Linux and Windows.
 *
 * - Liveness: `process.kill(pid, 0)` works on both (EPERM = alive, someone else's); Linux also
 *   reads /proc/PID/stat so a zombie counts as gone.
 * - The watchdog must outlive the daemon: `detached: true` on both. On POSIX that is its own
 *   session (a Ctrl-C or SIGHUP aimed at the daemon's terminal does not reach it); on Windows
 *   it keeps the child out of the job object libuv puts children in, which is killed with the
 *   parent — a daemon crash would otherwise take the fence down with it.
 * - Signals: Windows never delivers SIGTERM and its SIGHUP means "the console window closed";
 *   there stop and reload go through the control API (`vmesh stop`, `vmesh reload`). The
 *   watchdog handover uses SIGUSR2 on POSIX and a request file on Windows.
 */
import { readFileSync } from 'node:fs'
import type { OsKind } from './os.ts'

export interface AliveDeps {
  os: OsKind
  kill?: (pid: number, signal: 0) => void
  /** /proc/PID/stat text, or undefined when it cannot be read (Linux). */
  procStat?: (pid: number) => string | undefined
}

function readProcStat (pid: number): string | undefined {
  try { return readFileSync(`/proc/${pid}/stat`, 'utf8') } catch { return undefined }
}

/** Alive (and, on Linux, not a zombie). */
export function processAlive (pid: number, d: AliveDeps): boolean {
  const kill = d.kill ?? ((p: number, s: 0) => { process.kill(p, s) })
  try { kill(pid, 0) } catch (err) { return (err as NodeJS.ErrnoException).code === 'EPERM' }
  if (d.os !== 'linux') return true
  const st = (d.procStat ?? readProcStat)(pid)
  return st !== undefined && !/^\d+ \(.*\) Z/.test(st)
}

/** spawn() options for a child that must survive its parent (the fencing watchdog). */
export function independentChildOptions (_os: OsKind): { detached: true, windowsHide: true } {
  return { detached: true, windowsHide: true }
}

/** Signals that ask the foreground daemon to stop cleanly. */
export function stopSignals (os: OsKind): NodeJS.Signals[] {
  // SIGBREAK is Ctrl-Break; SIGHUP on Windows is the console closing (the process is killed
  // a few seconds later regardless), so a clean stop is the best use of it
  return os === 'win32' ? ['SIGINT', 'SIGBREAK', 'SIGHUP'] : ['SIGTERM', 'SIGINT']
}

/** The signal that asks for a config reload, or undefined where there is none (use `vmesh reload`). */
export function reloadSignal (os: OsKind): NodeJS.Signals | undefined {
  return os === 'win32' ? undefined : 'SIGHUP'
}

/** How a new watchdog asks its predecessor to hand over its deadlines. */
export function handoverMechanism (os: OsKind): 'signal' | 'file' {
  return os === 'win32' ? 'file' : 'signal'
}
