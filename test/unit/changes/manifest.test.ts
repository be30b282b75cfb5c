import assert from 'node:assert/strict'
import type { Level } from 'level'
import { FileManifest, MANIFEST_VERSION, Manifest } from '../../../storage/manifest/manifest.ts'
import { BlockGroup, GROUP_BLOCKS, GROUP_TAG, GROUP_VALUE_BYTES, SLOT_ABSENT, SLOT_HASH, SLOT_TOMBSTONE } from '../../../storage/manifest/group.ts'
import { binarySublevel } from '../../../storage/manifest/db.ts'
import { tempDb, tempDir } from './helpers.ts'
import type { TempDir } from './helpers.ts'

const h = (n: number): Uint8Array => new Uint8Array(16).fill(n)

/** A group with `hashes` (block index → fill byte) stamped with generation `gen`. */
function group (index: number, hashes: Record<number, number>, gen = 1): BlockGroup {
  const g = new BlockGroup(index, null)
  for (const [i, n] of Object.entries(hashes)) g.set(Number(i) - index * GROUP_BLOCKS, h(n), 0, gen)
  return g
}

describe('manifest', () => {
  let dir: TempDir
  let db: Level<Uint8Array, Uint8Array>

  beforeEach(async () => { dir = await tempDir(); db = await tempDb(dir.path) })
  afterEach(async () => { await db.close(); await dir.cleanup() })

  it('a block group keeps hashes, tombstones and generations per slot, copying on first write', () => {
    const g = new BlockGroup(3, null)
    assert.equal(g.isEmpty(), true)
    assert.equal(g.firstBlock, 3 * GROUP_BLOCKS)
    const src = new Uint8Array(40).fill(0xaa)
    src.set(h(7), 20)
    g.set(0, src, 20, 0xfffffffe)
    g.set(GROUP_BLOCKS - 1, null, 0, 9)
    assert.equal(g.dirty, true)
    assert.equal(g.state(0), SLOT_HASH)
    assert.equal(g.generation(0), 0xfffffffe)
    assert.deepEqual([...(g.hash(0) as Uint8Array)], [...h(7)])
    assert.ok(g.hashEquals(0, src, 20))
    assert.ok(!g.hashEquals(0, src, 19))
    assert.equal(g.state(GROUP_BLOCKS - 1), SLOT_TOMBSTONE)
    assert.equal(g.hash(GROUP_BLOCKS - 1), null)
    assert.ok(!g.hashEquals(GROUP_BLOCKS - 1, new Uint8Array(16), 0), 'a tombstone equals no hash, not even zeros')
    assert.equal(g.state(1), SLOT_ABSENT)
    const stored = g.encode()
    assert.equal(stored.length, GROUP_VALUE_BYTES)
    const back = BlockGroup.decode(3, stored)
    assert.equal(back.dirty, false)
    back.set(0, h(8), 0, 2)
    assert.equal(g.generation(0), 0xfffffffe, 'the decoded value was not written through')
    back.clear(0)
    back.clear(GROUP_BLOCKS - 1)
    assert.equal(back.isEmpty(), true)
  })

  it('refuses group values it did not write', () => {
    const good = group(0, { 1: 1 }).encode()
    assert.throws(() => BlockGroup.decode(0, good.subarray(1)), { name: 'ManifestCorruptError', code: 'ERR_MANIFEST_CORRUPT' })
    const badTag = new Uint8Array(good); badTag[0] = GROUP_TAG + 1
    assert.throws(() => BlockGroup.decode(0, badTag), { code: 'ERR_MANIFEST_CORRUPT' })
    const badState = new Uint8Array(good); badState[1 + 5] = 3
    assert.throws(() => BlockGroup.decode(0, badState), { code: 'ERR_MANIFEST_CORRUPT' })
  })

  it('writes through bounded batches and reads back in index order', async () => {
    const fm = new Manifest(binarySublevel(db, 'm')).file('/vms/a.vhdx')
    await fm.putMeta(FileManifest.newMeta(65536))
    const w = fm.writer(4)
    const want: number[] = []
    for (let g = 30; g >= 0; g -= 3) {
      const blocks: Record<number, number> = {}
      for (const s of [0, 5, GROUP_BLOCKS - 1]) { blocks[g * GROUP_BLOCKS + s] = g & 0xff; want.push(g * GROUP_BLOCKS + s) }
      await w.putGroup(group(g, blocks, g + 1))
      assert.ok(w.pending < 4, 'flushed along the way')
    }
    await w.putGroup(new BlockGroup(99, null)) // empty: a delete, not a value
    await w.commit({ ...FileManifest.newMeta(65536), generation: 1 })
    want.sort((a, b) => a - b)
    const seen: number[] = []
    for await (const e of fm.entries()) {
      seen.push(e.index)
      assert.equal(e.generation, Math.floor(e.index / GROUP_BLOCKS) + 1)
      assert.equal(e.hash?.[0], Math.floor(e.index / GROUP_BLOCKS))
    }
    assert.deepEqual(seen, want)
    // A window that starts and ends inside groups.
    const lo = 3 * GROUP_BLOCKS + 1
    const hi = 9 * GROUP_BLOCKS + 5
    const part: number[] = []
    for await (const e of fm.entries(lo, hi)) part.push(e.index)
    assert.deepEqual(part, want.filter(i => i >= lo && i < hi))
    const c = fm.groups(lo, hi)
    assert.equal(await c.peekIndex(), 3)
    assert.equal((await c.next())?.index, 3)
    assert.equal((await c.next())?.index, 6)
    assert.equal((await c.next())?.index, 9)
    assert.equal(await c.next(), null)
    await c.close()
    assert.equal((await fm.getEntry(6 * GROUP_BLOCKS + 5))?.generation, 7)
    assert.equal(await fm.getEntry(6 * GROUP_BLOCKS + 6), null)
    assert.equal(await fm.getEntry(99 * GROUP_BLOCKS), null)
    assert.equal((await fm.meta())?.generation, 1)
  })

  it('a cursor reads past batches that LevelDB cuts short by size (many groups, read ahead)', async () => {
    const fm = new Manifest(binarySublevel(db, 'm')).file('big')
    await fm.putMeta(FileManifest.newMeta(65536))
    const w = fm.writer()
    const stored: number[] = []
    for (let g = 0; g < 700; g++) {
      if (g % 7 === 3) continue
      const blocks: Record<number, number> = {}
      for (let s = 0; s < GROUP_BLOCKS; s += 2) blocks[g * GROUP_BLOCKS + s] = g & 0xff
      await w.putGroup(group(g, blocks))
      stored.push(g)
    }
    await w.flush()
    const c = fm.groups()
    const seen: number[] = []
    for (let grp = await c.next(); grp !== null; grp = await c.next()) seen.push(grp.index)
    await c.close()
    assert.deepEqual(seen, stored)
    let entries = 0
    for await (const e of fm.entries(5, 650 * GROUP_BLOCKS + 1)) { entries++; assert.equal(e.hash?.[0], Math.floor(e.index / GROUP_BLOCKS) & 0xff) }
    // Group 0 loses blocks 0, 2, 4 to the window start; group 650 contributes its block 0.
    assert.equal(entries, stored.filter(g => g < 650).length * GROUP_BLOCKS / 2 - 3 + 1)
    // Closing early, with a read-ahead in flight, is clean.
    const early = fm.groups()
    assert.equal((await early.next())?.index, 0)
    await early.close()
  })

  it('keeps files and sublevels apart, even when one name prefixes another', async () => {
    const m1 = new Manifest(binarySublevel(db, 'vm1'))
    const m2 = new Manifest(binarySublevel(db, 'vm2'))
    const a = m1.file('/d/a')
    const ab = m1.file('/d/ab')
    for (const [fm, n] of [[a, 1], [ab, 2], [m2.file('/d/a'), 3]] as const) {
      const w = fm.writer()
      await w.putGroup(group(0, { 0: n }))
      await w.commit(FileManifest.newMeta(65536))
    }
    const onlyA = []
    for await (const e of a.entries()) onlyA.push(e)
    assert.equal(onlyA.length, 1)
    assert.equal(onlyA[0]?.hash?.[0], 1)
    assert.deepEqual((await m1.files()).sort(), ['/d/a', '/d/ab'])
    assert.deepEqual(await m2.files(), ['/d/a'])
    await a.clear()
    assert.equal(await a.meta(), null)
    assert.equal(await a.getEntry(0), null)
    assert.equal((await ab.getEntry(0))?.hash?.[0], 2)
  })

  it('reports an unreadable meta record as corrupt', async () => {
    const sub = binarySublevel(db, 'm')
    const fm = new Manifest(sub).file('x')
    await sub.put(new Uint8Array([0x4d, 0x78]), new TextEncoder().encode('{nope'))
    await assert.rejects(fm.meta(), { code: 'ERR_MANIFEST_CORRUPT' })
  })

  it('a manifest in the old per-block layout is not read as empty, and clear() removes it', async () => {
    const sub = binarySublevel(db, 'm')
    const fm = new Manifest(sub).file('x')
    assert.equal(MANIFEST_VERSION, 2)
    await fm.putMeta({ ...FileManifest.newMeta(65536), v: 1, generation: 4 })
    // A v1 entry: 'B' + u16 len + key + u64 index → hash + u32 generation.
    const legacyKey = new Uint8Array([0x42, 0, 1, 0x78, 0, 0, 0, 0, 0, 0, 0, 7])
    await sub.put(legacyKey, new Uint8Array(20).fill(1))
    assert.equal((await fm.meta())?.generation, 4, 'meta stays readable for generation/stat checks')
    await assert.rejects(async () => { for await (const e of fm.entries()) assert.fail(`read ${e.index}`) }, { name: 'ManifestVersionError', code: 'ERR_MANIFEST_VERSION' })
    await assert.rejects(fm.getEntry(7), { code: 'ERR_MANIFEST_VERSION' })
    await fm.clear()
    assert.equal(await sub.get(legacyKey), undefined)
    assert.equal(await fm.meta(), null)
  })
})
