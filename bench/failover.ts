/**
 * Failover benchmark on real daemons over loopback (LAN profile): two hosts and a witness, one
 * protected VM (the `command` driver with a stand-in VM process). RTO = kill -9 of the owner's
 * daemon and VM → the VM started on the survivor (guest boot excluded), over N fresh clusters.
 * Then the paused-owner case (SIGSTOP of the owner's daemon — its watchdog is a separate process):
 * the margin between the owner's VM going off (watchdog fence) and the survivor's start; a
 * positive margin means the two never overlapped. Then the isolated owner: each daemon in a network
 * namespace of its own (test/helpers/netbed.ts; needs root, skipped otherwise), the owner's host
 * cut off by iptables — its daemon keeps running without a majority, its lease runs out and the
 * VM goes off — and the same margin to the survivor's start.
 * Then site failover (bench/failover-site.ts): 10 VMs of a branch host moved across two DR hosts
 * by `vmesh failover --site`, command → all running (driver time excluded).
 * Usage: npm run bench -- failover [--runs 10] [--paused-runs 3] [--isolated-runs 3] [--site-runs 3]
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LocalCluster } from '../daemon/cluster/local-cluster.ts'
import { installFakeVm, fakeVmHypervisor, crashVm, instances, overlaps, killAllVms } from '../daemon/cluster/fake-vm.ts'
import { Netbed } from '../test/helpers/netbed.ts'
import { PROFILES } from '../config/profiles.ts'
import { siteSection } from './failover-site.ts'

function arg (args: string[], name: string, def: string): string {
  const i = args.indexOf(name)
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] as string : def
}

function pct (xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN
}

async function cluster (bed?: Netbed): Promise<LocalCluster> {
  const ns = (i: number): { netns?: { prefix: string[], ip: string } } => bed === undefined ? {} : { netns: { prefix: bed.exec(i), ip: bed.ip(i) } }
  const c = await LocalCluster.create({ nodes: [{ name: 'a', ...ns(1) }, { name: 'b', ...ns(2) }, { name: 'w', role: 'witness', ...ns(3) }], profile: 'lan', logLevel: 'warn' })
  const script = await installFakeVm(c.dir)
  const disk = join(c.dir, 'vm1.img')
  await writeFile(disk, Buffer.alloc(4 * 1024 * 1024, 7))
  await c.writeConfig('a', { hypervisor: fakeVmHypervisor(script, 'a'), vms: [{ name: 'vm1', disks: [disk], replicateTo: ['b'], scanInterval: '500ms' }] })
  await c.writeConfig('b', { hypervisor: fakeVmHypervisor(script, 'b') })
  await c.startAll()
  const running = async (n: string): Promise<boolean> => { try { return (await c.status(n)).vms.some(v => v.name === 'vm1' && v.runningHere) } catch { return false } }
  await c.waitFor('vm1 on a', () => running('a'), 60_000, 100)
  await c.waitFor('replica on b', async () => (await c.status('b')).vms.some(v => v.name === 'vm1' && v.replica !== null && v.replica.appliedGeneration > 0), 60_000, 100)
  return c
}

async function startedOnB (c: LocalCluster, sinceMs: number): Promise<number> {
  return await c.waitFor('vm1 started on b', async () => (await instances(c.dir)).find(i => i.node === 'b' && i.from >= sinceMs - 1000)?.from, 60_000, 50)
}

export async function run (args: string[]): Promise<object> {
  const runs = Number(arg(args, '--runs', '10'))
  const pausedRuns = Number(arg(args, '--paused-runs', '3'))
  const isolatedRuns = Number(arg(args, '--isolated-runs', '3'))
  const siteRuns = Number(arg(args, '--site-runs', '3'))
  const rto: number[] = []
  let doubleStarts = 0
  for (let i = 0; i < runs; i++) {
    const c = await cluster()
    try {
      const killAt = Date.now()
      await c.kill('a')
      await crashVm(c.dir, 'a', 'vm1')
      const started = await startedOnB(c, killAt)
      rto.push(started - killAt)
      doubleStarts += overlaps(await instances(c.dir)).length
    } finally { await killAllVms(c.dir); await c.destroy() }
  }
  const margins: number[] = []
  for (let i = 0; i < pausedRuns; i++) {
    const c = await cluster()
    try {
      const stopAt = Date.now()
      await c.signal('a', 'SIGSTOP')
      const started = await startedOnB(c, stopAt)
      const list = await instances(c.dir)
      const onA = list.find(x => x.node === 'a')
      if (onA !== undefined && Number.isFinite(onA.to)) margins.push(started - onA.to)
      doubleStarts += overlaps(list).length
      await c.signal('a', 'SIGCONT')
    } finally { await killAllVms(c.dir); await c.destroy() }
  }
  const isolated: number[] = []
  const noNetbed = isolatedRuns > 0 ? Netbed.unavailable() : undefined
  for (let i = 0; i < isolatedRuns && noNetbed === undefined; i++) {
    const bed = new Netbed()
    bed.start(3)
    let c: LocalCluster | undefined
    try {
      c = await cluster(bed)
      const cutAt = Date.now()
      bed.isolate(1)
      const started = await startedOnB(c, cutAt)
      const list = await instances(c.dir)
      const onA = list.find(x => x.node === 'a')
      if (onA !== undefined && Number.isFinite(onA.to)) isolated.push(started - onA.to)
      doubleStarts += overlaps(list).length
    } finally {
      if (c !== undefined) { await killAllVms(c.dir); await c.destroy() }
      bed.down()
    }
  }
  return {
    profile: 'lan',
    // the daemons run the profile with no overrides: these timings, from the one table
    timings: { detector: PROFILES.lan.detector, ownership: PROFILES.lan.ownership },
    goal: { rtoP99Ms: 10_000, doubleStarts: 0, pausedOwnerMarginMs: '> 0 every time', isolatedOwnerMarginMs: '> 0 every time' },
    baseline: 'published: vSphere HA 25-35 s, Proxmox HA ~120 s, Hyper-V Replica needs an administrator',
    rtoMs: { runs, p50: pct(rto, 50), p99: pct(rto, 99), min: Math.min(...rto), max: Math.max(...rto), samples: rto },
    pausedOwner: { runs: pausedRuns, marginMs: margins, minMarginMs: margins.length > 0 ? Math.min(...margins) : null, note: 'owner daemon SIGSTOPped: its watchdog process fences the VM; margin = survivor start − fence' },
    isolatedOwner: noNetbed !== undefined
      ? { skipped: noNetbed }
      : { runs: isolatedRuns, marginMs: isolated, minMarginMs: isolated.length > 0 ? Math.min(...isolated) : null, note: 'owner host cut off by iptables (network namespaces): its lease runs out and its VM goes off; margin = survivor start − off' },
    site: siteRuns > 0 ? await siteSection(siteRuns) : { skipped: '--site-runs 0' },
    doubleStarts
  }
}
