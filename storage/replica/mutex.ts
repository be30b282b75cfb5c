/** A FIFO async mutex: run() calls execute one at a time, in call order. */
export class Mutex {
  private tail: Promise<void> = Promise.resolve()
  private held = 0

  get locked (): boolean { return this.held > 0 }

  async run<T> (fn: () => Promise<T>): Promise<T> {
    const prev = this.tail
    let release!: () => void
    this.tail = new Promise<void>(resolve => { release = resolve })
    this.held++
    try {
      await prev
      return await fn()
    } finally {
      this.held--
      release()
    }
  }
}
