import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { SeededRandom } from '../../../common/random.ts'
import { ReplicaStore } from '../../../storage/replica/store.ts'
import { MemFs } from './memfs.ts'
import { RefModel, randomGen, seedGen, applyGen, writeOps, replicaContents, assertContents } from './helpers.ts'

const DIR = '/data/replicas/web01'

async function openStore (fs: MemFs, clock = new ManualClock()): Promise<ReplicaStore> {
  return await ReplicaStore.open({ clock, fs }, { dir: DIR, vm: 'web01', source: 'hv-a' })
}

async function seeded (fs: MemFs, rng: SeededRandom): Promise<{ store: ReplicaStore, ref: RefModel }> {
  const store = await openStore(fs)
  const spec = seedGen(rng, 1, [{ path: '/vms/web01/web01.vhdx', size: 64 * 1024 }, { path: 'C:\\VMs\\web01\\web01.vmcx', size: 5000 }])
  await applyGen(store, spec)
  return { store, ref: new RefModel().apply(spec) }
}

describe('replica store: apply', () => {
  it('starts empty and seeds generation 1', async () => {
    const fs = new MemFs()
    const rng = new SeededRandom(1)
    const store = await openStore(fs)
    assert.equal(store.state().appliedGeneration, 0)
    assert.deepEqual(store.points(), [])
    const spec = seedGen(rng, 1, [{ path: '/vms/web01/web01.vhdx', size: 64 * 1024 }])
    await applyGen(store, spec)
    const st = store.state()
    assert.equal(st.appliedGeneration, 1)
    assert.equal(st.appliedConsistentGeneration, 1)
    assert.equal(st.seeding, false)
    assert.equal(st.files['/vms/web01/web01.vhdx'], `${DIR}/files/web01.vhdx`)
    assert.deepEqual(store.points().map(p => p.id), ['1'])
    assertContents(replicaContents(fs, store), new RefModel().apply(spec), 'after seed')
  })

  it('replays overlapping blocks of one generation in journal order, many scattered ones in flight', async () => {
    const fs = new MemFs()
    const rng = new SeededRandom(31)
    const { store, ref } = await seeded(fs, rng)
    const path = '/vms/web01/web01.vhdx'
    const fill = (n: number, v: number): Buffer => Buffer.alloc(n, v)
    // scattered blocks (more than are written at once), then rewrites that overlap them
    const ops = []
    for (let i = 0; i < 12; i++) {
      ops.push({ kind: 'block' as const, fileId: 1, offset: i * 5000, data: fill(1000, 10 + i) })
      // every other block is partly rewritten right away (the two would be in flight together)
      if (i % 2 === 0) ops.push({ kind: 'block' as const, fileId: 1, offset: i * 5000 + 300, data: fill(200, 200 + i) })
    }
    const spec = { header: { generation: 2, baseGeneration: 1, consistent: true, createdAtMs: 2, files: [{ fileId: 1, path, size: 64 * 1024, kind: 'disk' as const }] }, ops }
    // writes finish out of order, as concurrent ones may on a real disk
    const jitter = new SeededRandom(5)
    fs.delay = async (op) => { if (op === 'write') for (let i = jitter.int(6); i > 0; i--) await new Promise(resolve => setImmediate(resolve)) }
    await applyGen(store, spec)
    fs.delay = undefined
    assertContents(replicaContents(fs, store), ref.apply(spec), 'later blocks win')
  })

  it('syncs a large generation\'s redo and undo logs in the background while its blocks arrive', async () => {
    const fs = new MemFs()
    const store = await openStore(fs)
    const path = '/vms/web01/web01.vhdx'
    const size = 12 * 1024 * 1024
    const seed = { header: { generation: 1, baseGeneration: 0, consistent: true, createdAtMs: 1, files: [{ fileId: 1, path, size, kind: 'disk' as const }] }, ops: [{ kind: 'block' as const, fileId: 1, offset: 0, data: Buffer.alloc(size, 1) }] }
    await applyGen(store, seed)
    const syncs: string[] = []
    let committing = false
    fs.delay = async (op, p) => { if (op === 'sync' && !committing) syncs.push(p) }
    const ops = []
    for (let at = 0; at < 10 * 1024 * 1024; at += 1024 * 1024) ops.push({ kind: 'block' as const, fileId: 1, offset: at, data: Buffer.alloc(1024 * 1024, 2 + at / (1024 * 1024)) })
    const spec = { header: { generation: 2, baseGeneration: 1, consistent: true, createdAtMs: 2, files: [{ fileId: 1, path, size, kind: 'disk' as const }] }, ops }
    const w = await store.beginGeneration(spec.header)
    await writeOps(w, spec.ops)
    committing = true
    await w.commit()
    fs.delay = undefined
    assert.ok(syncs.some(p => p.includes('/journal/redo-2')), `redo synced before commit: ${syncs.join(', ')}`)
    assert.ok(syncs.some(p => p.includes('/undo/undo-2-1')), `undo synced before commit: ${syncs.join(', ')}`)
    assertContents(replicaContents(fs, store), new RefModel().apply(seed).apply(spec), 'after the generation')
  })

  it('applies incremental generations, including resizes and new files', async () => {
    const fs = new MemFs()
    const rng = new SeededRandom(2)
    let { store, ref } = await seeded(fs, rng)
    for (let g = 2; g <= 12; g++) {
      const spec = randomGen(rng, ref, g, g - 1, { resizeChance: 0.4, blocks: 10, ...(g === 5 ? { newFile: { path: '/vms/web01/nvram.bin', size: 3000 } } : {}) })
      await applyGen(store, spec)
      ref = ref.apply(spec)
      assert.equal(store.state().appliedGeneration, g)
      assertContents(replicaContents(fs, store), ref, `generation ${g}`)
    }
    // survives a clean reopen
    await store.close()
    store = await openStore(fs)
    assert.equal(store.state().appliedGeneration, 12)
    assertContents(replicaContents(fs, store), ref, 'after reopen')
    assert.deepEqual(store.recoveryReport().filter(a => a.action !== 'removed-orphan'), [])
  })

  it('keeps distinct replica names for files with the same basename', async () => {
    const fs = new MemFs()
    const rng = new SeededRandom(3)
    const store = await openStore(fs)
    await applyGen(store, seedGen(rng, 1, [{ path: '/a/disk.vhdx', size: 4096 }, { path: '/b/disk.vhdx', size: 4096 }]))
    const files = store.state().files
    assert.notEqual(files['/a/disk.vhdx'], files['/b/disk.vhdx'])
    assert.equal(files['/a/disk.vhdx'], `${DIR}/files/disk.vhdx`)
    assert.match(files['/b/disk.vhdx'] as string, /\/files\/disk-[0-9a-f]{8}\.vhdx$/)
  })

  it('abort discards the generation and leaves the replica unchanged', async () => {
    const fs = new MemFs()
    const rng = new SeededRandom(4)
    const { store, ref } = await seeded(fs, rng)
    const spec = randomGen(rng, ref, 2, 1, { blocks: 20 })
    const w = await store.beginGeneration(spec.header)
    await writeOps(w, spec.ops)
    await w.abort()
    assert.equal(store.state().appliedGeneration, 1)
    assertContents(replicaContents(fs, store), ref, 'after abort')
    assert.deepEqual(fs.list(`${DIR}/journal`), [])
    await assert.rejects(w.writeBlock(1, 0, Buffer.alloc(1)), { code: 'ERR_REPLICA_WRITER_CLOSED' })
    // the same generation can be sent again
    await applyGen(store, spec)
    assertContents(replicaContents(fs, store), ref.apply(spec), 'after retry')
  })

  it('an aborted signal discards the generation', async () => {
    const fs = new MemFs()
    const rng = new SeededRandom(5)
    const { store, ref } = await seeded(fs, rng)
    const ac = new AbortController()
    const spec = randomGen(rng, ref, 2, 1)
    const w = await store.beginGeneration(spec.header, { signal: ac.signal })
    await writeOps(w, spec.ops.slice(0, 2))
    ac.abort()
    await assert.rejects(w.writeBlock(1, 0, Buffer.alloc(8)), (err: Error) => err.name === 'AbortedError' || (err as { code?: string }).code === 'ERR_REPLICA_WRITER_CLOSED')
    assert.equal(store.state().appliedGeneration, 1)
    await applyGen(store, spec)
    assert.equal(store.state().appliedGeneration, 2)
  })

  it('refuses a generation whose base is not the applied generation', async () => {
    const fs = new MemFs()
    const rng = new SeededRandom(6)
    const { store, ref } = await seeded(fs, rng)
    await assert.rejects(store.beginGeneration(randomGen(rng, ref, 3, 2).header), { name: 'ReplicaBaseMismatchError', code: 'ERR_REPLICA_BASE_MISMATCH' })
    await assert.rejects(store.beginGeneration(seedGen(rng, 3, [{ path: '/x', size: 10 }]).header), { code: 'ERR_REPLICA_BASE_MISMATCH' })
    const fresh = await ReplicaStore.open({ clock: new ManualClock(), fs }, { dir: '/other', vm: 'web01', source: 'hv-a' })
    await assert.rejects(fresh.beginGeneration(randomGen(rng, ref, 3, 2).header), { code: 'ERR_REPLICA_BASE_MISMATCH' })
  })

  it('refuses a second writer, bad blocks and bad headers', async () => {
    const fs = new MemFs()
    const rng = new SeededRandom(7)
    const { store, ref } = await seeded(fs, rng)
    const spec = randomGen(rng, ref, 2, 1)
    const w = await store.beginGeneration(spec.header)
    await assert.rejects(store.beginGeneration(spec.header), { code: 'ERR_REPLICA_BUSY' })
    await assert.rejects(w.writeBlock(99, 0, Buffer.alloc(1)), { code: 'ERR_REPLICA_INVALID_INPUT' })
    // an invalid block discards the generation (the stream is bad)
    await assert.rejects(w.writeBlock(1, 0, Buffer.alloc(1)), { code: 'ERR_REPLICA_WRITER_CLOSED' })
    const w2 = await store.beginGeneration(spec.header)
    const size = spec.header.files[0]?.size as number
    await assert.rejects(w2.writeBlock(1, size - 1, Buffer.alloc(2)), { code: 'ERR_REPLICA_INVALID_INPUT' })
    await assert.rejects(store.beginGeneration({ ...spec.header, generation: 1.5 }), { code: 'ERR_REPLICA_INVALID_INPUT' })
    await assert.rejects(store.beginGeneration({ ...spec.header, files: [{ fileId: 1, path: '', size: 1, kind: 'disk' }] }), { code: 'ERR_REPLICA_INVALID_INPUT' })
    await assert.rejects(store.beginGeneration({ ...spec.header, files: [{ fileId: 1, path: '/a', size: -1, kind: 'disk' }] }), { code: 'ERR_REPLICA_INVALID_INPUT' })
    assert.equal(store.state().appliedGeneration, 1)
  })

  it('says which generation it receives, and when its files are changed in place (not at rest)', async () => {
    const fs = new MemFs()
    const rng = new SeededRandom(41)
    const seen: Array<[string, number, number | null, number | null]> = []
    let store: ReplicaStore | undefined
    const hooks = {
      step: (name: string): void => {
        const st = store?.state()
        if (st !== undefined && name !== 'redo-appended' && name !== 'seed-written') seen.push([name, st.appliedGeneration, st.applyingGeneration, st.receivingGeneration])
      }
    }
    store = await ReplicaStore.open({ clock: new ManualClock(), fs, hooks }, { dir: DIR, vm: 'web01', source: 'hv-a' })
    const path = '/vms/web01/web01.vhdx'
    const seed = seedGen(rng, 1, [{ path, size: 64 * 1024 }])
    await applyGen(store, seed)
    const ref = new RefModel().apply(seed)
    assert.deepEqual([store.state().applyingGeneration, store.state().receivingGeneration], [null, null])

    const spec = randomGen(rng, ref, 2, 1, { blocks: 6 })
    const w = await store.beginGeneration(spec.header)
    assert.equal(store.state().receivingGeneration, 2, 'a generation being received is named')
    await writeOps(w, spec.ops)
    assert.equal(store.state().applyingGeneration, null, 'journaling leaves the files at rest')
    seen.length = 0
    await w.commit()
    assert.deepEqual(seen.filter(s => s[0] !== 'undo-synced' && s[0] !== 'undo-partial' && s[0] !== 'inplace-partial'), [
      ['redo-committed', 1, null, 2],
      ['inplace-synced', 1, 2, 2],
      ['applied-recorded', 2, null, 2]
    ], 'applying is set from the in-place writes until the state names the generation')
    assert.deepEqual([store.state().appliedGeneration, store.state().applyingGeneration, store.state().receivingGeneration], [2, null, null])
    assertContents(replicaContents(fs, store), ref.apply(spec), 'at rest: exactly generation 2')

    const aborted = await store.beginGeneration(randomGen(rng, ref, 3, 2).header)
    await aborted.abort()
    assert.deepEqual([store.state().applyingGeneration, store.state().receivingGeneration], [null, null], 'an aborted generation is no longer received')

    seen.length = 0
    await store.finalize({ pointId: '1' })
    assert.ok(seen.some(s => s[0] === 'finalize-undo-applied' && s[2] === 1), 'a finalize rolling back in place is applying its target')
    assert.deepEqual([store.state().appliedGeneration, store.state().applyingGeneration], [1, null])
  })

  it('refuses to open a directory holding another VM', async () => {
    const fs = new MemFs()
    await (await openStore(fs)).close()
    await assert.rejects(ReplicaStore.open({ clock: new ManualClock(), fs }, { dir: DIR, vm: 'db01', source: 'hv-a' }), { code: 'ERR_REPLICA_IDENTITY_MISMATCH' })
  })

  it('hashes replica blocks for verify', async () => {
    const fs = new MemFs()
    const rng = new SeededRandom(8)
    const { store } = await seeded(fs, rng)
    const hashes = []
    for await (const h of store.verifyBlocks('/vms/web01/web01.vhdx', { blockSize: 16384 })) hashes.push(h)
    assert.equal(hashes.length, 4)
    assert.deepEqual(hashes.map(h => h.offset), [0, 16384, 32768, 49152])
    assert.ok(hashes.every(h => h.generation === 1 && h.hash.length === 16))
    assert.notDeepEqual(hashes[0]?.hash, hashes[1]?.hash)
  })
})
