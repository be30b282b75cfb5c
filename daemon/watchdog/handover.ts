/**
 * Handing deadlines from one watchdog process to the next across a daemon restart. Each
 * watchdog keeps its armed deadlines in a state file (monotonic values: CLOCK_MONOTONIC on
 * Linux, QueryPerformanceCounter on Windows — both valid for every process on the host until
 * it reboots, and a reboot turns the VMs off anyway). A new watchdog that finds a predecessor
 * still draining asks it to hand over — SIGUSR2 on POSIX; on Windows, which has no such
 * signal, a request file `<state>.handover` naming the successor, which every watchdog polls
 * for — the predecessor writes its final state and exits; the new one adopts those deadlines
 * and reports them in its hello.
 *
 * Safety: the deadlines are enforced by exactly one process at every instant except the
 * milliseconds between the old one's exit and the adoption, and a deadline that passed in
 * between is fenced at once on adoption. If the predecessor does not exit in time, nothing is
 * adopted and it keeps enforcing its deadlines itself — except on Windows, where a pid cannot
 * be told to be a watchdog: an unanswered request there may be a reused pid, so the deadlines
 * are adopted (enforced twice at worst, never by nobody).
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { decodeInherited, type InheritedArm } from './messages.ts'
import { handoverMechanism, processAlive as platformProcessAlive, renameDurableSync, type OsKind } from '../../common/platform/index.ts'

export const HANDOVER_SIGNAL = 'SIGUSR2'
const MAX_STATE_BYTES = 16 * 1024 * 1024

export interface HandoverState { version: 1, pid: number, arms: InheritedArm[] }

export function writeHandoverState (file: string, pid: number, arms: InheritedArm[], os: OsKind): void {
  const tmp = `${file}.tmp-${pid}`
  writeFileSync(tmp, JSON.stringify({ version: 1, pid, arms } satisfies HandoverState), { mode: 0o600 })
  renameDurableSync(tmp, file, { os })
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

/** The request file a Windows successor writes (its pid) and a running watchdog polls for. */
export function handoverRequestFile (stateFile: string): string { return `${stateFile}.handover` }

/** True when a successor (not `selfPid`) has asked `selfPid` to hand over through the request file. */
export function handoverRequested (stateFile: string, selfPid: number): boolean {
  let text: string
  try { text = readFileSync(handoverRequestFile(stateFile), 'utf8') } catch { return false }
  const o = (() => { try { return JSON.parse(text) as { from?: unknown, to?: unknown } } catch { return undefined } })()
  return o !== undefined && o.to === selfPid && o.from !== selfPid
}

/** Alive and not a zombie. */
export function processAlive (pid: number, os: OsKind): boolean {
  return platformProcessAlive(pid, { os })
}

/**
 * True when `pid` runs a watchdog main (so a reused pid is never signalled); undefined where
 * that cannot be told (no /proc).
 */
export function isWatchdogProcess (pid: number, os: OsKind): boolean | undefined {
  if (os !== 'linux') return undefined
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').some(a => /[\\/]daemon[\\/]watchdog[\\/]main\.(ts|js)$/.test(a))
  } catch {
    return false
  }
}

export interface TakeOverDeps {
  os: OsKind
  alive?: (pid: number) => boolean
  isWatchdog?: (pid: number) => boolean | undefined
  /** Sends the POSIX handover signal. */
  signal?: (pid: number) => void
  /** Writes the Windows request file. */
  request?: (file: string, from: number, to: number) => void
  sleep?: (ms: number) => Promise<void>
  now?: () => number
}

/**
 * Takes the deadlines of the previous watchdog recorded in `file`: asks it to hand over (and
 * waits up to `waitMs` for it to exit) when it still runs; reads them directly when it is gone.
 */
export async function takeOver (file: string, selfPid: number, o: { waitMs: number, log: (fields: Record<string, unknown>) => void } & TakeOverDeps): Promise<InheritedArm[]> {
  const alive = o.alive ?? ((pid: number) => processAlive(pid, o.os))
  const isWatchdog = o.isWatchdog ?? ((pid: number) => isWatchdogProcess(pid, o.os))
  const sleep = o.sleep ?? (async (ms: number) => { await new Promise(resolve => setTimeout(resolve, ms)) })
  const now = o.now ?? (() => performance.now())
  const st = readHandoverState(file)
  if (st === undefined || st.pid === selfPid) return []
  if (!alive(st.pid)) return adoptDead(st, o)
  const known = isWatchdog(st.pid)
  if (known === false) return st.arms.length === 0 ? [] : adoptDead(st, o)
  const mechanism = handoverMechanism(o.os)
  if (mechanism === 'signal') {
    try { (o.signal ?? ((pid: number) => { process.kill(pid, HANDOVER_SIGNAL) }))(st.pid) } catch { /* exited meanwhile */ }
  } else {
    const request = o.request ?? ((f: string, from: number, to: number) => { writeFileSync(f, JSON.stringify({ from, to })) })
    try { request(handoverRequestFile(file), selfPid, st.pid) } catch (err) { o.log({ type: 'handover-request-failed', error: (err as Error).message }) }
  }
  const end = now() + o.waitMs
  while (alive(st.pid) && now() < end) await sleep(5)
  if (mechanism === 'file') { try { rmSync(handoverRequestFile(file), { force: true }) } catch { /* best effort */ } }
  if (alive(st.pid)) {
    if (known === undefined) {
      // cannot tell a hung watchdog from a reused pid: enforce its deadlines too rather than risk nobody doing so
      o.log({ type: 'handover-unanswered', from: st.pid, arms: st.arms.length })
      return st.arms
    }
    o.log({ type: 'handover-refused', from: st.pid })
    return []
  }
  const final = readHandoverState(file)
  o.log({ type: 'handover', from: st.pid, arms: final?.arms.length ?? 0 })
  return final?.arms ?? []
}

function adoptDead (st: HandoverState, o: { log: (fields: Record<string, unknown>) => void }): InheritedArm[] {
  if (st.arms.length > 0) o.log({ type: 'adopt-orphaned', from: st.pid, arms: st.arms.length })
  return st.arms
}
