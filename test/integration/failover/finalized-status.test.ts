/**
 * Regression (found by the chaos soak, issue #14): once a replica is finalized for a failover the
 * VM runs from its files and writes them, so they no longer hold `appliedGeneration`. The status
 * document used to show that replica exactly like one at rest (not seeding, nothing applying or
 * receiving), which is the documented signal that the files hold `appliedGeneration` exactly —
 * a tool reading "a replica at rest" read the running VM's disk. It now says `finalized: true`.
 */
import assert from 'node:assert/strict'
import { readFile, writeFile } from 'node:fs/promises'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import { crashVm } from '../../helpers/fake-vm.ts'
import { VM, startFailoverCluster, runningOn, tearDownCluster } from '../../helpers/failover.ts'

describe('integration: failover — a finalized replica says so in the status', function () {
  this.timeout(150_000)
  let cluster: LocalCluster | undefined

  afterEach(async function () {
    const c = cluster
    cluster = undefined
    await tearDownCluster(this.currentTest, c)
  })

  it('the replica the survivor runs from is finalized: true; before the failover it was not', async () => {
    const { c } = await startFailoverCluster([{ name: 'a' }, { name: 'b' }, { name: 'w', role: 'witness' }], (x) => { cluster = x })
    const before = (await c.status('b')).vms.find(v => v.name === VM)?.replica
    assert.ok(before != null)
    assert.equal(before.finalized, false, 'a replica still taking generations is not finalized')

    await c.kill('a')
    await crashVm(c.dir, 'a', VM)
    await c.waitFor('vm1 running on b', () => runningOn(c, 'b'), 60_000, 100)
    const after = (await c.status('b')).vms.find(v => v.name === VM)?.replica
    assert.ok(after != null, 'b still lists the replica it runs from')
    assert.equal(after.finalized, true)
    // what the flag protects against: the VM writes the finalized files, which then hold no generation
    const path = Object.values(after.files)[0] as string
    const bytes = await readFile(path)
    bytes[0] = (bytes[0] ?? 0) ^ 0xff
    await writeFile(path, bytes)
    const still = (await c.status('b')).vms.find(v => v.name === VM)?.replica
    assert.equal(still?.finalized, true)
    assert.equal(still?.appliedGeneration, after.appliedGeneration, 'the generation it was finalized at stays named')
  })
})
