import assert from 'node:assert/strict'
import { WorkerPool } from '../../../storage/workers/pool.ts'
import { encodeBlocksTask, hashBlocksTask, readHashBlocksTask } from '../../../storage/workers/tasks.ts'
import { BlockEncoding } from '../../../protocol/delta/block.ts'
import type { EncodeBlocksResult, HashBlocksResult } from '../../../storage/workers/tasks.ts'
import { hash128, hash128Package, hashBlocksInto, isZero, blake3Impl } from '../../../storage/workers/block-hash.ts'
import { blockContent, KiB } from './helpers.ts'

import { lz4 } from '../../../common/lz4.ts'

function sample (): ArrayBuffer {
  const buf = new ArrayBuffer(16 * 64 * KiB)
  const u8 = new Uint8Array(buf)
  for (let i = 0; i < 16; i++) {
    if (i % 4 === 1) continue // zero block
    if (i % 4 === 2) u8.fill(0x61 + i, i * 64 * KiB, (i + 1) * 64 * KiB) // compressible
    else u8.set(blockContent(64 * KiB, i), i * 64 * KiB)
  }
  return buf
}

describe('workers (block hashing, encoding, pool)', function () {
  this.timeout(30_000)

  it('the direct native BLAKE3 path matches the blake3 package', () => {
    assert.equal(blake3Impl, 'native-direct')
    for (const n of [1, 4096, 65536, 100_000]) {
      const b = blockContent(n, n)
      assert.deepEqual([...hash128(b)], [...hash128Package(b)])
    }
    assert.ok(isZero(new Uint8Array(70_000)))
    const nz = new Uint8Array(70_000); nz[69_999] = 1
    assert.ok(!isZero(nz))
  })

  it('zero detection agrees with a byte-by-byte check, for short tails and single stray bytes', () => {
    const bs = 4 * KiB
    for (const length of [1, 7, bs - 1, bs, bs + 1, 3 * bs + 4095, 5 * bs]) {
      const blocks = Math.ceil(length / bs)
      // Patterns per block: all zero, first byte set, last byte (of the possibly short block) set, dense.
      for (let pattern = 0; pattern < 4; pattern++) {
        const data = new Uint8Array(length + 64).fill(0xff) // bytes past `length` must be ignored
        data.fill(0, 0, length)
        for (let b = 0; b < blocks; b++) {
          const start = b * bs
          const end = Math.min(start + bs, length)
          const p = (pattern + b) % 4
          if (p === 1) data[start] = 1
          else if (p === 2) data[end - 1] = 0x80
          else if (p === 3) data.set(blockContent(end - start, b), start)
        }
        const hashes = new Uint8Array(blocks * 16)
        const zeroMask = new Uint8Array(blocks).fill(7)
        assert.equal(hashBlocksInto(data, length, bs, hashes, zeroMask), blocks)
        for (let b = 0; b < blocks; b++) {
          const block = data.subarray(b * bs, Math.min((b + 1) * bs, length))
          const byteZero = block.every(x => x === 0)
          assert.equal(zeroMask[b], byteZero ? 1 : 0, `length ${length} pattern ${pattern} block ${b}`)
          assert.equal(isZero(block), byteZero)
          if (!byteZero) assert.deepEqual([...hashes.subarray(b * 16, b * 16 + 16)], [...hash128Package(block)])
        }
      }
    }
  })

  it('hashBlocks flags zero blocks and hashes the rest, including a short last block', () => {
    const buf = sample()
    const r = hashBlocksTask({ buf, length: buf.byteLength - 1000, blockSize: 64 * KiB })
    assert.equal(r.blocks, 16)
    const zero = new Uint8Array(r.zeroMask)
    assert.deepEqual([...zero].map((z, i) => z === 1 ? i : -1).filter(i => i >= 0), [1, 5, 9, 13])
    const last = new Uint8Array(buf, 15 * 64 * KiB, 64 * KiB - 1000)
    assert.deepEqual([...new Uint8Array(r.hashes, 15 * 16, 16)], [...hash128(last)])
  })

  it('encodeBlocks lz4-compresses what pays, and every payload decodes to the original', async () => {
    const buf = sample()
    const original = new Uint8Array(buf.slice(0))
    const blocks = Array.from({ length: 16 }, (_, i) => ({ offset: i * 64 * KiB, length: 64 * KiB }))
    {
      const r = encodeBlocksTask({ buf: buf.slice(0), blocks })
      const out = new Uint8Array(r.out)
      r.entries.forEach((e, i) => {
        const raw = original.subarray(i * 64 * KiB, (i + 1) * 64 * KiB)
        const payload = out.subarray(e.payloadOffset, e.payloadOffset + e.payloadLength)
        if (i % 4 === 1) assert.equal(e.encoding, BlockEncoding.Zero)
        else if (i % 4 === 2) assert.equal(e.encoding, BlockEncoding.Lz4)
        else assert.equal(e.encoding, BlockEncoding.Raw)
        let decoded: Uint8Array
        if (e.encoding === BlockEncoding.Zero) decoded = new Uint8Array(e.length)
        else if (e.encoding === BlockEncoding.Raw) decoded = payload
        else { decoded = new Uint8Array(e.length); assert.equal(lz4.decodeBlock(payload, decoded), e.length) }
        assert.deepEqual(Buffer.from(decoded), Buffer.from(raw))
        assert.deepEqual([...new Uint8Array(r.checksums, i * 16, 16)], [...hash128(raw)])
      })
    }
  })

  it('readHashBlocks reads and hashes in one step; a file ending early hashes the rest as zeros', async () => {
    const { mkdtemp, writeFile, rm } = await import('node:fs/promises')
    const { tmpdir } = await import('node:os')
    const { join } = await import('node:path')
    const dir = await mkdtemp(join(tmpdir(), 'vmesh-rh-'))
    try {
      const buf = sample()
      const path = join(dir, 'f')
      await writeFile(path, new Uint8Array(buf, 0, 10 * 64 * KiB + 5))
      const r = readHashBlocksTask({ path, offset: 0, length: 16 * 64 * KiB, blockSize: 64 * KiB })
      assert.equal(r.bytesRead, 10 * 64 * KiB + 5)
      const expected = new Uint8Array(16 * 64 * KiB)
      expected.set(new Uint8Array(buf, 0, 10 * 64 * KiB + 5))
      const inline = hashBlocksTask({ buf: expected.buffer, length: expected.length, blockSize: 64 * KiB })
      assert.deepEqual(new Uint8Array(r.zeroMask), new Uint8Array(inline.zeroMask))
      const z = new Uint8Array(r.zeroMask)
      const h1 = new Uint8Array(r.hashes)
      const h2 = new Uint8Array(inline.hashes)
      for (let i = 0; i < 16; i++) if (z[i] === 0) assert.deepEqual(h1.subarray(i * 16, i * 16 + 16), h2.subarray(i * 16, i * 16 + 16))
      assert.throws(() => readHashBlocksTask({ path: join(dir, 'missing'), offset: 0, length: 1, blockSize: 4096 }), { code: 'ENOENT' })
    } finally { await rm(dir, { recursive: true, force: true }) }
  })

  it('the pool runs tasks on worker threads with transferred buffers, same results as inline', async () => {
    const pool = new WorkerPool({}, { size: 2 })
    await pool.start()
    await pool.start() // idempotent
    try {
      const inline = hashBlocksTask({ buf: sample(), length: 16 * 64 * KiB, blockSize: 64 * KiB })
      const buf = sample()
      const r = await pool.run<HashBlocksResult>('hashBlocks', { buf, length: buf.byteLength, blockSize: 64 * KiB }, { transfer: [buf] })
      assert.equal(buf.byteLength, 0, 'input was transferred, not copied')
      assert.equal(r.buf.byteLength, 16 * 64 * KiB, 'and handed back')
      assert.deepEqual(new Uint8Array(r.hashes), new Uint8Array(inline.hashes))
      assert.deepEqual(new Uint8Array(r.zeroMask), new Uint8Array(inline.zeroMask))
      const enc = await pool.run<EncodeBlocksResult>('encodeBlocks', { buf: sample(), blocks: [{ offset: 2 * 64 * KiB, length: 64 * KiB }] })
      assert.equal(enc.entries[0]?.encoding, BlockEncoding.Lz4)
      const many = await Promise.all(Array.from({ length: 20 }, async (_, i) => await pool.run<number>('echo', i)))
      assert.deepEqual(many, Array.from({ length: 20 }, (_, i) => i))
    } finally {
      await pool.stop()
      await pool.stop()
    }
  })

  it('a failing task rejects with its remote code; a crashed worker is replaced', async () => {
    const pool = new WorkerPool({}, { size: 1 })
    await pool.start()
    try {
      await assert.rejects(pool.run('fail', null), (e: Error & { code?: string, remoteCode?: string }) => e.code === 'ERR_WORKER_TASK' && e.remoteCode === 'ERR_TEST_FAIL')
      await assert.rejects(pool.run('nope', null), (e: Error & { remoteCode?: string }) => e.remoteCode === 'ERR_WORKER_UNKNOWN_TASK')
      await assert.rejects(pool.run('crash', null), { name: 'WorkerCrashedError', code: 'ERR_WORKER_CRASHED' })
      assert.equal(await pool.run('echo', 'alive'), 'alive')
    } finally { await pool.stop() }
  })

  it('bounded queue, abort of a queued task, and rejection after stop', async () => {
    const pool = new WorkerPool({}, { size: 1, maxQueue: 2, pipeline: 1 })
    await pool.start()
    const busy = pool.run('echo', 1)
    const q1 = pool.run('echo', 2)
    const ac = new AbortController()
    const q2 = pool.run('echo', 3, { signal: ac.signal })
    await assert.rejects(pool.run('echo', 4), { name: 'WorkerQueueFullError', code: 'ERR_WORKER_QUEUE_FULL' })
    ac.abort()
    await assert.rejects(q2, { code: 'ERR_ABORTED' })
    assert.deepEqual(await Promise.all([busy, q1]), [1, 2])
    await pool.stop()
    await assert.rejects(pool.run('echo', 5), { name: 'WorkerPoolStoppedError', code: 'ERR_WORKER_POOL_STOPPED' })
  })

  it('hands each worker up to `pipeline` tasks, least loaded first; a crash fails all it held', async () => {
    const pool = new WorkerPool({}, { size: 2, pipeline: 2 })
    await pool.start()
    try {
      const six = Array.from({ length: 6 }, async (_, i) => await pool.run<number>('echo', i))
      assert.equal(pool.queued, 2, 'four handed out at once, two wait')
      assert.deepEqual(await Promise.all(six), [0, 1, 2, 3, 4, 5])
      assert.equal(pool.queued, 0)
      // Size 1: the crash and the task queued behind it in the same worker both fail; the
      // replacement worker takes the next one.
      const solo = new WorkerPool({}, { size: 1, pipeline: 2 })
      await solo.start()
      try {
        const crash = solo.run('crash', null)
        const behind = solo.run('echo', 'behind')
        const later = solo.run('echo', 'later')
        assert.equal(solo.queued, 1)
        await assert.rejects(crash, { code: 'ERR_WORKER_CRASHED' })
        await assert.rejects(behind, { code: 'ERR_WORKER_CRASHED' })
        assert.equal(await later, 'later')
      } finally { await solo.stop() }
    } finally { await pool.stop() }
  })

  it('a script that cannot start fails start() instead of respawning forever', async () => {
    const pool = new WorkerPool({}, { size: 1, script: new URL('./does-not-exist.ts', import.meta.url) })
    await assert.rejects(pool.start(), { code: 'ERR_WORKER_CRASHED' })
    assert.equal(pool.isRunning, false)
  })
})
