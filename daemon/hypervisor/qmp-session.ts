/**
 * One QMP connection to a VM's monitor for a batch of commands (a change-capture round: node
 * lookup, bitmap rotation, export add/del): qmpCommand (qmp.ts) connects and negotiates
 * capabilities for every command, which at ~2 rounds a second and ~6 commands a round was a
 * steady cost.
 *
 * Flow: the first command connects (greeting → qmp_capabilities); commands then go one at a
 * time, each with an `id` its reply must echo; events are skipped. A timeout, a reply that
 * does not fit, or the socket closing ends the connection (its error goes to the command in
 * flight and any queued one) and the next command connects anew — QEMU restarted is just that.
 * Bounded in time (injected clock), memory (line length) and abortable per command.
 *
 * Why not one connection for the VM's lifetime: a QMP monitor socket serves one client at a
 * time, and others queue until it is free — the qemu driver's own status/stop/fence commands,
 * an operator's tools. So the caller disconnect()s after each batch (the told runner: after
 * each round), and the monitor is free between rounds.
 */
import { createConnection, type Socket } from 'node:net'
import type { Clock } from '../../common/clock.ts'
import { AbortedError } from '../../common/errors.ts'
import { HypervisorOutputError, HypervisorTimeoutError } from './errors.ts'
import type { QmpReply } from './qmp.ts'

const MAX_LINE = 1024 * 1024

export interface QmpSessionInit {
  socket: string
  /** Per command (connecting included). @default 10000 */
  timeoutMs?: number
}

interface Pending {
  id: string
  resolve: (r: QmpReply) => void
  reject: (e: Error) => void
}

export class QmpSession {
  private sock: Socket | null = null
  private ready: Promise<void> | null = null
  private buf = ''
  private pending: Pending | null = null
  private greeted: (() => void) | null = null
  private seq = 0
  private queue: Promise<unknown> = Promise.resolve()
  private closed = false

  constructor (private readonly components: { clock: Clock }, readonly init: QmpSessionInit) {}

  /** Runs one command; the `qmp` function shape the bitmap tracker and point capture take. */
  readonly command = async (command: string, args?: Record<string, unknown>, signal?: AbortSignal): Promise<QmpReply> => {
    const run = this.queue.then(async () => await this.run(command, args, signal))
    this.queue = run.catch(() => {})
    return await run
  }

  /** Ends the connection once the queued commands are done; the next command connects again. */
  async disconnect (): Promise<void> {
    const run = this.queue.then(() => { this.drop(new HypervisorOutputError('qmp', 'disconnected')) })
    this.queue = run.catch(() => {})
    await run
  }

  /** Closes the connection; later commands fail. Idempotent. */
  close (): void {
    this.closed = true
    this.drop(new HypervisorOutputError('qmp', 'session closed'))
  }

  private async run (command: string, args: Record<string, unknown> | undefined, signal?: AbortSignal): Promise<QmpReply> {
    if (this.closed) throw new HypervisorOutputError('qmp', 'session closed')
    if (signal?.aborted === true) throw new AbortedError('qmp aborted', { cause: signal.reason })
    const { clock } = this.components
    const timeoutMs = this.init.timeoutMs ?? 10_000
    let timedOut = false
    const timer = clock.setTimeout(() => { timedOut = true; this.drop(new HypervisorTimeoutError(`qmp ${command}`, timeoutMs)) }, timeoutMs)
    const onAbort = (): void => { this.drop(new AbortedError('qmp aborted', { cause: signal?.reason })) }
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      await this.connect()
      if (timedOut) throw new HypervisorTimeoutError(`qmp ${command}`, timeoutMs)
      return await this.send(command, args)
    } finally {
      clock.clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    }
  }

  private async connect (): Promise<void> {
    if (this.ready !== null) { await this.ready; return }
    const sock = createConnection(this.init.socket)
    this.sock = sock
    this.buf = ''
    sock.setEncoding('utf8')
    sock.on('data', (chunk: string) => { if (this.sock === sock) this.onData(chunk) })
    sock.on('error', (e) => { if (this.sock === sock) this.drop(e) })
    sock.on('close', () => { if (this.sock === sock) this.drop(new HypervisorOutputError('qmp', 'socket closed early')) })
    this.ready = (async () => {
      await new Promise<void>((resolve, reject) => {
        this.greeted = resolve
        this.pending = { id: '', resolve: () => {}, reject }
      })
      const caps = await this.send('qmp_capabilities', undefined)
      if (caps.error !== undefined) throw new HypervisorOutputError('qmp', 'qmp_capabilities refused')
    })()
    this.ready.catch(() => {})
    await this.ready
  }

  private async send (execute: string, args: Record<string, unknown> | undefined): Promise<QmpReply> {
    const sock = this.sock
    if (sock === null) throw new HypervisorOutputError('qmp', 'socket closed early')
    const id = `vmesh-${++this.seq}`
    return await new Promise<QmpReply>((resolve, reject) => {
      this.pending = { id, resolve, reject }
      sock.write(`${JSON.stringify(args === undefined ? { execute, id } : { execute, arguments: args, id })}\n`)
    })
  }

  private onData (chunk: string): void {
    this.buf += chunk
    if (this.buf.length > MAX_LINE) { this.drop(new HypervisorOutputError('qmp', 'line too long')); return }
    for (let nl = this.buf.indexOf('\n'); nl >= 0 && this.sock !== null; nl = this.buf.indexOf('\n')) {
      const line = this.buf.slice(0, nl).trim()
      this.buf = this.buf.slice(nl + 1)
      if (line === '') continue
      let msg: Record<string, unknown>
      try { msg = JSON.parse(line) as Record<string, unknown> } catch { this.drop(new HypervisorOutputError('qmp', 'not JSON')); return }
      if (this.greeted !== null) {
        if (msg.QMP === undefined) { this.drop(new HypervisorOutputError('qmp', 'no greeting')); return }
        const g = this.greeted
        this.greeted = null
        this.pending = null
        g()
        continue
      }
      if (!('return' in msg) && !('error' in msg)) continue // an event
      const p = this.pending
      if (p === null || msg.id !== p.id) { this.drop(new HypervisorOutputError('qmp', `reply for ${JSON.stringify(msg.id ?? null)} while none was awaited`)); return }
      this.pending = null
      p.resolve(msg as QmpReply)
    }
  }

  /** Ends the connection: the command waiting (if any) fails with `err`, the next reconnects. */
  private drop (err: Error): void {
    const sock = this.sock
    const p = this.pending
    this.sock = null
    this.ready = null
    this.pending = null
    this.greeted = null
    sock?.destroy()
    p?.reject(err)
  }
}
