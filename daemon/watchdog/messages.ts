/**
 * The watchdog's pipe protocol (Node IPC: one JSON document per line). Times are the
 * watchdog's monotonic milliseconds (`monoMs`: CLOCK_MONOTONIC via process.hrtime); the client
 * translates its own deadlines into that clock (see clock-sync.ts). Request fields are checked
 * here before the core sees them: the daemon is trusted, but a bug must become a typed
 * protocol error, not a NaN deadline.
 */
import { VmeshError } from '../../common/errors.ts'
import { checkFenceAction, type FenceAction } from '../hypervisor/fence.ts'

export const WATCHDOG_PROTOCOL_VERSION = 1

export type WatchdogRequest =
  | { type: 'ping', id: number }
  /** Turn `vm` off by itself at `deadlineMonoMs` unless a newer arm or a disarm comes first. */
  | { type: 'arm', seq: number, vm: string, deadlineMonoMs: number, action: FenceAction }
  | { type: 'disarm', seq: number, vm: string }
  /** The daemon is stopping: fence what is armed when it falls due, then exit. */
  | { type: 'bye' }

/** A deadline taken over from a previous watchdog process (daemon restart). */
export interface InheritedArm { vm: string, seq: number, deadlineMonoMs: number, action: FenceAction }

export type WatchdogReport =
  /** `inherited`: deadlines adopted from the previous watchdog (see main.ts, handover). */
  | { type: 'hello', version: number, pid: number, monoMs: number, inherited: InheritedArm[] }
  | { type: 'pong', id: number, monoMs: number }
  | { type: 'armed', seq: number, vm: string, deadlineMonoMs: number, monoMs: number }
  | { type: 'disarmed', seq: number, vm: string }
  /** `seq` is the arm whose deadline passed; `lateMs` how long after it the VM was off. */
  | { type: 'fenced', vm: string, seq: number, monoMs: number, outcome: 'off' | 'already-off', attempt: number, lateMs: number }
  | { type: 'fence-failed', vm: string, seq: number, monoMs: number, attempt: number, final: boolean, code: string, message: string }
  | { type: 'error', code: string, message: string }

/** A request or report that does not have the expected shape. */
export class WatchdogProtocolError extends VmeshError {
  constructor (detail: string) {
    super('ERR_WATCHDOG_PROTOCOL', `watchdog protocol: ${detail}`)
  }
}

export const MAX_VM_NAME = 256
const MAX_SEQ = Number.MAX_SAFE_INTEGER

function obj (v: unknown): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new WatchdogProtocolError('message must be an object')
  return v as Record<string, unknown>
}

function int (v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > MAX_SEQ) throw new WatchdogProtocolError(`${what} must be a non-negative integer`)
  return v
}

function finite (v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new WatchdogProtocolError(`${what} must be a finite number`)
  return v
}

function vmName (v: unknown): string {
  if (typeof v !== 'string' || v === '' || v.length > MAX_VM_NAME || v.includes('\0')) throw new WatchdogProtocolError(`vm must be 1..${MAX_VM_NAME} characters`)
  return v
}

function str (v: unknown, what: string, max = 4096): string {
  if (typeof v !== 'string' || v.length > max) throw new WatchdogProtocolError(`${what} must be a string`)
  return v
}

/** Validates a request from the daemon. */
export function decodeRequest (v: unknown): WatchdogRequest {
  const o = obj(v)
  switch (o.type) {
    case 'ping': return { type: 'ping', id: int(o.id, 'id') }
    case 'arm': {
      const problem = checkFenceAction(o.action)
      if (problem !== null) throw new WatchdogProtocolError(`arm.action: ${problem}`)
      return { type: 'arm', seq: int(o.seq, 'seq'), vm: vmName(o.vm), deadlineMonoMs: finite(o.deadlineMonoMs, 'deadlineMonoMs'), action: o.action as FenceAction }
    }
    case 'disarm': return { type: 'disarm', seq: int(o.seq, 'seq'), vm: vmName(o.vm) }
    case 'bye': return { type: 'bye' }
    default: throw new WatchdogProtocolError(`unknown request type ${JSON.stringify(String(o.type)).slice(0, 40)}`)
  }
}

const MAX_INHERITED = 10_000

/** Validates a list of adopted deadlines (a hello's, or the handover state file's). */
export function decodeInherited (v: unknown): InheritedArm[] {
  if (!Array.isArray(v) || v.length > MAX_INHERITED) throw new WatchdogProtocolError(`inherited must be an array of at most ${MAX_INHERITED}`)
  return v.map((x: unknown) => {
    const o = obj(x)
    const problem = checkFenceAction(o.action)
    if (problem !== null) throw new WatchdogProtocolError(`inherited action: ${problem}`)
    return { vm: vmName(o.vm), seq: int(o.seq, 'seq'), deadlineMonoMs: finite(o.deadlineMonoMs, 'deadlineMonoMs'), action: o.action as FenceAction }
  })
}

/** Validates a report from the watchdog process. */
export function decodeReport (v: unknown): WatchdogReport {
  const o = obj(v)
  switch (o.type) {
    case 'hello': return { type: 'hello', version: int(o.version, 'version'), pid: int(o.pid, 'pid'), monoMs: finite(o.monoMs, 'monoMs'), inherited: decodeInherited(o.inherited ?? []) }
    case 'pong': return { type: 'pong', id: int(o.id, 'id'), monoMs: finite(o.monoMs, 'monoMs') }
    case 'armed': return { type: 'armed', seq: int(o.seq, 'seq'), vm: vmName(o.vm), deadlineMonoMs: finite(o.deadlineMonoMs, 'deadlineMonoMs'), monoMs: finite(o.monoMs, 'monoMs') }
    case 'disarmed': return { type: 'disarmed', seq: int(o.seq, 'seq'), vm: vmName(o.vm) }
    case 'fenced': {
      if (o.outcome !== 'off' && o.outcome !== 'already-off') throw new WatchdogProtocolError('fenced.outcome must be off or already-off')
      return { type: 'fenced', vm: vmName(o.vm), seq: int(o.seq, 'seq'), monoMs: finite(o.monoMs, 'monoMs'), outcome: o.outcome, attempt: int(o.attempt, 'attempt'), lateMs: finite(o.lateMs, 'lateMs') }
    }
    case 'fence-failed':
      if (typeof o.final !== 'boolean') throw new WatchdogProtocolError('fence-failed.final must be a boolean')
      return { type: 'fence-failed', vm: vmName(o.vm), seq: int(o.seq, 'seq'), monoMs: finite(o.monoMs, 'monoMs'), attempt: int(o.attempt, 'attempt'), final: o.final, code: str(o.code, 'code', 128), message: str(o.message, 'message') }
    case 'error': return { type: 'error', code: str(o.code, 'code', 128), message: str(o.message, 'message') }
    default: throw new WatchdogProtocolError(`unknown report type ${JSON.stringify(String(o.type)).slice(0, 40)}`)
  }
}
