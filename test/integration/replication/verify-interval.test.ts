/**
 * Scheduled verification (`verifyInterval`): without anyone running `vmesh verify`, the source
 * compares the replica block by block now and then, finds a block damaged behind vmesh's back
 * on the target, and resends it; status shows the last comparison.
 */
import assert from 'node:assert/strict'
import { open, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import { waitInSync, replicaPath, sameBytes, targetOf } from './helpers.ts'

const MiB = 1024 * 1024

describe('replication: scheduled verify (integration)', function () {
  this.timeout(120_000)
  let c: LocalCluster | undefined

  after(async function () { await c?.destroy() })

  it('finds a block damaged on the target and repairs it on its own', async function () {
    c = await LocalCluster.create({ nodes: [{ name: 'hv-a' }, { name: 'hv-b' }] })
    const disk = join(c.dir, 'app.img')
    const content = Buffer.alloc(8 * MiB)
    for (let i = 0; i < content.length; i += 512) content.writeUInt32LE(i, i)
    await writeFile(disk, content)
    await c.writeConfig('hv-a', { vms: [{ name: 'app', disks: [disk], replicateTo: ['hv-b'], scanInterval: 500, verifyInterval: '2s' }] })
    await c.startAll()
    await waitInSync(c, 'hv-a', 'app', 'hv-b')
    const rp = await replicaPath(c, 'hv-b', 'app', disk)
    assert.ok(await sameBytes(disk, rp))

    // a bit flip on the target's disk that no write of the source explains
    const fh = await open(rp, 'r+')
    try { await fh.write(Buffer.alloc(4096, 0xee), 0, 4096, 3 * MiB + 8192); await fh.sync() } finally { await fh.close() }
    assert.equal(await sameBytes(disk, rp), false)

    const cluster = c
    const seen = await cluster.waitFor('the periodic verify found the damaged block', async () => {
      const v = targetOf(await cluster.status('hv-a'), 'app', 'hv-b')?.lastVerify
      return v !== undefined && v.mismatchedBlocks > 0 ? v : undefined
    }, 30_000, 200)
    assert.equal(seen.mismatchedBlocks, 1)
    await cluster.waitFor('the block resent', async () => await sameBytes(disk, rp), 30_000, 200)
    // and a later round finds the replica identical again
    await cluster.waitFor('a clean periodic verify', async () => {
      const v = targetOf(await cluster.status('hv-a'), 'app', 'hv-b')?.lastVerify
      return v !== undefined && v.mismatchedBlocks === 0 && v.atMs > seen.atMs ? v : undefined
    }, 30_000, 200)
  })
})
