/**
 * ManifestMerge against a per-block reference model (the rules the scanner had when the
 * manifest held one value per block): random contents, random read/gap layouts that cut groups
 * anywhere, growth and shrink, interrupted-scan generations; after every pass the reported
 * blocks, the flags and the stored entries must equal the model's.
 */
import assert from 'node:assert/strict'
import type { Level } from 'level'
import { SeededRandom } from '../../../common/random.ts'
import { ManifestMerge } from '../../../storage/changes/manifest-merge.ts'
import { BlockRuns } from '../../../storage/changes/range.ts'
import { GROUP_BLOCKS } from '../../../storage/manifest/group.ts'
import { FileManifest, Manifest } from '../../../storage/manifest/manifest.ts'
import { binarySublevel } from '../../../storage/manifest/db.ts'
import { tempDb, tempDir } from './helpers.ts'
import type { TempDir } from './helpers.ts'

interface ModelEntry { hash: number | null, gen: number }
/** Block content: 0 = all zeros, otherwise an id that stands for a distinct hash. */
type Content = number[]

function hashOf (id: number): Uint8Array {
  const h = new Uint8Array(16)
  h.fill(id & 0xff)
  h[15] = id >>> 8
  return h
}

/** The per-block rules, one block at a time. */
function modelPass (model: Map<number, ModelEntry>, content: Content, readable: boolean[], p: { G: number, committed: number, sinceGen: number | null }): { report: number[], wrote: boolean, sawNewer: boolean } {
  const report: number[] = []
  let wrote = false
  let sawNewer = false
  for (let i = 0; i < content.length; i++) {
    const e = model.get(i)
    const id = readable[i] === true ? content[i] as number : 0 // a gap reads as zeros
    if (e !== undefined && e.gen > p.committed) sawNewer = true
    const zero = id === 0
    const changed = zero ? e?.hash != null : (e === undefined || e.hash !== id)
    if (changed) { model.set(i, { hash: zero ? null : id, gen: p.G }); wrote = true }
    if (p.sinceGen === null ? !zero : changed || (e !== undefined && e.gen > p.sinceGen)) report.push(i)
  }
  for (const [i, e] of [...model]) {
    if (i < content.length) continue
    if (e.gen > p.committed) sawNewer = true
    model.delete(i)
    wrote = true
  }
  return { report, wrote, sawNewer }
}

/** Splits [0, n) into alternating read chunks and gaps of random lengths. */
function layout (rng: SeededRandom, n: number): Array<{ kind: 'chunk' | 'gap', first: number, end: number }> {
  const out: Array<{ kind: 'chunk' | 'gap', first: number, end: number }> = []
  for (let at = 0; at < n;) {
    const len = 1 + rng.int(rng.int(4) === 0 ? 3 * GROUP_BLOCKS : 12)
    const end = Math.min(n, at + len)
    out.push({ kind: rng.int(4) === 0 ? 'gap' : 'chunk', first: at, end })
    at = end
  }
  return out
}

describe('changes/manifest-merge', function () {
  this.timeout(60_000)
  let dir: TempDir
  let db: Level<Uint8Array, Uint8Array>

  beforeEach(async () => { dir = await tempDir(); db = await tempDb(dir.path) })
  afterEach(async () => { await db.close(); await dir.cleanup() })

  it('matches the per-block rules over random passes, layouts, growth and shrink', async () => {
    for (let seed = 1; seed <= 16; seed++) {
      const rng = new SeededRandom(seed)
      // Odd seeds: sparse files (whole groups of zeros, so gaps and chunks meet missing groups).
      const block = (): number => rng.int(seed % 2 === 1 ? 40 : 3) === 0 ? 1 + rng.int(5) : (seed % 2 === 1 ? 0 : 1 + rng.int(5))
      const fm = new Manifest(binarySublevel(db, `s${seed}`)).file('f')
      await fm.putMeta(FileManifest.newMeta(65536))
      const model = new Map<number, ModelEntry>()
      let committed = 0
      let n = 1 + rng.int(12 * GROUP_BLOCKS)
      let content: Content = Array.from({ length: n }, block)
      for (let pass = 0; pass < 8; pass++) {
        // Mutate: a few blocks change (some to zeros, some back to old values), maybe resize.
        if (pass > 0) {
          for (let k = rng.int(10); k > 0; k--) content[rng.int(n)] = rng.int(3) === 0 ? 0 : 1 + rng.int(5)
          if (rng.int(3) === 0) {
            n = 1 + rng.int(12 * GROUP_BLOCKS)
            content = Array.from({ length: n }, (_, i) => content[i] ?? block())
          }
        }
        const items = layout(rng, n)
        const readable: boolean[] = []
        for (const it of items) for (let i = it.first; i < it.end; i++) readable[i] = it.kind === 'chunk'
        // Now and then the previous scan "was interrupted": G is not committed + 1 but the
        // generation it would have used again, so entries newer than committed exist.
        const G = committed + 1
        const sinceGen = rng.int(3) === 0 ? null : rng.int(committed + 1)
        const want = modelPass(model, content, readable, { G, committed, sinceGen })

        const runs = new BlockRuns(1 << 20)
        const writer = fm.writer(1 + rng.int(4))
        const cursor = fm.groups()
        const merge = new ManifestMerge({ cursor, writer, runs, G, committed, sinceGen })
        try {
          for (const it of items) {
            if (it.kind === 'gap') { await merge.zeros(it.first, it.end); continue }
            const count = it.end - it.first
            const hashes = new Uint8Array(16 * count).fill(0x5a) // zero blocks' slots are garbage
            const zeroMask = new Uint8Array(count)
            for (let i = 0; i < count; i++) {
              const id = content[it.first + i] as number
              if (id === 0) zeroMask[i] = 1
              else hashes.set(hashOf(id), 16 * i)
            }
            await merge.hashed(it.first, count, hashes, zeroMask)
          }
          await merge.finish(n)
          await writer.flush()
        } finally { await cursor.close() }

        const got: number[] = []
        for (const [s, e] of runs.runs()) for (let i = s; i < e; i++) got.push(i)
        const where = `seed ${seed} pass ${pass}`
        assert.deepEqual(got, want.report, where)
        assert.equal(merge.wrote, want.wrote, `${where}: wrote`)
        assert.equal(merge.sawNewer, want.sawNewer, `${where}: sawNewer`)
        const stored = new Map<number, ModelEntry>()
        for await (const e of fm.entries()) {
          const id = e.hash === null ? null : (e.hash[0] as number) | ((e.hash[15] as number) << 8)
          stored.set(e.index, { hash: id, gen: e.generation })
        }
        assert.deepEqual([...stored].sort((a, b) => a[0] - b[0]), [...model].sort((a, b) => a[0] - b[0]), `${where}: stored entries`)
        // Mostly commit; sometimes leave the generation uncommitted (an interrupted scan).
        if (rng.int(4) !== 0) committed = G
      }
    }
  })

  it('a gap over groups that do not exist touches nothing', async () => {
    const fm = new Manifest(binarySublevel(db, 'm')).file('f')
    const runs = new BlockRuns()
    const writer = fm.writer()
    const cursor = fm.groups()
    const merge = new ManifestMerge({ cursor, writer, runs, G: 1, committed: 0, sinceGen: 0 })
    // A trillion-block gap: visiting every block would never finish.
    await merge.zeros(0, 1e12)
    await merge.finish(1e12)
    await writer.flush()
    await cursor.close()
    assert.equal(merge.wrote, false)
    assert.equal(writer.written, 0)
    assert.equal(runs.runCount, 0)
  })
})
