/**
 * Handing deadlines from one watchdog process to the next across a daemon restart. Each
 * watchdog keeps its armed deadlines in a state file (CLOCK_MONOTONIC values: valid for every
 * process on the host until it reboots — and a reboot turns the VMs off anyway). A new
 * watchdog that finds a predecessor still draining sends it SIGUSR2; the predecessor writes its
 * final state and exits; the new one adopts those deadlines and reports them in its hello.
 *
 * Safety: the deadlines are enforced by exactly one process at every instant except the
 * milliseconds between the old one's exit and the adoption, and a deadline that passed in
 * between is fenced at once on adoption. If the predecessor does not exit in time, nothing is
 * adopted and it keeps enforcing its deadlines itself.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs'
import { decodeInherited, type InheritedArm } from './messages.ts'

export const HANDOVER_SIGNAL = 'SIGUSR2'
const MAX_STATE_BYTES = 16 * 1024 * 1024

export interface HandoverState { version: 1, pid: number, arms: InheritedArm[] }

export function writeHandoverState (file: string, pid: number, arms: InheritedArm[]): void {
  const tmp = `${file}.tmp-${pid}`
  writeFileSync(tmp, JSON.stringify({ version: 1, pid, arms } satisfies HandoverState), { mode: 0o600 })
  renameSync(tmp, file)
}

/** The state file, or undefined when it is missing or unreadable (then there is nothing to adopt). */
export function readHandoverState (file: string): HandoverState | undefined {
  let text: string
  try { text = readFileSync(file, 'utf8') } catch { return undefined }
  if (text.length > MAX_STATE_BYTES) return undefined
  try {
    const o = JSON.parse(text) as { version?: unknown, pid?: unknown, arms?: unknown }
    if (o.version !== 1 || typeof o.pid !== 'number' || !Number.isSafeInteger(o.pid)) return undefined
    return { version: 1, pid: o.pid, arms: decodeInherited(o.arms) }
  } catch {
    return undefined
  }
}

/** Alive and not a zombie. */
export function processAlive (pid: number): boolean {
  try { process.kill(pid, 0) } catch (err) { return (err as NodeJS.ErrnoException).code === 'EPERM' }
  if (process.platform !== 'linux') return true
  try { return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')) } catch { return false }
}

/** True when `pid` runs a watchdog main (so a reused pid is never signalled). */
export function isWatchdogProcess (pid: number): boolean {
  if (process.platform !== 'linux') return false
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').some(a => /[\\/]daemon[\\/]watchdog[\\/]main\.ts$/.test(a))
  } catch {
    return false
  }
}

/**
 * Takes the deadlines of the previous watchdog recorded in `file`: asks it to hand over (and
 * waits up to `waitMs` for it to exit) when it still runs; reads them directly when it is gone.
 */
export async function takeOver (file: string, selfPid: number, o: { waitMs: number, log: (fields: Record<string, unknown>) => void }): Promise<InheritedArm[]> {
  const st = readHandoverState(file)
  if (st === undefined || st.pid === selfPid) return []
  if (processAlive(st.pid)) {
    if (!isWatchdogProcess(st.pid)) return st.arms.length === 0 ? [] : adoptDead(st, o)
    try { process.kill(st.pid, HANDOVER_SIGNAL) } catch { /* exited meanwhile */ }
    const end = performance.now() + o.waitMs
    while (processAlive(st.pid) && performance.now() < end) await new Promise(resolve => setTimeout(resolve, 5))
    if (processAlive(st.pid)) {
      o.log({ type: 'handover-refused', from: st.pid })
      return []
    }
    const final = readHandoverState(file)
    o.log({ type: 'handover', from: st.pid, arms: final?.arms.length ?? 0 })
    return final?.arms ?? []
  }
  return adoptDead(st, o)
}

function adoptDead (st: HandoverState, o: { log: (fields: Record<string, unknown>) => void }): InheritedArm[] {
  if (st.arms.length > 0) o.log({ type: 'adopt-orphaned', from: st.pid, arms: st.arms.length })
  return st.arms
}
