/** Error conditions of the worker pool: one class per condition, stable codes. */
import { VmeshError } from '../../common/errors.ts'

/** A task run on a pool that is not started (or already stopped). */
export class WorkerPoolStoppedError extends VmeshError {
  constructor (message = 'worker pool is not running') { super('ERR_WORKER_POOL_STOPPED', message) }
}
/** More tasks queued than the pool allows. */
export class WorkerQueueFullError extends VmeshError {
  constructor (message: string) { super('ERR_WORKER_QUEUE_FULL', message) }
}
/** The task threw inside the worker; `remoteCode`/`remoteName` are the worker-side error's. */
export class WorkerTaskError extends VmeshError {
  readonly remoteCode: string
  readonly remoteName: string
  constructor (remote: { name: string, code: string, message: string }) {
    super('ERR_WORKER_TASK', remote.message)
    this.remoteCode = remote.code
    this.remoteName = remote.name
  }
}
/** The worker running a task died. */
export class WorkerCrashedError extends VmeshError {
  constructor (message: string, options?: { cause?: unknown }) { super('ERR_WORKER_CRASHED', message, options) }
}
