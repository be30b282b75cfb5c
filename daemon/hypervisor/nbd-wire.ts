/**
 * The NBD wire pieces both of our clients use (nbd-reader.ts: reads from a point-in-time
 * export; nbd-map.ts: a dirty bitmap's extents): constants from the NBD protocol document,
 * buffered exact reads from the socket, the fixed-newstyle handshake, option requests and
 * replies, NBD_OPT_GO, and transmission requests. Every field the server sends is checked;
 * anything odd is an NbdProtocolError.
 */
import type { Socket } from 'node:net'
import { NbdProtocolError } from './errors.ts'

export const NBDMAGIC = 0x4e42444d41474943n
export const IHAVEOPT = 0x49484156454f5054n
export const OPT_REPLY_MAGIC = 0x3e889045565a9n
export const FLAG_FIXED_NEWSTYLE = 1
export const FLAG_NO_ZEROES = 2
export const OPT_GO = 7
export const OPT_STRUCTURED_REPLY = 8
export const OPT_SET_META_CONTEXT = 10
export const REP_ACK = 1
export const REP_INFO = 3
export const REP_META_CONTEXT = 4
export const INFO_EXPORT = 0
export const REQUEST_MAGIC = 0x25609513
export const SIMPLE_REPLY_MAGIC = 0x67446698
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef
export const CMD_READ = 0
export const CMD_DISC = 2
export const CMD_BLOCK_STATUS = 7
/** Option replies larger than this are refused (ours are a few dozen bytes). */
const MAX_OPTION_REPLY = 65536
/** Option replies to one option at most (NBD_REP_INFO may repeat). */
const MAX_OPTION_REPLIES = 64

/** Buffered reads of exact byte counts from a socket. */
export class SocketBytes {
  private chunks: Buffer[] = []
  private have = 0
  private waiter: (() => void) | null = null
  private ended: Error | null = null

  constructor (sock: Socket) {
    sock.on('data', (b: Buffer) => { this.chunks.push(b); this.have += b.length; this.wake() })
    sock.on('error', (err) => { this.ended ??= err; this.wake() })
    sock.on('close', () => { this.ended ??= new NbdProtocolError('connection closed by the server'); this.wake() })
  }

  private wake (): void { const w = this.waiter; this.waiter = null; w?.() }

  async take (n: number): Promise<Buffer> {
    while (this.have < n) {
      if (this.ended !== null) throw this.ended
      await new Promise<void>(resolve => { this.waiter = resolve })
    }
    const all = this.chunks.length === 1 ? this.chunks[0] as Buffer : Buffer.concat(this.chunks)
    const out = all.subarray(0, n)
    const rest = all.subarray(n)
    this.chunks = rest.length > 0 ? [rest] : []
    this.have = rest.length
    return out
  }
}

/** The server's greeting checked (fixed newstyle), our client flags sent. */
export async function greet (bytes: SocketBytes, sock: Socket): Promise<void> {
  const hello = await bytes.take(18)
  if (hello.readBigUInt64BE(0) !== NBDMAGIC || hello.readBigUInt64BE(8) !== IHAVEOPT) throw new NbdProtocolError('not a newstyle NBD server')
  const flags = hello.readUInt16BE(16)
  if ((flags & FLAG_FIXED_NEWSTYLE) === 0) throw new NbdProtocolError('server is not fixed-newstyle')
  const cflags = Buffer.alloc(4)
  cflags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | (flags & FLAG_NO_ZEROES))
  sock.write(cflags)
}

/** An option request: IHAVEOPT, the option, its data. */
export function option (opt: number, data: Buffer): Buffer {
  const h = Buffer.alloc(16)
  h.writeBigUInt64BE(IHAVEOPT, 0)
  h.writeUInt32BE(opt, 8)
  h.writeUInt32BE(data.length, 12)
  return Buffer.concat([h, data])
}

/** One reply to option `opt`. */
export async function optionReply (bytes: SocketBytes, opt: number): Promise<{ type: number, body: Buffer }> {
  const h = await bytes.take(20)
  if (h.readBigUInt64BE(0) !== OPT_REPLY_MAGIC || h.readUInt32BE(8) !== opt) throw new NbdProtocolError('bad option reply')
  const len = h.readUInt32BE(16)
  if (len > MAX_OPTION_REPLY) throw new NbdProtocolError(`option reply of ${len} bytes`)
  return { type: h.readUInt32BE(12), body: await bytes.take(len) }
}

/** The error for a reply that is not what `what` needed (a refusal carries the server's text). */
export function refusal (what: string, r: { type: number, body: Buffer }): NbdProtocolError {
  if ((r.type & 0x80000000) !== 0) return new NbdProtocolError(`${what} refused (${r.type & 0x7fffffff}): ${r.body.toString('utf8').slice(0, 200)}`)
  return new NbdProtocolError(`unexpected option reply type ${r.type} to ${what}`)
}

/** NBD_OPT_GO for `exportName` (no information requests: NBD_INFO_EXPORT comes anyway); its size. */
export async function goExport (bytes: SocketBytes, sock: Socket, exportName: string): Promise<number> {
  const name = Buffer.from(exportName, 'utf8')
  const go = Buffer.alloc(4 + name.length + 2)
  go.writeUInt32BE(name.length, 0)
  name.copy(go, 4)
  go.writeUInt16BE(0, 4 + name.length)
  sock.write(option(OPT_GO, go))
  let size: number | null = null
  for (let guard = 0; guard < MAX_OPTION_REPLIES; guard++) {
    const r = await optionReply(bytes, OPT_GO)
    if (r.type === REP_ACK) {
      if (size === null) throw new NbdProtocolError('no export size before the acknowledgement')
      return size
    }
    if (r.type === REP_INFO) {
      if (r.body.length >= 12 && r.body.readUInt16BE(0) === INFO_EXPORT) {
        const s = r.body.readBigUInt64BE(2)
        if (s > BigInt(Number.MAX_SAFE_INTEGER)) throw new NbdProtocolError(`export size ${s}`)
        size = Number(s)
      }
      continue
    }
    throw refusal(`export ${exportName}`, r)
  }
  throw new NbdProtocolError('too many option replies')
}

/** A transmission request (28 bytes). */
export function request (type: number, handle: bigint, offset: number, length: number): Buffer {
  const req = Buffer.alloc(28)
  req.writeUInt32BE(REQUEST_MAGIC, 0)
  req.writeUInt16BE(0, 4)
  req.writeUInt16BE(type, 6)
  req.writeBigUInt64BE(handle, 8)
  req.writeBigUInt64BE(BigInt(offset), 16)
  req.writeUInt32BE(length, 24)
  return req
}
