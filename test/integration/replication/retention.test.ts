/**
 * `vms[].recoveryPoints` reaches the replica holder: two real daemons, a VM whose policy keeps
 * 2 points beyond a keep-all window of 0 (so 3 with the newest), many consistent generations →
 * the target keeps only those points (`GET /v1/replication/points`, what `vmesh points` prints),
 * its undo logs stay few and the replica folder stays about the size of the disk. With the
 * policy not applied (before this test existed) the target kept every generation of the hour.
 */
import assert from 'node:assert/strict'
import { open, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import type { ReplicaPoints } from '../../../daemon/replication/types.ts'
import { waitInSync, replicaPath, sameBytes, vmOf } from './helpers.ts'

const MiB = 1024 * 1024
const BLOCK = 64 * 1024

async function dirBytes (dir: string): Promise<number> {
  let n = 0
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    n += e.isDirectory() ? await dirBytes(p) : (await stat(p)).blocks * 512
  }
  return n
}

describe('replication: the source\'s recovery-point policy on the target (integration)', function () {
  this.timeout(180_000)
  let c: LocalCluster | undefined

  after(async function () { await c?.destroy() })

  it('keeps only the points the policy allows, and disk use stays bounded', async function () {
    c = await LocalCluster.create({ nodes: [{ name: 'hv-a' }, { name: 'hv-b' }], keep: process.env.KEEP === '1' })
    const cluster = c
    const disk = join(c.dir, 'app.img')
    await writeFile(disk, Buffer.alloc(4 * MiB, 1))
    await c.writeConfig('hv-a', { vms: [{ name: 'app', disks: [disk], replicateTo: ['hv-b'], scanInterval: 300, quietBudget: 1000, recoveryPoints: { count: 2, keepAllWithin: 0, hourlyBeyond: false } }] })
    await c.startAll()
    await waitInSync(c, 'hv-a', 'app', 'hv-b')

    // 16 generations, each a different 64 KiB block rewritten (one undo log of ≥ 64 KiB each)
    const GENS = 16
    for (let i = 0; i < GENS; i++) {
      const before = vmOf(await cluster.status('hv-a'), 'app')?.generation ?? 0
      const fh = await open(disk, 'r+')
      try { await fh.write(Buffer.alloc(BLOCK, 0x10 + i), 0, BLOCK, (i % 60) * BLOCK) } finally { await fh.close() }
      await cluster.waitFor(`generation after write ${i}`, async () => ((vmOf(await cluster.status('hv-a'), 'app')?.generation ?? 0) > before) || undefined, 30_000, 100)
      await waitInSync(cluster, 'hv-a', 'app', 'hv-b')
    }
    const { generation } = await waitInSync(cluster, 'hv-a', 'app', 'hv-b')
    assert.ok(generation >= GENS + 1, `generation ${generation}`)
    assert.ok(await sameBytes(disk, await replicaPath(cluster, 'hv-b', 'app', disk)))

    const pts = await cluster.node('hv-b').client.call<ReplicaPoints>('GET', '/v1/replication/points?vm=app', undefined, { timeoutMs: 5000 })
    const points = pts.replicas[0]?.points ?? []
    // every write waited for the previous generation, so the generations are consistent (points)
    // and exactly 3 remain: without the policy all 17+ of the last hour would
    assert.equal(points.length, 3, `points kept: ${points.map(p => p.id).join(',')}`)
    // the newest consistent generation is always a point
    assert.equal(points[points.length - 1]?.generation, pts.replicas[0]?.appliedConsistentGeneration)

    const store = join(cluster.node('hv-b').dir, 'data', 'replicas', 'hv-a', 'app')
    const undo = await readdir(join(store, 'undo'))
    // one per kept step, plus at most a run of fuzzy generations' logs (8) above the newest point
    assert.ok(undo.length <= 2 + 8, `undo logs: ${undo.length}`)
    const used = await dirBytes(store)
    assert.ok(used < 4 * MiB + 12 * BLOCK + 256 * 1024, `replica folder uses ${used} bytes for a 4 MiB disk`)
    const log = await readFile(cluster.node('hv-b').logPath, 'utf8')
    assert.match(log, /replica retention policy set/)
  })
})
