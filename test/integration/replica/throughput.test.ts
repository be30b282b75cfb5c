/**
 * Apply throughput on this machine: generations of 64 MiB of changes in 64 KiB blocks, fsync on,
 * against a baseline measured in the same run (the same bytes written in place with pwrite and
 * one fsync — what a replica without any crash consistency would cost). Prints one JSON line.
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm, open } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { systemClock } from '../../../common/clock.ts'
import { ReplicaStore } from '../../../storage/replica/store.ts'

const MiB = 1024 * 1024
const BLOCK = 64 * 1024
const DISK = 256 * MiB
const GEN = 64 * MiB

function mbps (bytes: number, ms: number): number { return Math.round((bytes / MiB) / (ms / 1000) * 10) / 10 }

/** 1024 distinct block offsets in random order. */
function offsets (): number[] {
  const all = Array.from({ length: DISK / BLOCK }, (_, i) => i * BLOCK)
  for (let i = all.length - 1; i > 0; i--) {
    const j = randomBytes(4).readUInt32LE(0) % (i + 1)
    const t = all[i] as number; all[i] = all[j] as number; all[j] = t
  }
  return all.slice(0, GEN / BLOCK).sort((a, b) => a - b)
}

describe('replica store: apply throughput', function () {
  this.timeout(300_000)
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'vmesh-replica-bench-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('measures MB/s for 64 MiB generations of 64 KiB blocks (fsync on)', async () => {
    const data = randomBytes(GEN)
    // baseline: the same bytes, in place, one fsync
    const raw = join(dir, 'raw.img')
    const fh = await open(raw, 'w+')
    await fh.truncate(DISK)
    await fh.sync()
    const offs = offsets()
    let t = performance.now()
    for (let i = 0; i < offs.length; i++) await fh.write(data, i * BLOCK, BLOCK, offs[i])
    await fh.sync()
    const baselineMs = performance.now() - t
    await fh.close()

    const store = await ReplicaStore.open({ clock: systemClock }, { dir: join(dir, 'store'), vm: 'bench', source: 'a' })
    t = performance.now()
    const seed = await store.beginGeneration({ generation: 1, baseGeneration: 0, consistent: true, createdAtMs: systemClock.wallNow(), files: [{ fileId: 1, path: '/d.vhdx', size: DISK, kind: 'disk' }] })
    for (let at = 0; at < DISK; at += BLOCK) await seed.writeBlock(1, at, data.subarray(at % GEN, (at % GEN) + BLOCK))
    await seed.commit()
    const seedMs = performance.now() - t

    const gens: number[] = []
    for (let g = 2; g <= 4; g++) {
      const o = offsets()
      t = performance.now()
      const w = await store.beginGeneration({ generation: g, baseGeneration: g - 1, consistent: true, createdAtMs: systemClock.wallNow(), files: [{ fileId: 1, path: '/d.vhdx', size: DISK, kind: 'disk' }] })
      for (let i = 0; i < o.length; i++) await w.writeBlock(1, o[i] as number, data.subarray(i * BLOCK, (i + 1) * BLOCK))
      await w.commit()
      gens.push(performance.now() - t)
    }
    await store.close()
    const best = Math.min(...gens)
    const result = {
      bench: 'replica-apply',
      generationBytes: GEN,
      blockBytes: BLOCK,
      fsync: true,
      applyMBps: gens.map(ms => mbps(GEN, ms)),
      applyBestMBps: mbps(GEN, best),
      seedMBps: mbps(DISK, seedMs),
      baselineInPlaceMBps: mbps(GEN, baselineMs),
      applyVsBaseline: Math.round(baselineMs / best * 100) / 100
    }
    console.log(`      ${JSON.stringify(result)}`)
    assert.ok(result.applyBestMBps > 0)
  })
})
