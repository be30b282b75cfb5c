/**
 * Long operations of this node (verify, restore, a planned failover's final ship) with their
 * byte progress, so status, the dashboard and the CLI show fraction, rate and ETA while they
 * run. The work reports `update(doneBytes, totalBytes, phase)` as it streams; the tracker keeps
 * only counters and a few rate samples per operation (never anything that grows with the disk),
 * and the last `keepFinished` finished ones so a poller sees how each ended.
 *
 *   verify / restore / shipFinal ─begin()─▶ handle.update(...) … finish() | fail(err)
 *                                            │
 *   status().operations, GET /v1/operations ◀┘ list(): rate over the last `rateWindowMs`
 *                                                      of the injected Clock, ETA from it
 */
import type { Clock } from '../../common/clock.ts'
import { errorMessage } from '../../common/errors.ts'
import type { OperationKind, OperationStatus } from '../status.ts'
import { OperationIdInUseError } from './errors.ts'

export interface OperationHandle {
  readonly id: string
  /** Bytes done of the total so far (the total may grow when more work is found); phase for people. */
  update: (doneBytes: number, totalBytes?: number, phase?: string) => void
  finish: (phase?: string) => void
  fail: (err: unknown) => void
}

export interface OperationTrackerInit {
  /** Finished operations kept for pollers. @default 20 */
  keepFinished?: number
  /** Rate over this window of samples. @default 10000 */
  rateWindowMs?: number
  /** Samples closer than this are merged (bounds the samples per window). @default 250 */
  sampleEveryMs?: number
}

interface Op {
  status: Omit<OperationStatus, 'elapsedMs' | 'rateBytesPerSec' | 'etaMs'>
  startedAt: number
  endedAt: number | null
  samples: Array<{ t: number, v: number }>
}

/** An id a client may choose (to find its operation while its request runs). */
export const OPERATION_ID_RE = /^[A-Za-z0-9_.-]{1,64}$/

export class OperationTracker {
  private readonly running = new Map<string, Op>()
  private readonly finished: Op[] = []
  private seq = 0
  private readonly keepFinished: number
  private readonly windowMs: number
  private readonly sampleEveryMs: number

  constructor (private readonly components: { clock: Clock }, init: OperationTrackerInit = {}) {
    this.keepFinished = init.keepFinished ?? 20
    this.windowMs = init.rateWindowMs ?? 10_000
    this.sampleEveryMs = init.sampleEveryMs ?? 250
  }

  /** Starts tracking one operation; `id` (a client's) must not name one still running. */
  begin (kind: OperationKind, vm: string, o: { id?: string, peer?: string, totalBytes?: number, phase?: string } = {}): OperationHandle {
    const { clock } = this.components
    const id = o.id ?? `${kind}-${Math.round(clock.wallNow()).toString(36)}-${++this.seq}`
    if (this.running.has(id)) throw new OperationIdInUseError(id)
    const now = clock.now()
    const op: Op = {
      status: { id, kind, vm, ...(o.peer !== undefined ? { peer: o.peer } : {}), state: 'running', phase: o.phase ?? kind, startedAtMs: Math.round(clock.wallNow()), doneBytes: 0, totalBytes: Math.max(0, o.totalBytes ?? 0) },
      startedAt: now,
      endedAt: null,
      samples: [{ t: now, v: 0 }]
    }
    this.running.set(id, op)
    const end = (state: 'done' | 'failed', phase: string | undefined, error?: string): void => {
      if (op.endedAt !== null) return
      op.endedAt = clock.now()
      op.status = { ...op.status, state, ...(phase !== undefined ? { phase } : {}), ...(error !== undefined ? { error } : {}) }
      if (state === 'done') op.status.doneBytes = Math.max(op.status.doneBytes, op.status.totalBytes)
      this.running.delete(id)
      this.finished.push(op)
      while (this.finished.length > this.keepFinished) this.finished.shift()
    }
    return {
      id,
      update: (doneBytes, totalBytes, phase) => {
        if (op.endedAt !== null) return
        const s = op.status
        if (totalBytes !== undefined) s.totalBytes = Math.max(0, totalBytes)
        s.doneBytes = Math.max(0, doneBytes)
        if (phase !== undefined) s.phase = phase
        this.sample(op, clock.now(), s.doneBytes)
      },
      finish: (phase) => { end('done', phase) },
      fail: (err) => { end('failed', 'failed', errorMessage(err)) }
    }
  }

  /** Running operations first (oldest first), then the finished ones (newest last). */
  list (): OperationStatus[] {
    const now = this.components.clock.now()
    return [...this.running.values(), ...this.finished].map(op => this.view(op, now))
  }

  get (id: string): OperationStatus | undefined {
    const op = this.running.get(id) ?? this.finished.find(o => o.status.id === id)
    return op === undefined ? undefined : this.view(op, this.components.clock.now())
  }

  private sample (op: Op, t: number, v: number): void {
    const n = op.samples.length
    const last = op.samples[n - 1]
    const before = op.samples[n - 2]
    // the newest sample moves until it is sampleEveryMs past the one before it: the samples
    // kept are at least that far apart, so at most windowMs / sampleEveryMs of them
    if (last !== undefined && before !== undefined && t - before.t < this.sampleEveryMs) { last.t = t; last.v = v } else op.samples.push({ t, v })
    while (op.samples.length > 2 && t - (op.samples[0] as { t: number }).t > this.windowMs) op.samples.shift()
  }

  private view (op: Op, now: number): OperationStatus {
    const s = op.status
    const end = op.endedAt ?? now
    let rate: number | null = null
    if (op.endedAt === null) {
      const a = op.samples[0]
      const b = op.samples[op.samples.length - 1]
      // a stall shows as a falling rate: the window runs to now, not to the last sample
      if (a !== undefined && b !== undefined && now - a.t >= 500) rate = Math.max(0, (b.v - a.v) * 1000 / (now - a.t))
    }
    const left = Math.max(0, s.totalBytes - s.doneBytes)
    const etaMs = op.endedAt !== null ? 0 : rate !== null && rate > 0 ? Math.round(left / rate * 1000) : null
    return { ...s, elapsedMs: Math.round(end - op.startedAt), rateBytesPerSec: rate === null ? null : Math.round(rate), etaMs }
  }
}
