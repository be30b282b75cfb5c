/**
 * `vmesh failover vm1 --force` end to end on a two-host site without a witness — the path the
 * README gives such sites when a host is known dead — with real daemons, the real CLI and the
 * `command` driver's stand-in VM. Checked from the VMs' own start/stop log: the survivor runs
 * the VM within 10 s of the command, keeps it running (no fence) while the other host stays
 * away, and when that host returns it learns the higher epoch and leaves the VM off; the
 * survivor's forced claim becomes an ordinary lease. Never two instances at once.
 *
 * Two ways the other host goes away: a crash (kill -9 of daemon and VM), and a partition
 * (network namespaces; skipped without root), where its daemon keeps running, loses its
 * lease, has its VM fenced by its watchdog, and must stay off after the heal.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { LocalCluster, VMESH_BIN } from '../../../daemon/cluster/local-cluster.ts'
import { crashVm, type Instance } from '../../helpers/fake-vm.ts'
import { Netbed } from '../../helpers/netbed.ts'
import { VM, startFailoverCluster, runningOn, ownerSeenBy, ownershipOf, vmInstances, vmProcessAlive, watchdogLog, allAlive, holdsFor, tearDownCluster } from '../../helpers/failover.ts'

/** The goal: VM running on the survivor at most this long after the command. */
const FORCE_GOAL_MS = 10_000

