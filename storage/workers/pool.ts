/**
 * A fixed set of worker threads running one task script (default: hash-worker.ts), fed from a
 * bounded FIFO queue. Each worker is handed up to `pipeline` tasks at once (least loaded first):
 * its next task is already in its inbox when one finishes, so it never idles while this thread
 * is busy. Payload buffers are transferred, not copied; a worker that dies fails only the tasks
 * it held and is replaced (a script that cannot even start fails the pool after a few tries
 * instead of respawning forever).
 */
import { Worker } from 'node:worker_threads'
import type { Transferable } from 'node:worker_threads'
import { availableParallelism } from 'node:os'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import { dirname, join } from 'node:path'
import { AbortedError } from '../../common/errors.ts'
import { READY } from './worker-host.ts'
import type { TaskReply } from './worker-host.ts'
import { siblingModule } from '../../common/module-path.ts'
import { WorkerCrashedError, WorkerPoolStoppedError, WorkerQueueFullError, WorkerTaskError } from './errors.ts'

export { WorkerCrashedError, WorkerPoolStoppedError, WorkerQueueFullError, WorkerTaskError } from './errors.ts'

export interface WorkerPoolInit {
  /** Worker script (calls serveTasks). @default hash-worker.ts */
  script?: URL
  /** Number of threads. @default os.availableParallelism() */
  size?: number
  /** Tasks waiting for a free worker before run() rejects with WorkerQueueFullError. @default 1024 */
  maxQueue?: number
  /** Extra Node flags for the workers. @default [] */
  execArgv?: string[]
  /** Tasks handed to one worker at a time (≥ 1). @default 2 */
  pipeline?: number
}

interface Task {
  id: number
  task: string
  payload: unknown
  transfer: Transferable[]
  resolve: (v: unknown) => void
  reject: (e: unknown) => void
  signal?: AbortSignal
  onAbort?: () => void
  settled: boolean
}

/** `running`: tasks posted to this worker and not yet answered, oldest first. */
interface Slot { worker: Worker, running: Task[], ready: boolean }

const MAX_START_FAILURES = 3

/**
 * On Node 20, `new Worker(url, { execArgv: ['--import', 'tsx'] })` does not apply tsx's hooks to
 * the worker's entry module (ERR_UNKNOWN_FILE_EXTENSION; nodejs/node#47747). A TypeScript script
 * is therefore started from a small eval'd bootstrap that registers tsx in the worker first.
 */
function newWorker (script: URL, execArgv: string[]): Worker {
  if (!script.pathname.endsWith('.ts')) return new Worker(script, { execArgv })
  const code = `import(${JSON.stringify(tsxApiUrl())}).then(a => (a.register ?? a.default.register)())` +
    `.then(() => import(${JSON.stringify(script.href)}))` +
    '.catch(e => { process.nextTick(() => { throw e }) })'
  return new Worker(code, { eval: true, execArgv })
}

/**
 * URL of tsx's ESM register API. import.meta.resolve is missing when tsx runs this module as
 * CommonJS (mocha does), and the package's `require` entry cannot be imported as ESM, so the
 * `import` entry is read from tsx's export map.
 */
function tsxApiUrl (): string {
  const meta = import.meta as { resolve?: (specifier: string) => string }
  if (typeof meta.resolve === 'function') {
    try { return meta.resolve('tsx/esm/api') } catch { /* fall through */ }
  }
  const req = createRequire(import.meta.url)
  const pkgPath = req.resolve('tsx/package.json')
  const pkg = req(pkgPath) as { exports?: Record<string, { import?: { default?: string } } | string> }
  const entry = pkg.exports?.['./esm/api']
  const rel = typeof entry === 'object' ? entry.import?.default : undefined
  if (rel === undefined) throw new WorkerCrashedError('cannot locate tsx/esm/api for TypeScript workers')
  return pathToFileURL(join(dirname(pkgPath), rel)).href
}

export class WorkerPool {
  readonly size: number
  private readonly script: URL
  private readonly maxQueue: number
  private readonly execArgv: string[]
  private readonly pipeline: number
  private slots: Slot[] = []
  private readonly queue: Task[] = []
  private running = false
  private starting: Promise<void> | null = null
  private nextId = 1
  private startFailures = 0
  private failure: Error | null = null

  constructor (_components: Record<string, never> = {}, init: WorkerPoolInit = {}) {
    this.size = Math.max(1, init.size ?? availableParallelism())
    this.script = init.script ?? siblingModule(import.meta.url, './hash-worker')
    this.maxQueue = init.maxQueue ?? 1024
    this.execArgv = init.execArgv ?? []
    this.pipeline = Math.max(1, Math.floor(init.pipeline ?? 2))
  }

  get isRunning (): boolean { return this.running }

  /** Tasks waiting for a worker (not yet handed to one). */
  get queued (): number { return this.queue.length }

