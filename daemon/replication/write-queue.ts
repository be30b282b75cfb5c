/**
 * The receiver's apply pipeline: writes of one generation run one after another, in order,
 * while the session loop goes on reading and verifying the next frames. push() returns as soon
 * as the task is queued, unless more than `maxBytes` of queued work is outstanding: then it
 * waits for the oldest tasks, so memory stays bounded and backpressure reaches the stream.
 * The first failing task poisons the queue: later tasks are skipped (their `done` still runs,
 * to free what they hold), and the error is reported by `error` and drain().
 */
export class WriteQueue {
  private readonly pending: Array<{ bytes: number, settled: Promise<void> }> = []
  private tail: Promise<void> = Promise.resolve()
  private outstanding = 0
  private failure: { err: unknown } | undefined

  constructor (private readonly maxBytes: number) {}

  /** The first task failure, if any. */
  get error (): unknown { return this.failure?.err }
  get failed (): boolean { return this.failure !== undefined }
  /** Bytes of tasks queued or running. */
  get bytes (): number { return this.outstanding }

  /**
   * Queues `task` (run after every task queued before it) and `done` (always run after it,
   * also when skipped). Waits while the queue holds more than `maxBytes`.
   */
  async push (bytes: number, task: () => Promise<void>, done?: () => void): Promise<void> {
    this.outstanding += bytes
    const settled = this.tail.then(async () => {
      if (this.failure !== undefined) return
      try { await task() } catch (err) { this.failure ??= { err } }
    }).finally(() => {
      this.outstanding -= bytes
      this.pending.shift()
      done?.()
    })
    this.tail = settled
    this.pending.push({ bytes, settled })
    // bounded: each pass waits for the oldest task, which removes it
    while (this.outstanding > this.maxBytes && this.pending.length > 0) await this.pending[0]?.settled
  }

  /** Waits for every queued task; throws the first failure. */
  async drain (): Promise<void> {
    await this.tail
    if (this.failure !== undefined) throw this.failure.err
  }

  /** Waits for every queued task and forgets any failure (the generation was given up). */
  async reset (): Promise<void> {
    await this.tail
    this.failure = undefined
  }
}
