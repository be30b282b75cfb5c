/**
 * The dirty extents of a QEMU dirty bitmap, read in-process over NBD: fixed newstyle handshake,
 * NBD_OPT_STRUCTURED_REPLY, NBD_OPT_SET_META_CONTEXT `qemu:dirty-bitmap:NAME`, NBD_OPT_GO, then
 * NBD_CMD_BLOCK_STATUS over the whole export (the server may answer part of a request: we go on
 * from where its extents end), NBD_CMD_DISC. No data is read.
 *
 * Why not `nbdinfo --map` (libnbd) any more: it was one process per round, ~2 rounds a second
 * under a steady writer, and the spawn dominated the source daemon's CPU (12.6 % of a core in
 * the capture bench). libnbd has no Node binding and npm has NBD *servers* only (no maintained
 * client), so this is the few messages of the protocol the map needs, every field checked.
 *
 * Bounds: option replies ≤ 64 KiB, reply chunks ≤ 16 MiB, at most `maxExtents` dirty runs
 * before the caller's merge; anything odd is an NbdProtocolError (the round fails, the bitmap
 * is merged back by the caller, nothing is lost) — a wrong "clean" would lose writes, so
 * nothing is guessed.
 */
import { createConnection } from 'node:net'
import { systemClock, type Clock } from '../../common/clock.ts'
import { AbortedError } from '../../common/errors.ts'
import type { Range } from '../../storage/changes/range.ts'
import { NbdProtocolError } from './errors.ts'
import { CMD_BLOCK_STATUS, CMD_DISC, OPT_SET_META_CONTEXT, OPT_STRUCTURED_REPLY, REP_ACK, REP_META_CONTEXT, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC, SocketBytes, goExport, greet, option, optionReply, refusal, request } from './nbd-wire.ts'

const REPLY_FLAG_DONE = 1
const REPLY_TYPE_NONE = 0
const REPLY_TYPE_BLOCK_STATUS = 5
const REPLY_TYPE_ERROR_BIT = 0x8000
/** Bytes asked per block-status request (a u32 on the wire; QEMU answers any length). */
const MAX_STATUS_REQUEST = 0x80000000
const MAX_CHUNK = 16 * 1024 * 1024

export interface NbdMapOptions {
  /** Handshake and each request. @default 10000 */
  timeoutMs?: number
  signal?: AbortSignal
  /** Times the handshake and requests. @default systemClock */
  clock?: Clock
}

/**
 * Ranges of `exportName` whose status under `context` has bit 0 set (for
 * `qemu:dirty-bitmap:NAME`: dirty), adjacent ones merged.
 */
export async function readNbdMap (socketPath: string, exportName: string, context: string, o: NbdMapOptions = {}): Promise<Range[]> {
  if (o.signal?.aborted === true) throw new AbortedError('nbd map aborted', { cause: o.signal.reason })
  const timeoutMs = o.timeoutMs ?? 10_000
  const sock = createConnection(socketPath)
  const bytes = new SocketBytes(sock)
  const clock = o.clock ?? systemClock
  let timer: ReturnType<Clock['setTimeout']> | undefined
  const arm = (what: string): void => {
    clock.clearTimeout(timer)
    timer = clock.setTimeout(() => sock.destroy(new NbdProtocolError(`no answer to ${what} within ${timeoutMs} ms`)), timeoutMs)
  }
  const onAbort = (): void => { sock.destroy(new AbortedError('nbd map aborted', { cause: o.signal?.reason })) }
  o.signal?.addEventListener('abort', onAbort, { once: true })
  try {
    arm('the handshake')
    await greet(bytes, sock)

    const name = Buffer.from(exportName, 'utf8')
    const ctx = Buffer.from(context, 'utf8')
    // structured replies: block status needs them
    sock.write(option(OPT_STRUCTURED_REPLY, Buffer.alloc(0)))
    for (;;) {
      const r = await optionReply(bytes, OPT_STRUCTURED_REPLY)
      if (r.type === REP_ACK) break
      throw refusal('structured replies', r)
    }
    // the one meta context
    const meta = Buffer.alloc(4 + name.length + 4 + 4 + ctx.length)
    meta.writeUInt32BE(name.length, 0)
    name.copy(meta, 4)
    meta.writeUInt32BE(1, 4 + name.length)
    meta.writeUInt32BE(ctx.length, 8 + name.length)
    ctx.copy(meta, 12 + name.length)
    sock.write(option(OPT_SET_META_CONTEXT, meta))
    let contextId: number | null = null
    for (let guard = 0; ; guard++) {
      if (guard > 64) throw new NbdProtocolError('too many meta context replies')
      const r = await optionReply(bytes, OPT_SET_META_CONTEXT)
      if (r.type === REP_ACK) break
      if (r.type === REP_META_CONTEXT) {
        if (r.body.length < 4) throw new NbdProtocolError('short meta context reply')
        if (r.body.subarray(4).toString('utf8') !== context) throw new NbdProtocolError(`server chose meta context "${r.body.subarray(4).toString('utf8').slice(0, 200)}"`)
        contextId = r.body.readUInt32BE(0)
        continue
      }
      throw refusal(`meta context ${context}`, r)
    }
    if (contextId === null) throw new NbdProtocolError(`export ${exportName} has no meta context ${context} (bitmap not exported?)`)
    // the export
    const size = await goExport(bytes, sock, exportName)

    const out: Range[] = []
    let handle = 0n
    for (let at = 0; at < size;) {
      const want = Math.min(MAX_STATUS_REQUEST, size - at)
      const h = ++handle
      sock.write(request(CMD_BLOCK_STATUS, h, at, want))
      arm('a block-status request')
      const covered = await statusReply(bytes, h, contextId, at, want, size, out)
      if (covered <= 0) throw new NbdProtocolError(`block status at ${at} described nothing`)
      at += covered
    }
    clock.clearTimeout(timer)
    await new Promise<void>(resolve => { sock.end(request(CMD_DISC, ++handle, 0, 0), () => { resolve() }) })
    return out
  } finally {
    clock.clearTimeout(timer)
    o.signal?.removeEventListener('abort', onAbort)
    sock.destroy()
  }
}

