/**
 * A one-shot QMP client: connect to qemu's monitor socket, negotiate capabilities, run one
 * command, return its reply. Bounded in time (timer on the injected clock, AbortSignal) and in
 * memory (line length), because it talks to a process that may be hung or gone.
 */
import { createConnection } from 'node:net'
import type { Clock } from '../../common/clock.ts'
import { AbortedError } from '../../common/errors.ts'
import { HypervisorOutputError, HypervisorTimeoutError } from './errors.ts'

const MAX_LINE = 1024 * 1024

export interface QmpReply { return?: unknown, error?: { class?: string, desc?: string } }

/**
 * Runs `command` on the QMP socket. For `quit`, the socket closing before a reply also
 * counts as success (qemu may exit before flushing it).
 */
export async function qmpCommand (socketPath: string, command: string, args: Record<string, unknown> | undefined, o: { clock: Clock, timeoutMs: number, signal?: AbortSignal }): Promise<QmpReply> {
  if (o.signal?.aborted === true) throw new AbortedError('qmp aborted', { cause: o.signal.reason })
  return await new Promise<QmpReply>((resolve, reject) => {
    const sock = createConnection(socketPath)
    let buf = ''
    let phase: 'greeting' | 'caps' | 'command' = 'greeting'
    let done = false
    const finish = (err: Error | undefined, reply?: QmpReply): void => {
      if (done) return
      done = true
      o.clock.clearTimeout(timer)
      o.signal?.removeEventListener('abort', onAbort)
      sock.destroy()
      if (err !== undefined) reject(err); else resolve(reply ?? {})
    }
    const onAbort = (): void => { finish(new AbortedError('qmp aborted', { cause: o.signal?.reason })) }
    const timer = o.clock.setTimeout(() => { finish(new HypervisorTimeoutError(`qmp ${command}`, o.timeoutMs)) }, o.timeoutMs)
    o.signal?.addEventListener('abort', onAbort, { once: true })
    const send = (execute: string, a?: Record<string, unknown>): void => {
      sock.write(`${JSON.stringify(a === undefined ? { execute } : { execute, arguments: a })}\n`)
    }
    sock.setEncoding('utf8')
    sock.on('error', (e) => { finish(e) })
    sock.on('close', () => {
      if (phase === 'command' && command === 'quit') finish(undefined, { return: {} })
      else finish(new HypervisorOutputError('qmp', 'socket closed early'))
    })
    sock.on('data', (chunk: string) => {
      buf += chunk
      if (buf.length > MAX_LINE) { finish(new HypervisorOutputError('qmp', 'line too long')); return }
      for (let nl = buf.indexOf('\n'); nl >= 0 && !done; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl).trim()
        buf = buf.slice(nl + 1)
        if (line === '') continue
        let msg: Record<string, unknown>
        try { msg = JSON.parse(line) as Record<string, unknown> } catch { finish(new HypervisorOutputError('qmp', 'not JSON')); return }
        if (phase === 'greeting') {
          if (msg.QMP === undefined) { finish(new HypervisorOutputError('qmp', 'no greeting')); return }
          phase = 'caps'
          send('qmp_capabilities')
        } else if ('return' in msg || 'error' in msg) {
          if (phase === 'caps') {
            if ('error' in msg) { finish(new HypervisorOutputError('qmp', 'qmp_capabilities refused')); return }
            phase = 'command'
            send(command, args)
          } else {
            finish(undefined, msg as QmpReply)
          }
        } // events ("event" key) are ignored
      }
    })
  })
}
