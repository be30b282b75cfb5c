/**
 * readNbdMap against scripted NBD servers on a unix socket: the options a dirty-bitmap read
 * needs (structured replies, one meta context, go), block status answered in parts, extents
 * merged and clipped; typed errors (NbdProtocolError, asserted by name) for a server that
 * refuses or breaks the protocol, and for one that never answers (virtual time).
 */
import assert from 'node:assert/strict'
import { createServer, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import { ManualClock } from '../../../common/clock.ts'
import { readNbdMap } from '../../../daemon/hypervisor/nbd-map.ts'
import { tempDir } from '../../helpers/tmp.ts'

const IHAVEOPT = 0x49484156454f5054n
const CTX = 'qemu:dirty-bitmap:b1'

interface Script {
  size: number
  /** Extents [length, status] answered per block-status request (one list per request, in order). */
  replies: Array<Array<[number, number]>>
  /** Which meta context names the server offers (default: the asked one). */
  offer?: string | null
  refuseStructured?: boolean
  errorChunk?: boolean
  badMagic?: boolean
  silent?: boolean
}

interface Seen { options: number[], metaExport?: string, metaQuery?: string, goExport?: string, requests: Array<[number, number]> }

function optReply (opt: number, type: number, body: Buffer): Buffer {
  const h = Buffer.alloc(20)
  h.writeBigUInt64BE(0x3e889045565a9n, 0); h.writeUInt32BE(opt, 8); h.writeUInt32BE(type, 12); h.writeUInt32BE(body.length, 16)
  return Buffer.concat([h, body])
}

function chunk (flags: number, type: number, handle: bigint, body: Buffer): Buffer {
  const h = Buffer.alloc(20)
  h.writeUInt32BE(0x668e33ef, 0); h.writeUInt16BE(flags, 4); h.writeUInt16BE(type, 6); h.writeBigUInt64BE(handle, 8); h.writeUInt32BE(body.length, 16)
  return Buffer.concat([h, body])
}

async function server (path: string, sc: Script, seen: Seen): Promise<Server> {
  const srv = createServer((s: Socket) => {
    let buf = Buffer.alloc(0)
    let phase: 'flags' | 'opt' | 'tx' = 'flags'
    let req = 0
    const hello = Buffer.alloc(18)
    hello.writeBigUInt64BE(0x4e42444d41474943n, 0); hello.writeBigUInt64BE(IHAVEOPT, 8); hello.writeUInt16BE(3, 16)
    s.write(hello)
    s.on('error', () => {})
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d])
      for (;;) {
        if (phase === 'flags') { if (buf.length < 4) return; buf = buf.subarray(4); phase = 'opt'; continue }
        if (phase === 'opt') {
          if (buf.length < 16) return
          const opt = buf.readUInt32BE(8)
          const len = buf.readUInt32BE(12)
          if (buf.length < 16 + len) return
          const data = buf.subarray(16, 16 + len)
          buf = buf.subarray(16 + len)
          seen.options.push(opt)
          if (opt === 8) { s.write(optReply(8, sc.refuseStructured === true ? 0x80000001 : 1, Buffer.alloc(0))); continue }
          if (opt === 10) {
            const nl = data.readUInt32BE(0)
            seen.metaExport = data.subarray(4, 4 + nl).toString()
            seen.metaQuery = data.subarray(12 + nl).toString()
            const offer = sc.offer === undefined ? seen.metaQuery : sc.offer
            if (offer !== null) {
              const b = Buffer.alloc(4 + Buffer.byteLength(offer)); b.writeUInt32BE(7, 0); b.write(offer, 4)
              s.write(optReply(10, 4, b))
            }
            s.write(optReply(10, 1, Buffer.alloc(0)))
            continue
          }
          if (opt === 7) {
            seen.goExport = data.subarray(4, 4 + data.readUInt32BE(0)).toString()
            const info = Buffer.alloc(12)
            info.writeUInt16BE(0, 0); info.writeBigUInt64BE(BigInt(sc.size), 2); info.writeUInt16BE(1, 10)
            s.write(Buffer.concat([optReply(7, 3, info), optReply(7, 1, Buffer.alloc(0))]))
            phase = 'tx'
            continue
          }
          return
        }
        if (buf.length < 28) return
        const type = buf.readUInt16BE(6)
        const handle = buf.readBigUInt64BE(8)
        const off = Number(buf.readBigUInt64BE(16))
        const len = buf.readUInt32BE(24)
        buf = buf.subarray(28)
        if (type === 2) { s.end(); return }
        seen.requests.push([off, len])
        if (sc.silent === true) return
        if (sc.badMagic === true) { s.write(Buffer.alloc(20, 0xab)); return }
        if (sc.errorChunk === true) {
          const b = Buffer.alloc(6 + 4); b.writeUInt32BE(5, 0); b.writeUInt16BE(4, 4); b.write('EIO!', 6)
          s.write(chunk(1, 0x8001, handle, b))
          return
        }
        const ext = sc.replies[req++] ?? []
        const b = Buffer.alloc(4 + 8 * ext.length)
        b.writeUInt32BE(7, 0)
        ext.forEach(([l, st], i) => { b.writeUInt32BE(l, 4 + 8 * i); b.writeUInt32BE(st, 8 + 8 * i) })
        // the status chunk, then a separate NONE chunk flagged done (both shapes are legal)
        s.write(Buffer.concat([chunk(0, 5, handle, b), chunk(1, 0, handle, Buffer.alloc(0))]))
      }
    })
  })
  await new Promise<void>(resolve => srv.listen(path, resolve))
  return srv
}

