/**
 * A read-only NBD client for one export on a unix socket: the part of the protocol a
 * point-in-time read needs (fixed newstyle handshake, NBD_OPT_GO, NBD_CMD_READ with simple
 * replies, NBD_CMD_DISC), nothing else.
 *
 * Why not libnbd: it has no Node binding, and a process per read (nbdsh/nbdcopy) cannot read a
 * list of scattered ranges into our stream. The dirty-bitmap map (structured replies, meta
 * contexts) is nbd-map.ts.
 *
 * Reads are sent one at a time on the connection (the caller reads ahead with several
 * readers if it needs to); every reply field from the server is checked, and anything odd is
 * a typed error that closes the connection (a hypervisor's odd answer never crashes us).
 */
import { createConnection, type Socket } from 'node:net'
import { AbortedError } from '../../common/errors.ts'
import { NbdProtocolError } from './errors.ts'
import { CMD_DISC, CMD_READ, SIMPLE_REPLY_MAGIC, SocketBytes, goExport, greet, request } from './nbd-wire.ts'

/** Largest read asked of the server in one request (QEMU's limit is 32 MiB). */
const MAX_READ = 16 * 1024 * 1024

export class NbdReader {
  private handle = 0n
  private busy: Promise<unknown> = Promise.resolve()
  private closed = false

  private constructor (private readonly sock: Socket, private readonly bytes: SocketBytes, readonly size: number, readonly exportName: string) {}

  /** Connects to `exportName` on the server at `socketPath` and negotiates. */
  static async open (socketPath: string, exportName: string, o: { timeoutMs?: number, signal?: AbortSignal } = {}): Promise<NbdReader> {
    if (o.signal?.aborted === true) throw new AbortedError('nbd open aborted', { cause: o.signal.reason })
    const sock = createConnection(socketPath)
    const bytes = new SocketBytes(sock)
    const timer = setTimeout(() => sock.destroy(new NbdProtocolError(`no handshake within ${o.timeoutMs ?? 10_000} ms`)), o.timeoutMs ?? 10_000)
    const onAbort = (): void => { sock.destroy(new AbortedError('nbd open aborted', { cause: o.signal?.reason })) }
    o.signal?.addEventListener('abort', onAbort, { once: true })
    try {
      await greet(bytes, sock)
      const size = await goExport(bytes, sock, exportName)
      return new NbdReader(sock, bytes, size, exportName)
    } catch (err) {
      sock.destroy()
      throw err
    } finally {
      clearTimeout(timer)
      o.signal?.removeEventListener('abort', onAbort)
    }
  }

  /** `length` bytes at `offset` (clipped to the export's size; nothing past it). */
  async read (offset: number, length: number): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) throw new RangeError(`bad read ${offset}+${length}`)
    const len = Math.max(0, Math.min(length, this.size - offset))
    const run = this.busy.then(async () => await this.readNow(offset, len))
    this.busy = run.catch(() => {})
    return await run
  }

  private async readNow (offset: number, length: number): Promise<Buffer> {
    if (this.closed) throw new NbdProtocolError('reader closed')
    const out = Buffer.allocUnsafe(length)
    for (let done = 0; done < length;) {
      const n = Math.min(MAX_READ, length - done)
      const h = ++this.handle
      const req = request(CMD_READ, h, offset + done, n)
      this.sock.write(req)
      const rep = await this.bytes.take(16)
      if (rep.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC || rep.readBigUInt64BE(8) !== h) { this.destroy(); throw new NbdProtocolError('bad reply header') }
      const error = rep.readUInt32BE(4)
      if (error !== 0) throw new NbdProtocolError(`read of ${n} bytes at ${offset + done} failed with NBD error ${error}`)
      ;(await this.bytes.take(n)).copy(out, done)
      done += n
    }
    return out
  }

  /** Ends the session politely (NBD_CMD_DISC) and closes the socket. Idempotent. */
  async close (): Promise<void> {
    if (this.closed) return
    await this.busy
    this.closed = true
    const req = request(CMD_DISC, 0n, 0, 0)
    await new Promise<void>(resolve => { this.sock.end(req, () => { resolve() }) })
    this.sock.destroy()
  }

  private destroy (): void { this.closed = true; this.sock.destroy() }
}
