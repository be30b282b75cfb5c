/**
 * Test failover with real daemons and the `command` driver (the fake VM: a sleep process per
 * node and name): `vmesh failover vm1 --test` on the replica holder boots `vm1-test` from a
 * restored recovery point while the production VM keeps running once, on its owner, and
 * replication keeps advancing; `--test --cleanup` removes it.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { access, open, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LocalCluster, VMESH_BIN } from '../../../daemon/cluster/local-cluster.ts'
import type { ReplicaPoints } from '../../../daemon/replication/service.ts'
import { installFakeVm, fakeVmHypervisor, instances, overlaps, killAllVms } from '../../helpers/fake-vm.ts'

interface CliResult { code: number | null, json: Record<string, unknown>, stderr: string }

/** Runs the real CLI against one node's config. */
async function cli (configPath: string, args: string[]): Promise<CliResult> {
  return await new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [VMESH_BIN, '--config', configPath, ...args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''; let err = ''
    p.stdout.on('data', (b: Buffer) => { out += b.toString() })
    p.stderr.on('data', (b: Buffer) => { err += b.toString() })
    p.on('error', reject)
    p.on('close', (code) => {
      let json: Record<string, unknown> = {}
      try { json = JSON.parse(out) as Record<string, unknown> } catch { json = { raw: out } }
      resolve({ code, json, stderr: err })
    })
  })
}

async function exists (p: string): Promise<boolean> { try { await access(p); return true } catch { return false } }

describe('integration: test failover (--test / --test --cleanup)', function () {
  this.timeout(180_000)
  let cluster: LocalCluster | undefined
  afterEach(async function () {
    if (this.currentTest?.state === 'failed' && cluster !== undefined) {
      for (const n of cluster.nodes) process.stderr.write(`--- ${n.name} (tail) ---\n${(await readFile(n.logPath, 'utf8').catch(() => '')).slice(-3000)}\n`)
      process.stderr.write((await readFile(join(cluster.dir, 'events.log'), 'utf8').catch(() => '')) + '\n')
    }
    if (cluster !== undefined) await killAllVms(cluster.dir)
    await cluster?.destroy()
    cluster = undefined
  })

  it('boots an isolated clone on the replica holder; production and replication go on; cleanup removes it', async () => {
    const c = await LocalCluster.create({ nodes: [{ name: 'a' }, { name: 'b' }, { name: 'w', role: 'witness' }] })
    cluster = c
    const script = await installFakeVm(c.dir)
    const disk = join(c.dir, 'vm1.img')
    await writeFile(disk, Buffer.alloc(1024 * 1024, 7))
    for (const n of ['a', 'b']) {
      const h = fakeVmHypervisor(script, n) as { driver: string, command: Record<string, string> }
      // {test} tells the command driver the script knows test instances (the fake VM ignores it)
      const hypervisor = { ...h, command: { ...h.command, start: `${h.command.start as string} {test}` } }
      await c.writeConfig(n, { hypervisor, ...(n === 'a' ? { vms: [{ name: 'vm1', disks: [disk], replicateTo: ['b'], scanInterval: '500ms' }] } : {}) })
    }
    await c.startAll()
    const runningOn = async (node: string): Promise<boolean> => (await c.status(node)).vms.some(v => v.name === 'vm1' && v.runningHere)
    await c.waitFor('vm1 running on a', () => runningOn('a'), 30_000)
    await c.waitFor('a recovery point on b', async () => (await c.node('b').client.call<ReplicaPoints>('GET', '/v1/replication/points?vm=vm1')).replicas.some(r => r.points.length > 0), 60_000, 200)
    const ownerBefore = (await c.status('a')).vms.find(v => v.name === 'vm1')
    const appliedBefore = (await c.status('b')).vms.find(v => v.name === 'vm1')?.replica?.appliedGeneration ?? 0

    // on the source (where it runs in production) a test is refused
    const onA = await cli(c.node('a').configPath, ['failover', 'vm1', '--test'])
    assert.equal(onA.code, 1, onA.stderr)
    assert.equal((onA.json.error as { code?: string } | undefined)?.code, 'ERR_TEST_FAILOVER_RUNS_HERE')

    const t = await cli(c.node('b').configPath, ['failover', 'vm1', '--test'])
    assert.equal(t.code, 0, `${t.stderr} ${JSON.stringify(t.json)}`)
    assert.equal(t.json.testName, 'vm1-test')
    assert.equal(t.json.node, 'b')
    assert.equal(t.json.phase, 'running')
    assert.equal(t.json.from, 'a')
    const tdir = t.json.dir as string
    // the clone runs on b under its own name, at no epoch
    const clone = (await instances(c.dir)).filter(i => i.vm === 'vm1-test')
    assert.deepEqual(clone.map(i => [i.node, i.epoch, i.to]), [['b', 0, Infinity]])
    const listed = await c.node('b').client.call<{ tests: Array<{ vm: string, running: boolean }> }>('GET', '/v1/failover/test')
    assert.deepEqual(listed.tests.map(x => [x.vm, x.running]), [['vm1', true]])
    // it boots from a restored copy of the point, not from the replica
    const restored = await readdir(join(tdir, 'files'))
    assert.equal(restored.length, 1)

    // a second test of the same VM is refused
    const again = await cli(c.node('b').configPath, ['failover', 'vm1', '--test'])
    assert.equal(again.code, 1)
    assert.equal((again.json.error as { code?: string } | undefined)?.code, 'ERR_TEST_FAILOVER_EXISTS')

    // production untouched: still on a at the same epoch; replication goes on past the point
    const fh = await open(disk, 'r+')
    try { await fh.write(Buffer.alloc(4096, 9), 0, 4096, 65536) } finally { await fh.close() }
    await c.waitFor('the replica on b advances', async () => ((await c.status('b')).vms.find(v => v.name === 'vm1')?.replica?.appliedGeneration ?? 0) > appliedBefore, 30_000, 200)
    const ownerNow = (await c.status('a')).vms.find(v => v.name === 'vm1')
    assert.equal(ownerNow?.owner, 'a')
    assert.equal(ownerNow?.epoch, ownerBefore?.epoch)
    assert.equal(await runningOn('a'), true)
    assert.equal(await runningOn('b'), false)
    // the clone's disk still holds the point it was restored from, not the later write
    const cloneDisk = await readFile(join(tdir, 'files', restored[0] as string))
    assert.ok(cloneDisk.subarray(65536, 65536 + 4096).every(x => x === 7))

    const rm = await cli(c.node('b').configPath, ['failover', 'vm1', '--test', '--cleanup'])
    assert.equal(rm.code, 0, rm.stderr)
    assert.deepEqual(rm.json, { vm: 'vm1', testName: 'vm1-test', removed: true })
    assert.equal(await exists(tdir), false)
    assert.deepEqual((await instances(c.dir)).filter(i => i.vm === 'vm1-test' && i.to === Infinity), [])
    const rm2 = await cli(c.node('b').configPath, ['failover', 'vm1', '--test', '--cleanup'])
    assert.equal(rm2.code, 0)
    assert.equal(rm2.json.removed, false)

    const all = await instances(c.dir)
    assert.deepEqual(overlaps(all), [])
    assert.deepEqual(all.filter(i => i.vm === 'vm1').map(i => i.node), ['a'], 'production ran only on a')
    assert.equal(await runningOn('a'), true)
  })
})

