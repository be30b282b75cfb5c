/**
 * NbdReader against scripted servers on a unix socket: the handshake and reads of a server
 * that follows the protocol, and typed errors (never a crash or a hang) for one that does not.
 */
import assert from 'node:assert/strict'
import { createServer, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import { NbdReader } from '../../../daemon/hypervisor/nbd-reader.ts'
import { tempDir } from '../../helpers/tmp.ts'

const IHAVEOPT = 0x49484156454f5054n

/** A server holding `data` as export "e"; `mutate` may spoil its replies. */
function nbdServer (path: string, data: Buffer, mutate: { helloMagic?: bigint, readError?: number, refuse?: boolean } = {}): Promise<Server> {
  const srv = createServer((s: Socket) => {
    let buf = Buffer.alloc(0)
    let phase: 'flags' | 'opt' | 'tx' = 'flags'
    const hello = Buffer.alloc(18)
    hello.writeBigUInt64BE(mutate.helloMagic ?? 0x4e42444d41474943n, 0)
    hello.writeBigUInt64BE(IHAVEOPT, 8)
    hello.writeUInt16BE(3, 16)
    s.write(hello)
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d])
      for (;;) {
        if (phase === 'flags') { if (buf.length < 4) return; buf = buf.subarray(4); phase = 'opt'; continue }
        if (phase === 'opt') {
          if (buf.length < 16) return
          const len = buf.readUInt32BE(12)
          if (buf.length < 16 + len) return
          buf = buf.subarray(16 + len)
          const rep = (type: number, body: Buffer): Buffer => {
            const h = Buffer.alloc(20)
            h.writeBigUInt64BE(0x3e889045565a9n, 0); h.writeUInt32BE(7, 8); h.writeUInt32BE(type, 12); h.writeUInt32BE(body.length, 16)
            return Buffer.concat([h, body])
          }
          if (mutate.refuse === true) { s.write(rep(0x80000006, Buffer.from('no such export'))); return }
          const info = Buffer.alloc(12)
          info.writeUInt16BE(0, 0); info.writeBigUInt64BE(BigInt(data.length), 2); info.writeUInt16BE(1, 10)
          s.write(Buffer.concat([rep(3, info), rep(1, Buffer.alloc(0))]))
          phase = 'tx'
          continue
        }
        if (buf.length < 28) return
        const type = buf.readUInt16BE(6)
        const handle = buf.readBigUInt64BE(8)
        const off = Number(buf.readBigUInt64BE(16))
        const len = buf.readUInt32BE(24)
        buf = buf.subarray(28)
        if (type === 2) { s.end(); return }
        const r = Buffer.alloc(16)
        r.writeUInt32BE(0x67446698, 0); r.writeUInt32BE(mutate.readError ?? 0, 4); r.writeBigUInt64BE(handle, 8)
        s.write(mutate.readError !== undefined ? r : Buffer.concat([r, data.subarray(off, off + len)]))
      }
    })
  })
  return new Promise(resolve => srv.listen(path, () => resolve(srv)))
}

describe('NbdReader', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let srv: Server | undefined
  beforeEach(async () => { ({ dir, cleanup } = await tempDir('vmesh-nbd-')) })
  afterEach(async () => { await new Promise(resolve => srv?.close(resolve) ?? resolve(undefined)); srv = undefined; await cleanup() })

  it('negotiates the export size and reads ranges, clipped at the end', async () => {
    const data = Buffer.from(Array.from({ length: 10000 }, (_, i) => i % 251))
    srv = await nbdServer(join(dir, 's'), data)
    const r = await NbdReader.open(join(dir, 's'), 'e')
    assert.equal(r.size, 10000)
    assert.deepEqual(await r.read(100, 50), data.subarray(100, 150))
    const [a, b] = await Promise.all([r.read(0, 4096), r.read(9000, 4096)])
    assert.deepEqual(a, data.subarray(0, 4096))
    assert.deepEqual(b, data.subarray(9000))
    await r.close()
  })

  it('a server that is not NBD, refuses the export or fails a read gives a typed error', async () => {
    srv = await nbdServer(join(dir, 'a'), Buffer.alloc(10), { helloMagic: 1n })
    await assert.rejects(NbdReader.open(join(dir, 'a'), 'e'), { name: 'NbdProtocolError' })
    await new Promise(resolve => srv?.close(resolve))
    srv = await nbdServer(join(dir, 'b'), Buffer.alloc(10), { refuse: true })
    await assert.rejects(NbdReader.open(join(dir, 'b'), 'e'), /refused/)
    await new Promise(resolve => srv?.close(resolve))
    srv = await nbdServer(join(dir, 'c'), Buffer.alloc(10), { readError: 5 })
    const r = await NbdReader.open(join(dir, 'c'), 'e')
    await assert.rejects(r.read(0, 4), { name: 'NbdProtocolError' })
    await r.close()
  })
})
