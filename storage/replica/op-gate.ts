/**
 * The guard both replica writers (journaled generation, seed) put around each of their
 * operations: one at a time, never on a closed writer, an abort turned into the writer's own
 * abort, and any failure closing the writer before the error (disk full mapped to its typed
 * error) reaches the caller. What "closing after a failure" means is the writer's: a journaled
 * generation is discarded, a seed keeps its progress up to the last checkpoint.
 */
import { AbortedError } from '../../common/errors.ts'
import { ReplicaBusyError, ReplicaDiskFullError, ReplicaWriterClosedError, isDiskFull } from './errors.ts'

export interface OpGateHooks {
  isClosed: () => boolean
  /** settles once a close in progress has finished */
  closing: () => Promise<void> | undefined
  signal: () => AbortSignal | undefined
  abort: () => Promise<void>
  /** checks before each operation (store usable, background failures); throws to refuse */
  check: () => void
  /** closes the writer after a failed operation */
  fail: () => Promise<void>
  messages: { closed: () => string, aborted: () => string, diskFull: () => string }
}

export class OpGate {
  private running = false

  constructor (private readonly hooks: OpGateHooks) {}

  /** true while an operation runs (an abort then waits for it instead of racing it) */
  get busy (): boolean { return this.running }

  async run<T> (fn: () => Promise<T>): Promise<T> {
    const h = this.hooks
    if (h.isClosed()) {
      await h.closing()
      throw new ReplicaWriterClosedError(h.messages.closed())
    }
    if (this.running) throw new ReplicaBusyError('writer methods must be awaited one at a time')
    const signal = h.signal()
    if (signal?.aborted === true) {
      await h.abort()
      throw new AbortedError(h.messages.aborted(), { cause: signal.reason })
    }
    this.running = true
    try {
      h.check()
      return await fn()
    } catch (err) {
      if (!h.isClosed()) await h.fail()
      if (isDiskFull(err)) throw new ReplicaDiskFullError(h.messages.diskFull(), { cause: err })
      throw err
    } finally {
      this.running = false
    }
  }
}
