import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { SeededRandom } from '../../../common/random.ts'
import { ReplicaStore } from '../../../storage/replica/store.ts'
import type { ReplicaStep } from '../../../storage/replica/types.ts'
import { MemFs } from './memfs.ts'
import { RefModel, randomGen, seedGen, writeOps, applyGen, replicaContents, assertContents } from './helpers.ts'

const DIR = '/r/vm'

describe('replica store: disk full', () => {
  it('ENOSPC at any point of an apply discards the generation, and the next attempt works', async () => {
    const fs = new MemFs()
    const reached = new Set<ReplicaStep>()
    const store = await ReplicaStore.open({ clock: new ManualClock(), fs, hooks: { step: (s) => { reached.add(s) } } }, { dir: DIR, vm: 'vm', source: 'a' })
    const rng = new SeededRandom(11)
    const seed = seedGen(rng, 1, [{ path: '/d.vhdx', size: 30_000 }])
    await applyGen(store, seed)
    let ref = new RefModel().apply(seed)
    for (let g = 2; g <= 3; g++) {
      const spec = randomGen(rng, ref, g, g - 1)
      await applyGen(store, spec)
      ref = ref.apply(spec)
    }
    // grows the disk and adds a file, so in-place writes need space too
    const spec = randomGen(rng, ref, 4, 3, { blocks: 12, newFile: { path: '/nvram', size: 6000 } })
    ;(spec.header.files[0] as { size: number }).size = 40_000
    spec.ops.push({ kind: 'block', fileId: 1, offset: 36_000, data: Buffer.alloc(4000, 7) })
    const used = fs.usedBytes()
    let failures = 0
    let failuresAfterUndo = 0
    let ok = false
    // bounded: capacity grows by 256 bytes per attempt
    for (let extra = 0; extra <= 200_000 && !ok; extra += 256) {
      fs.capacity = used + extra
      reached.clear()
      try {
        const w = await store.beginGeneration(spec.header)
        await writeOps(w, spec.ops)
        await w.commit()
        ok = true
      } catch (err) {
        assert.equal((err as Error).name, 'ReplicaDiskFullError', String((err as Error).stack))
        assert.equal((err as { code?: string }).code, 'ERR_REPLICA_DISK_FULL')
        failures++
        if (reached.has('undo-synced')) failuresAfterUndo++
        assert.equal(store.state().appliedGeneration, 3)
        assertContents(replicaContents(fs, store), ref, `replica after ENOSPC at +${extra}`)
        assert.deepEqual(fs.list(`${DIR}/journal`), [])
        assert.equal(fs.usedBytes(), used, 'a failed generation left files behind')
      }
    }
    assert.ok(ok, 'never succeeded')
    assert.ok(failures > 20, `only ${failures} failing capacities`)
    assert.ok(failuresAfterUndo > 0, 'no failure hit the in-place phase')
    fs.capacity = Number.POSITIVE_INFINITY
    assertContents(replicaContents(fs, store), ref.apply(spec), 'after the successful attempt')
    // and the store carries on; a reopen finds nothing to repair
    await store.close()
    const again = await ReplicaStore.open({ clock: new ManualClock(), fs }, { dir: DIR, vm: 'vm', source: 'a' })
    assert.deepEqual(again.recoveryReport(), [])
    assert.deepEqual(again.points().map(p => p.generation), [1, 2, 3, 4])
  })

  it('ENOSPC while seeding keeps the durable progress; the seed resumes when space returns', async () => {
    const fs = new MemFs()
    const store = await ReplicaStore.open({ clock: new ManualClock(), fs }, { dir: DIR, vm: 'vm', source: 'a', seedCheckpointBytes: 8192 })
    const spec = seedGen(new SeededRandom(12), 1, [{ path: '/d.vhdx', size: 64 * 1024 }], { blockSize: 4096 })
    const ref = new RefModel().apply(spec)
    const w = await store.beginGeneration(spec.header)
    await writeOps(w, spec.ops.slice(0, 7))
    // the files are sized up front, so space runs out in the next progress document
    fs.capacity = fs.usedBytes() + 10
    await assert.rejects(writeOps(w, spec.ops.slice(7)), { name: 'ReplicaDiskFullError' })
    assert.equal(store.state().seeding, true)
    const progress = store.seedProgress()
    assert.ok(progress !== null && progress.durableBytes > 0, 'no durable progress before the disk filled')
    assert.ok(progress.durableBytes < 64 * 1024)
    fs.capacity = Number.POSITIVE_INFINITY
    const done = new Set((progress.files['/d.vhdx'] ?? []).flatMap(r => {
      const out: number[] = []
      for (let at = r.offset; at < r.offset + r.length; at += 4096) out.push(at)
      return out
    }))
    const w2 = await store.beginGeneration(spec.header)
    for (const op of spec.ops) if (op.kind === 'block' && !done.has(op.offset)) await w2.writeBlock(op.fileId, op.offset, op.data)
    await w2.commit()
    assertContents(replicaContents(fs, store), ref, 'resumed seed')
  })

  it('an I/O error at the state switch stops the store until it is reopened, which completes the generation', async () => {
    const fs = new MemFs()
    const init = { dir: DIR, vm: 'vm', source: 'a' }
    const store = await ReplicaStore.open({ clock: new ManualClock(), fs }, init)
    const rng = new SeededRandom(13)
    const seed = seedGen(rng, 1, [{ path: '/d.vhdx', size: 20_000 }])
    await applyGen(store, seed)
    const ref1 = new RefModel().apply(seed)
    const spec = randomGen(rng, ref1, 2, 1)
    let armed = true
    fs.onOp = (op, path) => {
      if (armed && op === 'rename' && path.endsWith('state.json.tmp')) { armed = false; throw Object.assign(new Error('EIO'), { code: 'EIO' }) }
    }
    await assert.rejects(applyGen(store, spec), { name: 'ReplicaNeedsRecoveryError' })
    await assert.rejects(store.beginGeneration(randomGen(rng, ref1, 3, 2).header), { code: 'ERR_REPLICA_NEEDS_RECOVERY' })
    await assert.rejects(store.restore('1', '/out'), { code: 'ERR_REPLICA_NEEDS_RECOVERY' })
    const again = await ReplicaStore.open({ clock: new ManualClock(), fs }, init)
    assert.equal(again.state().appliedGeneration, 2)
    assert.equal(again.recoveryReport().find(a => a.generation === 2)?.action, 'rolled-forward')
    assertContents(replicaContents(fs, again), ref1.apply(spec), 'after reopen')
  })

  it('a damaged state file is refused, not misread', async () => {
    const fs = new MemFs()
    const init = { dir: DIR, vm: 'vm', source: 'a' }
    const store = await ReplicaStore.open({ clock: new ManualClock(), fs }, init)
    await applyGen(store, seedGen(new SeededRandom(14), 1, [{ path: '/d.vhdx', size: 4096 }]))
    await store.close()
    const text = fs.peek(`${DIR}/state.json`) as Buffer
    fs.corrupt(`${DIR}/state.json`, text.length - 5, Buffer.from('9'))
    await assert.rejects(ReplicaStore.open({ clock: new ManualClock(), fs }, init), { name: 'ReplicaStateCorruptError', code: 'ERR_REPLICA_STATE_CORRUPT' })
  })
})
