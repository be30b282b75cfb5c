/**
 * Lease arithmetic. Each clock's rate is within 1 ± d of real time, so a local duration x
 * covers at least x / (1 + d) and at most x / (1 − d) real milliseconds. A voter that acks at
 * its time t promises silence until t + L·(1 + d): at least L real ms. The owner counts from the
 * round's *send* time s (before any voter's ack) and stops believing at s + L·(1 − d): at most
 * L real ms after s. Hence the owner's belief always ends before every acking voter's promise,
 * whatever the message delays, pauses or clock offsets. The watchdog fences earlier still, at
 * s + fenceMs, to leave room for turning the VM off.
 */
import { ownershipTimingProblems } from '../../config/profiles.ts'
import { OwnershipTimingError } from './errors.ts'
import type { OwnershipTiming } from './types.ts'

type LeaseTiming = Pick<OwnershipTiming, 'leaseMs' | 'fenceMs' | 'driftRatio' | 'renewMs'>

/** Holder side: the lease a majority-acked round sent at `sendTime` gives, on the holder's clock. */
export function ownerLeaseEnd (sendTime: number, t: LeaseTiming): number {
  return sendTime + t.leaseMs * (1 - t.driftRatio)
}

/** Voter side: until when an ack (or grant) given at `ackTime` binds the voter, on its clock. */
export function voterPromiseEnd (ackTime: number, t: LeaseTiming): number {
  return ackTime + t.leaseMs * (1 + t.driftRatio)
}

/** The watchdog deadline after a successful round sent at `sendTime`. */
export function fenceDeadline (sendTime: number, t: LeaseTiming): number {
  return sendTime + t.fenceMs
}

/**
 * A duration measured on another node's clock, turned into a local wait that is at least as
 * long in real time (used for "retry after the voter's promise expires" hints).
 */
export function conservativeWait (remoteMs: number, driftRatio: number): number {
  return remoteMs * (1 + driftRatio) / (1 - driftRatio)
}

/**
 * Refuses timings that break the argument above (the relations are stated once, in
 * config/profiles.ts, where the config schema checks them too): the watchdog must fence
 * strictly inside the holder's lease, renewals must come more often than the fence, and drift
 * must leave a lease.
 */
export function validateTiming (t: OwnershipTiming): void {
  const p = ownershipTimingProblems(t)[0]
  if (p !== undefined) throw new OwnershipTimingError(`${p.key} ${p.message}`)
}