describe('hypervisor/nbd-map: dirty extents over NBD block status', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let n = 0
  before(async () => { ({ dir, cleanup } = await tempDir()) })
  after(async () => { await cleanup() })

  async function withServer<T> (sc: Script, fn: (path: string, seen: Seen) => Promise<T>): Promise<T> {
    const path = join(dir, `s${n++}.sock`)
    const seen: Seen = { options: [], requests: [] }
    const srv = await server(path, sc, seen)
    try { return await fn(path, seen) } finally { srv.close() }
  }

  it('negotiates structured replies + the one meta context + go on the same export; follows partial answers; merges and clips', async () => {
    const size = 1024 * 1024
    await withServer({
      size,
      replies: [
        // the server answers only the first 256 KiB of the first request
        [[4096, 1], [4096, 1], [65536 - 8192, 0], [4096, 1], [256 * 1024 - 65536 - 4096, 0]],
        // the rest; the last extent reaches past the export (allowed): clipped
        [[512 * 1024, 0], [512 * 1024, 1]]
      ]
    }, async (path, seen) => {
      const ranges = await readNbdMap(path, 'exp1', CTX)
      assert.deepEqual(seen.options, [8, 10, 7])
      assert.equal(seen.metaExport, 'exp1')
      assert.equal(seen.metaQuery, CTX)
      assert.equal(seen.goExport, 'exp1')
      assert.deepEqual(seen.requests, [[0, size], [256 * 1024, size - 256 * 1024]])
      assert.deepEqual(ranges, [
        { offset: 0, length: 8192 },
        { offset: 65536, length: 4096 },
        { offset: 256 * 1024 + 512 * 1024, length: 256 * 1024 }
      ])
    })
  })

  it('typed errors: context not offered, structured replies refused, an error chunk, a bad magic, a zero-length extent', async () => {
    const cases: Array<[Script, RegExp]> = [
      [{ size: 65536, replies: [], offer: null }, /no meta context/],
      [{ size: 65536, replies: [], offer: 'base:allocation' }, /chose meta context/],
      [{ size: 65536, replies: [], refuseStructured: true }, /structured replies refused/],
      [{ size: 65536, replies: [], errorChunk: true }, /NBD error 5: EIO!/],
      [{ size: 65536, replies: [], badMagic: true }, /bad reply magic/],
      [{ size: 65536, replies: [[[0, 1]]] }, /zero-length extent/],
      [{ size: 65536, replies: [[]] }, /block-status chunk of 4 bytes/]
    ]
    for (const [sc, msg] of cases) {
      await withServer(sc, async (path) => {
        await assert.rejects(readNbdMap(path, 'e', CTX), (err: Error & { code?: string }) => {
          assert.equal(err.name, 'NbdProtocolError', err.message)
          assert.equal(err.code, 'ERR_NBD_PROTOCOL')
          assert.match(err.message, msg)
          return true
        })
      })
    }
  })

  it('a server that never answers a request: NbdProtocolError when the (virtual) timeout passes', async () => {
    const clock = new ManualClock()
    await withServer({ size: 65536, replies: [], silent: true }, async (path, seen) => {
      const p = readNbdMap(path, 'e', CTX, { clock, timeoutMs: 5000 })
      const rejected = assert.rejects(p, { name: 'NbdProtocolError', message: /no answer to a block-status request within 5000 ms/ })
      // wait (without sleeping) until the request reached the server, then pass the timeout
      for (let i = 0; seen.requests.length === 0 && i < 100_000; i++) await new Promise(resolve => setImmediate(resolve))
      clock.advance(5000)
      await rejected
    })
  })

  it('an abort ends the read with AbortedError', async () => {
    await withServer({ size: 65536, replies: [], silent: true }, async (path, seen) => {
      const ac = new AbortController()
      const p = readNbdMap(path, 'e', CTX, { signal: ac.signal })
      const rejected = assert.rejects(p, { name: 'AbortedError' })
      for (let i = 0; seen.requests.length === 0 && i < 100_000; i++) await new Promise(resolve => setImmediate(resolve))
      ac.abort()
      await rejected
    })
  })
})
