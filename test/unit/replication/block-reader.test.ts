import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { SeededRandom } from '../../../common/random.ts'
import { readChangedBlocks } from '../../../daemon/replication/block-reader.ts'
import { tempDir } from '../../helpers/tmp.ts'

describe('replication block reader', () => {
  let tmp: { dir: string, cleanup: () => Promise<void> }
  beforeEach(async () => { tmp = await tempDir('vmesh-blocks-') })
  afterEach(async () => { await tmp.cleanup() })

  it('yields the blocks of the ranges in order, cut at block boundaries, skipping what the target holds', async () => {
    const rng = new SeededRandom(4)
    const bs = 4096
    const size = 3 * 1024 * 1024 + 1000
    const data = Buffer.alloc(size)
    for (let i = 0; i < size; i++) data[i] = rng.int(256)
    const path = join(tmp.dir, 'disk.img')
    await writeFile(path, data)
    // a range starting mid-block, a long run crossing several read chunks, scattered blocks, the short tail
    const ranges = [{ offset: 100, length: 5000 }, { offset: 8 * bs, length: 2 * 1024 * 1024 }, ...[600, 650, 700].map(b => ({ offset: b * bs, length: bs })), { offset: size - 1000 - bs, length: bs + 1000 }]
    const skip = new Set([9, 10, 650])
    const want: Array<{ offset: number, length: number }> = []
    for (const r of ranges) {
      for (let at = r.offset; at < r.offset + r.length;) {
        const len = Math.min(bs - (at % bs), r.offset + r.length - at)
        if (!(len === bs && skip.has(at / bs))) want.push({ offset: at, length: len })
        at += len
      }
    }
    const got: Array<{ offset: number, length: number }> = []
    for await (const b of readChangedBlocks({ path, ranges, blockSize: bs, skip, signal: new AbortController().signal })) {
      got.push({ offset: b.offset, length: b.data.byteLength })
      assert.ok(Buffer.from(b.data).equals(data.subarray(b.offset, b.offset + b.data.byteLength)), `bytes at ${b.offset}`)
    }
    assert.deepEqual(got, want)
  })

  it('reads zeros past the end of a file that shrank, and stops when aborted', async () => {
    const path = join(tmp.dir, 'short.img')
    await writeFile(path, Buffer.alloc(6000, 1))
    const blocks = []
    for await (const b of readChangedBlocks({ path, ranges: [{ offset: 4096, length: 4096 }], blockSize: 4096, signal: new AbortController().signal })) blocks.push(b)
    assert.equal(blocks.length, 1)
    assert.deepEqual(Buffer.from(blocks[0]?.data ?? []), Buffer.concat([Buffer.alloc(6000 - 4096, 1), Buffer.alloc(8192 - 6000)]))
    const ac = new AbortController()
    const it = readChangedBlocks({ path, ranges: [{ offset: 0, length: 4096 }, { offset: 4096, length: 4096 }], blockSize: 1024, signal: ac.signal })
    await it.next()
    ac.abort()
    await assert.rejects(async () => { for (let r = await it.next(); r.done !== true; r = await it.next()) { /* drain */ } }, (err: Error) => err.name === 'AbortedError')
  })
})
