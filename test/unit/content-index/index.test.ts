import assert from 'node:assert/strict'
import { join } from 'node:path'
import { mkdir, writeFile, rm } from 'node:fs/promises'
import { blake3 } from '../../../common/blake3.ts'
import { ContentIndex } from '../../../storage/content-index/index.ts'
import { tempDir } from '../../helpers/tmp.ts'

const BS = 4096
const h = (b: Uint8Array): Uint8Array => blake3(b, 16)
const block = (seed: number): Buffer => Buffer.alloc(BS, seed)

describe('storage/content-index', function () {
  let dir: string
  let cleanup: () => Promise<void>
  let root: string
  let file: string
  let index: ContentIndex | undefined

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('vmesh-cindex-'))
    root = join(dir, 'replicas')
    await mkdir(join(root, 'hv-a', 'vm1', 'files'), { recursive: true })
    file = join(root, 'hv-a', 'vm1', 'files', 'disk.img')
    // blocks 0..7 hold bytes 1..8
    await writeFile(file, Buffer.concat(Array.from({ length: 8 }, (_, i) => block(i + 1))))
  })
  afterEach(async () => { await index?.close(); index = undefined; await cleanup() })

  const open = async (maxEntries?: number, maxQueuedEntries?: number): Promise<ContentIndex> =>
    await ContentIndex.open({}, { dir: join(dir, 'content-index'), root, ...(maxEntries !== undefined ? { maxEntries } : {}), ...(maxQueuedEntries !== undefined ? { maxQueuedEntries } : {}) })

  it('hands out a block found by hash, read back and verified', async () => {
    index = await open()
    assert.equal(index.add(h(block(3)), { path: file, offset: 2 * BS, length: BS }), true)
    await index.flush()
    const [got, none] = await index.fetchMany([{ hash: h(block(3)), length: BS }, { hash: h(block(99)), length: BS }])
    assert.deepEqual(got, block(3))
    assert.equal(none, undefined)
    assert.deepEqual({ hits: index.stats().hits, misses: index.stats().misses }, { hits: 1, misses: 1 })
  })

  it('refuses a stale entry (the block changed since) and forgets it; never hands out other bytes', async () => {
    index = await open()
    index.add(h(block(5)), { path: file, offset: 4 * BS, length: BS })
    index.add(h(block(6)), { path: file, offset: 5 * BS, length: BS })
    // an entry recorded with the wrong length is not used either
    index.add(h(block(7)), { path: file, offset: 6 * BS, length: BS - 1 })
    await index.flush()
    const fh = await import('node:fs/promises').then(async m => await m.open(file, 'r+'))
    await fh.write(Buffer.alloc(10, 0xee), 0, 10, 4 * BS + 100)
    await fh.close()
    const got = await index.fetchMany([{ hash: h(block(5)), length: BS }, { hash: h(block(6)), length: BS }, { hash: h(block(7)), length: BS }])
    assert.equal(got[0], undefined, 'overwritten block: not held')
    assert.deepEqual(got[1], block(6))
    assert.equal(got[2], undefined)
    assert.equal(index.stats().stale, 1)
    await index.flush()
    assert.equal(await index.lookup(h(block(5))), undefined, 'the stale entry is deleted')
    // a file that is gone: not held
    await rm(file)
    assert.deepEqual(await index.fetchMany([{ hash: h(block(6)), length: BS }]), [undefined])
  })

  it('takes only paths under its root', async () => {
    index = await open()
    assert.equal(index.add(h(block(1)), { path: join(dir, 'elsewhere.img'), offset: 0, length: BS }), false)
    assert.equal(index.add(h(block(1)), { path: 'relative.img', offset: 0, length: BS }), false)
    assert.equal(index.add(h(block(1)), { path: join(root, '..', 'x.img'), offset: 0, length: BS }), false)
    assert.equal(index.add(new Uint8Array(15), { path: file, offset: 0, length: BS }), false)
  })

  it('keeps at most maxEntries, the oldest evicted first; a re-added hash moves to the back', async () => {
    index = await open(4)
    for (let i = 0; i < 8; i++) index.add(h(block(i + 1)), { path: file, offset: i * BS, length: BS })
    await index.flush()
    assert.ok(index.stats().entries <= 4, `entries ${index.stats().entries}`)
    for (let i = 0; i < 4; i++) assert.equal(await index.lookup(h(block(i + 1))), undefined, `block ${i} evicted`)
    for (let i = 4; i < 8; i++) assert.deepEqual(await index.lookup(h(block(i + 1))), { path: file, offset: i * BS, length: BS })
    // block 5 (oldest kept) re-added: block 6 is evicted by the next add instead
    index.add(h(block(5)), { path: file, offset: 4 * BS, length: BS })
    index.add(h(block(1)), { path: file, offset: 0, length: BS })
    await index.flush()
    assert.ok(index.stats().entries <= 4)
    assert.notEqual(await index.lookup(h(block(5))), undefined)
    assert.equal(await index.lookup(h(block(6))), undefined)
    assert.notEqual(await index.lookup(h(block(1))), undefined)
  })

  it('survives a restart, and a smaller bound evicts at open', async () => {
    index = await open(100)
    for (let i = 0; i < 8; i++) index.add(h(block(i + 1)), { path: file, offset: i * BS, length: BS })
    await index.close()
    index = await open(100)
    assert.equal(index.stats().entries, 8)
    assert.deepEqual(await index.fetchMany([{ hash: h(block(8)), length: BS }]), [block(8)])
    await index.close()
    index = await open(3)
    assert.equal(index.stats().entries, 3)
    assert.equal(await index.lookup(h(block(5))), undefined)
    assert.notEqual(await index.lookup(h(block(8))), undefined)
    // and it goes on numbering after the kept entries
    index.add(h(block(1)), { path: file, offset: 0, length: BS })
    await index.flush()
    assert.equal(index.stats().entries, 3)
    assert.notEqual(await index.lookup(h(block(1))), undefined)
  })

  it('drops (and counts) additions beyond its queue instead of growing memory', async () => {
    index = await open(1000, 2)
    let taken = 0
    for (let i = 0; i < 50; i++) if (index.add(h(block(i + 1)), { path: file, offset: (i % 8) * BS, length: BS })) taken++
    await index.flush()
    assert.ok(taken < 50 && taken >= 2, `taken ${taken}`)
    assert.equal(index.stats().dropped, 50 - taken)
  })
})