/**
 * Reads one block-status reply (its chunks up to the one flagged done) and appends the
 * extents with bit 0 set to `out`, clipped to the export. Returns how many bytes from `at`
 * the extents described.
 */
async function statusReply (bytes: SocketBytes, handle: bigint, contextId: number, at: number, want: number, size: number, out: Range[]): Promise<number> {
  let covered = 0
  let sawStatus = false
  for (;;) {
    const magic = (await bytes.take(4)).readUInt32BE(0)
    if (magic === SIMPLE_REPLY_MAGIC) {
      // only allowed for an error once structured replies are on
      const rest = await bytes.take(12)
      throw new NbdProtocolError(`block status at ${at} failed with NBD error ${rest.readUInt32BE(0)} (simple reply)`)
    }
    if (magic !== STRUCTURED_REPLY_MAGIC) throw new NbdProtocolError(`bad reply magic 0x${magic.toString(16)}`)
    const h = await bytes.take(16)
    const flags = h.readUInt16BE(0)
    const type = h.readUInt16BE(2)
    if (h.readBigUInt64BE(4) !== handle) throw new NbdProtocolError('reply to a request we did not send')
    const len = h.readUInt32BE(12)
    if (len > MAX_CHUNK) throw new NbdProtocolError(`reply chunk of ${len} bytes`)
    const body = await bytes.take(len)
    if ((type & REPLY_TYPE_ERROR_BIT) !== 0) {
      const code = body.length >= 4 ? body.readUInt32BE(0) : -1
      const msgLen = body.length >= 6 ? body.readUInt16BE(4) : 0
      throw new NbdProtocolError(`block status at ${at} failed with NBD error ${code}${msgLen > 0 ? `: ${body.subarray(6, 6 + msgLen).toString('utf8').slice(0, 200)}` : ''}`)
    }
    if (type === REPLY_TYPE_BLOCK_STATUS) {
      if (sawStatus) throw new NbdProtocolError('two block-status chunks for one context')
      sawStatus = true
      if (len < 12 || (len - 4) % 8 !== 0) throw new NbdProtocolError(`block-status chunk of ${len} bytes`)
      if (body.readUInt32BE(0) !== contextId) throw new NbdProtocolError(`block status for context ${body.readUInt32BE(0)}, asked ${contextId}`)
      for (let o = 4; o < len; o += 8) {
        const elen = body.readUInt32BE(o)
        const status = body.readUInt32BE(o + 4)
        if (elen === 0) throw new NbdProtocolError('zero-length extent')
        const start = at + covered
        // the last extent may reach past the request (the server knew more); never past the export
        const end = Math.min(size, start + elen)
        if (end <= start) break
        if ((status & 1) !== 0) {
          const last = out[out.length - 1]
          if (last !== undefined && last.offset + last.length === start) last.length += end - start
          else out.push({ offset: start, length: end - start })
        }
        covered = end - at
      }
    } else if (type !== REPLY_TYPE_NONE) {
      throw new NbdProtocolError(`unexpected reply chunk type ${type} to block status`)
    }
    if ((flags & REPLY_FLAG_DONE) !== 0) break
  }
  if (!sawStatus) throw new NbdProtocolError(`no block status for ${want} bytes at ${at}`)
  return covered
}

