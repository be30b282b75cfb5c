/**
 * The replica store on the real file system (node:fs, fsync on): seed, incremental and fuzzy
 * generations, restore of every point (copyFile with FICLONE, falling back to a copy on file
 * systems without reflinks), finalize, reopen.
 */
import assert from 'node:assert/strict'
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ManualClock } from '../../../common/clock.ts'
import { SeededRandom } from '../../../common/random.ts'
import { ReplicaStore } from '../../../storage/replica/store.ts'
import { RefModel, randomGen, seedGen, applyGen } from '../../unit/replica/helpers.ts'

async function contents (files: Record<string, string>): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>()
  for (const [k, v] of Object.entries(files)) out.set(k, await readFile(v))
  return out
}

function same (a: Map<string, Buffer>, ref: RefModel, what: string): void {
  assert.deepEqual([...a.keys()].sort(), [...ref.files.keys()].sort(), what)
  for (const [k, v] of ref.files) assert.ok((a.get(k) as Buffer).equals(v), `${what}: ${k}`)
}

describe('replica store on the real file system', function () {
  this.timeout(60_000)
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'vmesh-replica-fs-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('applies, restores every point, finalizes and reopens', async () => {
    const clock = new ManualClock(0, 1_700_000_000_000)
    const init = { dir: join(dir, 'store'), vm: 'web01', source: 'hv-a' }
    const store = await ReplicaStore.open({ clock }, init)
    const rng = new SeededRandom(31)
    const refs = new Map<number, RefModel>()
    const seed = seedGen(rng, 1, [{ path: 'C:\\VMs\\web01\\web01.vhdx', size: 2 * 1024 * 1024 }, { path: 'C:\\VMs\\web01\\web01.vmcx', size: 7000 }], { createdAtMs: clock.wallNow(), blockSize: 65536 })
    await applyGen(store, seed)
    refs.set(1, new RefModel().apply(seed))
    for (let g = 2; g <= 8; g++) {
      clock.advance(60_000)
      const prev = refs.get(g - 1) as RefModel
      const spec = randomGen(rng, prev, g, g - 1, { consistent: g < 7, createdAtMs: clock.wallNow(), blocks: 20, blockSize: 65536, resizeChance: 0.3, shrinkRegrowChance: 0.3, ...(g === 3 ? { newFile: { path: 'C:\\VMs\\web01\\nvram.bin', size: 1000 } } : {}) })
      await applyGen(store, spec)
      refs.set(g, prev.apply(spec))
    }
    assert.deepEqual(store.points().map(p => p.generation), [1, 2, 3, 4, 5, 6])
    same(await contents(store.state().files), refs.get(8) as RefModel, 'replica')
    assert.deepEqual((await readdir(join(init.dir, 'files'))).sort(), ['nvram.bin', 'web01.vhdx', 'web01.vmcx'])
    for (const p of store.points()) {
      const r = await store.restore(p.id, join(dir, `restore-${p.id}`))
      same(await contents(r.files), refs.get(p.generation) as RefModel, `point ${p.id}`)
    }
    const fin = await store.finalize()
    assert.equal(fin.generation, 6)
    same(await contents(fin.files), refs.get(6) as RefModel, 'finalized')
    await store.close()
    const again = await ReplicaStore.open({ clock }, init)
    assert.equal(again.state().finalized, true)
    same(await contents(again.state().files), refs.get(6) as RefModel, 'reopened')
    assert.deepEqual(await readdir(join(init.dir, 'journal')), [])
    assert.deepEqual(await readdir(join(init.dir, 'undo')), [])
    await again.close()
  })
})
