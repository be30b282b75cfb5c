import assert from 'node:assert/strict'
import type { Level } from 'level'
import { FileManifest, Manifest, decodeEntry, encodeEntry } from '../../../storage/manifest/manifest.ts'
import { binarySublevel } from '../../../storage/manifest/db.ts'
import { tempDb, tempDir } from './helpers.ts'
import type { TempDir } from './helpers.ts'

const h = (n: number): Uint8Array => new Uint8Array(16).fill(n)

describe('manifest', () => {
  let dir: TempDir
  let db: Level<Uint8Array, Uint8Array>

  beforeEach(async () => { dir = await tempDir(); db = await tempDb(dir.path) })
  afterEach(async () => { await db.close(); await dir.cleanup() })

  it('encodes hash entries and tombstones distinctly, refusing other lengths', () => {
    const e = decodeEntry(5, encodeEntry(h(9), 42))
    assert.deepEqual([...(e.hash as Uint8Array)], [...h(9)])
    assert.equal(e.generation, 42)
    const t = decodeEntry(6, encodeEntry(null, 7))
    assert.equal(t.hash, null)
    assert.equal(t.generation, 7)
    assert.throws(() => decodeEntry(1, new Uint8Array(5)), { name: 'ManifestCorruptError', code: 'ERR_MANIFEST_CORRUPT' })
  })

  it('writes through bounded batches and reads back in index order via a cursor', async () => {
    const fm = new Manifest(binarySublevel(db, 'm')).file('/vms/a.vhdx')
    const w = fm.writer(10)
    for (let i = 999; i >= 0; i -= 3) await w.put(i, h(i & 0xff), 1)
    assert.ok(w.pending < 10, 'flushed along the way')
    await w.commit({ ...FileManifest.newMeta(65536), generation: 1 })
    const seen: number[] = []
    for await (const e of fm.entries()) seen.push(e.index)
    assert.deepEqual(seen, [...seen].sort((a, b) => a - b))
    assert.equal(seen.length, 334)
    const c = fm.cursor(0)
    const below = await c.takeBelow(10)
    assert.deepEqual(below.map(e => e.index), [0, 3, 6, 9])
    assert.equal(await c.peekIndex(), 12)
    await c.close()
    assert.equal((await fm.meta())?.generation, 1)
  })

  it('keeps files and sublevels apart, even when one name prefixes another', async () => {
    const m1 = new Manifest(binarySublevel(db, 'vm1'))
    const m2 = new Manifest(binarySublevel(db, 'vm2'))
    const a = m1.file('/d/a')
    const ab = m1.file('/d/ab')
    for (const [fm, n] of [[a, 1], [ab, 2], [m2.file('/d/a'), 3]] as const) {
      const w = fm.writer()
      await w.put(0, h(n), 1)
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
})
