/**
 * The worker side of `WorkerPool`: a worker script calls `serveTasks({ name: handler })` once.
 * Messages in: `{ id, task, payload }`; out: `{ id, ok, result | error }`. Handlers return the
 * buffers to transfer back so big results (and the caller's input buffer) move without a copy.
 */
import { parentPort } from 'node:worker_threads'
import type { Transferable } from 'node:worker_threads'

export interface TaskOutput { result: unknown, transfer?: Transferable[] }
export type TaskHandler = (payload: unknown) => TaskOutput | Promise<TaskOutput>

export interface TaskRequest { id: number, task: string, payload: unknown }
export type TaskReply =
  | { id: number, ok: true, result: unknown }
  | { id: number, ok: false, error: { name: string, code: string, message: string } }

/** The first message a worker sends once its handlers are installed. */
export const READY = 'vmesh-worker-ready'

export function serveTasks (handlers: Record<string, TaskHandler>): void {
  const port = parentPort
  if (port == null) throw new Error('serveTasks() must run inside a worker thread')
  port.on('message', (msg: TaskRequest) => {
    void (async () => {
      const handler = Object.hasOwn(handlers, msg.task) ? handlers[msg.task] : undefined
      try {
        if (handler === undefined) throw Object.assign(new Error(`unknown task ${msg.task}`), { code: 'ERR_WORKER_UNKNOWN_TASK' })
        const out = await handler(msg.payload)
        port.postMessage({ id: msg.id, ok: true, result: out.result } satisfies TaskReply, out.transfer ?? [])
      } catch (err) {
        const e = err instanceof Error ? err : new Error(String(err))
        const rawCode = (e as { code?: unknown }).code
        const code = typeof rawCode === 'string' ? rawCode : 'ERR_WORKER_TASK'
        port.postMessage({ id: msg.id, ok: false, error: { name: e.name, code, message: e.message } } satisfies TaskReply)
      }
    })()
  })
  port.postMessage(READY)
}