/** Runs `vmesh failover vm1 --force --json` against `node`'s config. */
async function forceFailover (c: LocalCluster, node: string): Promise<{ code: number | null, out: string, err: string }> {
  return await new Promise((resolve, reject) => {
    // a node in a network namespace has its control API there: run the CLI inside it too
    const [cmd, ...args] = [...(c.node(node).netns?.prefix ?? []), process.execPath, VMESH_BIN, '--config', c.node(node).configPath, 'failover', VM, '--force', '--json']
    const p = spawn(cmd as string, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''; let err = ''
    p.stdout.on('data', (b: Buffer) => { out += b.toString() })
    p.stderr.on('data', (b: Buffer) => { err += b.toString() })
    p.on('error', reject)
    p.on('close', (code) => { resolve({ code, out, err }) })
  })
}

/**
 * Forces vm1 onto b and checks the takeover: b's instance starts within the goal, after a's
 * went off, at a higher epoch, with no overlap. Returns b's instance.
 */
async function forceOntoB (c: LocalCluster): Promise<{ onB: Instance, tookMs: number }> {
  const commandAt = Date.now()
  const r = await forceFailover(c, 'b')
  assert.equal(r.code, 0, `vmesh failover --force: exit ${r.code}\n${r.out}\n${r.err}`)
  const onB = await c.waitFor('vm1 started on b', async () => (await vmInstances(c)).list.find(i => i.node === 'b'), 30_000, 100)
  const tookMs = onB.from - commandAt
  const { list, overlapping } = await vmInstances(c)
  assert.deepEqual(overlapping, [])
  const onA = list.filter(i => i.node === 'a')
  assert.equal(onA.length, 1, JSON.stringify(list))
  assert.ok(Number.isFinite(onA[0]?.to) && (onA[0]?.to ?? Infinity) < onB.from, JSON.stringify(list))
  assert.ok(onB.epoch > (onA[0]?.epoch ?? Infinity), JSON.stringify(list))
  assert.ok(tookMs <= FORCE_GOAL_MS, `vm1 ran on b ${tookMs} ms after the command (goal ≤ ${FORCE_GOAL_MS} ms)`)
  await c.waitFor('b reports vm1 running', () => runningOn(c, 'b'), 15_000, 100)
  const own = (await ownershipOf(c, 'b')).vms.find(v => v.vm === VM)
  assert.ok(own !== undefined && own.ownedHere && own.forced && own.epoch === onB.epoch, JSON.stringify(own))
  return { onB, tookMs }
}

/** b's one instance keeps running, nothing else runs, b's watchdog fences nothing. */
function bAlone (c: LocalCluster, onB: Instance, aMayRunAfter = Infinity): () => Promise<string | undefined> {
  return async () => {
    const { list, overlapping } = await vmInstances(c)
    if (overlapping.length > 0) return `overlap ${JSON.stringify(overlapping)}`
    const bs = list.filter(i => i.node === 'b')
    if (bs.length !== 1 || bs[0]?.from !== onB.from || bs[0]?.to !== Infinity) return `b's instance changed: ${JSON.stringify(bs)}`
    if (list.some(i => i.node === 'a' && i.from > onB.from && i.from < aMayRunAfter)) return `a started vm1 again: ${JSON.stringify(list)}`
    if ((await watchdogLog(c, 'b')).some(e => e.type === 'fenced' && e.vm === VM)) return 'b\'s watchdog fenced vm1'
    return undefined
  }
}

/** After a is back: it sees b as the owner at b's epoch (or higher), acted on its demotion, runs nothing; b's claim is a lease. */
async function aReturnsAndStaysOff (c: LocalCluster, onB: Instance): Promise<void> {
  await c.waitFor('a learns that b owns vm1 at the higher epoch', async () => { const o = await ownerSeenBy(c, 'a'); return o !== undefined && o.owner === 'b' && o.epoch >= onB.epoch ? o : undefined }, 30_000, 100)
  await c.waitFor('b\'s forced claim became a lease (a acked it)', async () => (await ownershipOf(c, 'b')).vms.find(v => v.vm === VM)?.forced === false, 15_000, 100)
  await holdsFor('with a back, vm1 stays on b only', 6000, async () => {
    const bad = await bAlone(c, onB)()
    if (bad !== undefined) return bad
    if (await vmProcessAlive(c, 'a')) return 'a\'s VM process is alive'
    if ((await c.status('a')).vms.find(v => v.name === VM)?.runningHere === true) return 'a reports vm1 running'
    return undefined
  })
  const mine = (await ownershipOf(c, 'a')).vms.find(v => v.vm === VM)
  assert.ok(mine !== undefined && !mine.ownedHere && mine.owner === 'b', JSON.stringify(mine))
  const final = await vmInstances(c)
  assert.deepEqual(final.overlapping, [])
  assert.deepEqual(final.list.filter(i => i.to === Infinity).map(i => i.node), ['b'])
}

describe('integration: failover --force on two hosts without a witness', function () {
  this.timeout(180_000)
  let cluster: LocalCluster | undefined
  let bed: Netbed | undefined

  afterEach(async function () {
    const c = cluster
    const b = bed
    cluster = undefined
    bed = undefined
    await tearDownCluster(this.currentTest, c, b)
  })

  it('the owner host crashed: the survivor runs the VM within 10 s of the command and keeps it; the returning host stays off', async () => {
    const { c } = await startFailoverCluster([{ name: 'a' }, { name: 'b' }], (x) => { cluster = x })
    await c.waitFor('both alive in both views', () => allAlive(c), 30_000, 200)
    await c.kill('a')
    await crashVm(c.dir, 'a', VM)
    const { onB, tookMs } = await forceOntoB(c)
    // the other host stays away: no majority, yet the forced owner's own deadline keeps the VM up
    await holdsFor('while a is away, vm1 keeps running on b', 12_000, bAlone(c, onB))
    await c.start('a')
    await aReturnsAndStaysOff(c, onB)
    console.log(`      --force after a crash: vm1 on b ${tookMs} ms after the command (epoch ${onB.epoch}); a back: stays off, b's claim is a lease`)
  })

  it('the owner host was cut off, not dead: its VM is fenced before the survivor starts it, and after the heal it stays off', async function () {
    const why = Netbed.unavailable()
    if (why !== undefined) { console.log(`      (skipped: ${why})`); this.skip() }
    bed = new Netbed()
    bed.start(2)
    const b = bed
    const { c } = await startFailoverCluster([
      { name: 'a', netns: { prefix: b.exec(1), ip: b.ip(1) } },
      { name: 'b', netns: { prefix: b.exec(2), ip: b.ip(2) } }
    ], (x) => { cluster = x })
    await c.waitFor('both alive in both views', () => allAlive(c), 30_000, 200)
    const cutAt = Date.now()
    b.isolate(1)
    // the operator, wrongly sure that a is dead, forces at once
    const { onB, tookMs } = await forceOntoB(c)
    const fencedA = (await vmInstances(c)).list.find(i => i.node === 'a')
    assert.ok(fencedA !== undefined && fencedA.to >= cutAt && fencedA.to < onB.from)
    assert.equal(await vmProcessAlive(c, 'a'), false)
    await holdsFor('while a is cut off, vm1 keeps running on b only', 8000, bAlone(c, onB))
    b.heal()
    await c.waitFor('both alive in both views after the heal', () => allAlive(c), 30_000, 200)
    await aReturnsAndStaysOff(c, onB)
    console.log(`      --force during a partition: a's VM off ${fencedA.to - cutAt} ms after the cut, b's on ${onB.from - fencedA.to} ms later (${tookMs} ms after the command); healed: a stays off`)
  })
})