  /** Spawns the workers and waits until each is ready. Idempotent. */
  async start (): Promise<void> {
    if (this.running && this.starting == null) return
    if (this.starting != null) return await this.starting
    this.failure = null
    this.startFailures = 0
    this.starting = (async () => {
      const slots = Array.from({ length: this.size }, () => this.spawn())
      this.slots = slots.map(s => s.slot)
      this.running = true
      try {
        await Promise.all(slots.map(async s => await s.ready))
      } catch (err) {
        await this.stop()
        throw err
      }
    })()
    try { await this.starting } finally { this.starting = null }
  }

  /** Rejects queued and running tasks with WorkerPoolStoppedError and ends the threads. Idempotent. */
  async stop (): Promise<void> {
    if (!this.running && this.slots.length === 0) return
    this.running = false
    const err = new WorkerPoolStoppedError()
    for (const t of this.queue.splice(0)) this.settle(t, err)
    const slots = this.slots
    this.slots = []
    await Promise.all(slots.map(async s => {
      for (const t of s.running.splice(0)) this.settle(t, err)
      await s.worker.terminate()
    }))
  }

  /** Runs `task` on a free worker; `transfer` buffers become unusable in the caller. */
  async run<T> (task: string, payload: unknown, opts: { transfer?: Transferable[], signal?: AbortSignal } = {}): Promise<T> {
    if (this.failure != null) throw this.failure
    if (!this.running) throw new WorkerPoolStoppedError()
    if (opts.signal?.aborted === true) throw new AbortedError('worker task aborted before start', { cause: opts.signal.reason })
    if (this.queue.length >= this.maxQueue) throw new WorkerQueueFullError(`worker queue holds ${this.queue.length} tasks`)
    return await new Promise<T>((resolve, reject) => {
      const t: Task = { id: this.nextId++, task, payload, transfer: opts.transfer ?? [], resolve: resolve as (v: unknown) => void, reject, settled: false }
      if (opts.signal != null) {
        const signal = opts.signal
        t.signal = signal
        t.onAbort = () => {
          const i = this.queue.indexOf(t)
          if (i >= 0) this.queue.splice(i, 1)
          // A running task cannot be interrupted; its late reply is dropped.
          this.settle(t, new AbortedError('worker task aborted', { cause: signal.reason }))
        }
        signal.addEventListener('abort', t.onAbort, { once: true })
      }
      this.queue.push(t)
      this.dispatch()
    })
  }

  private spawn (): { slot: Slot, ready: Promise<void> } {
    const worker = newWorker(this.script, this.execArgv)
    const slot: Slot = { worker, running: [], ready: false }
    const ready = new Promise<void>((resolve, reject) => {
      worker.on('message', (msg: TaskReply | string) => {
        if (msg === READY) { slot.ready = true; this.startFailures = 0; resolve(); this.dispatch(); return }
        if (typeof msg === 'string') return
        const i = slot.running.findIndex(t => t.id === msg.id)
        if (i >= 0) {
          const [t] = slot.running.splice(i, 1) as [Task]
          if (msg.ok) this.settle(t, null, msg.result)
          else this.settle(t, new WorkerTaskError(msg.error))
        }
        this.dispatch()
      })
      let dead = false
      const died = (cause: unknown): void => {
        if (dead) return
        dead = true
        for (const t of slot.running.splice(0)) this.settle(t, new WorkerCrashedError(`worker died running ${t.task}`, { cause }))
        if (!slot.ready) reject(new WorkerCrashedError('worker failed to start', { cause }))
        const i = this.slots.indexOf(slot)
        if (i < 0 || !this.running) return
        if (!slot.ready && ++this.startFailures >= MAX_START_FAILURES) {
          this.failure = new WorkerCrashedError('worker script keeps failing at start', { cause })
          void this.stop()
          return
        }
        const fresh = this.spawn()
        this.slots[i] = fresh.slot
        fresh.ready.catch(() => {})
      }
      worker.on('error', died)
      worker.on('exit', (code) => { died(new Error(`worker exited with code ${code}`)) })
    })
    return { slot, ready }
  }

  /** Hands queued tasks to the least loaded ready workers, up to `pipeline` each. */
  private dispatch (): void {
    for (let guard = 0; this.queue.length > 0 && guard <= this.slots.length * this.pipeline; guard++) {
      let slot: Slot | null = null
      for (const s of this.slots) {
        if (s.ready && s.running.length < this.pipeline && (slot === null || s.running.length < slot.running.length)) slot = s
      }
      if (slot === null) return
      const t = this.queue.shift() as Task
      slot.running.push(t)
      try {
        slot.worker.postMessage({ id: t.id, task: t.task, payload: t.payload }, t.transfer)
      } catch (err) {
        slot.running.pop()
        this.settle(t, err)
      }
    }
  }

  private settle (t: Task, err: unknown, value?: unknown): void {
    if (t.settled) return
    t.settled = true
    if (t.onAbort != null) t.signal?.removeEventListener('abort', t.onAbort)
    if (err != null) t.reject(err); else t.resolve(value)
  }
}
