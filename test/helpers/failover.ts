/**
 * Shared pieces of the failover integration tests: a cluster of real daemons with one protected
 * VM (`vm1`, home `a`, replicated to the other hosts, the `command` driver with the fake VM),
 * status probes, and the diagnosis printed when a test fails (the daemons' election lines,
 * the watchdogs' logs and the VM events log).
 */
import assert from 'node:assert/strict'
import { writeFile, readFile, cp } from 'node:fs/promises'
import { join } from 'node:path'
import { LocalCluster, type LocalNodeSpec } from '../../daemon/cluster/local-cluster.ts'
import type { VmOwnershipStatus } from '../../daemon/ownership/types.ts'
import { installFakeVm, fakeVmHypervisor, instances, killAllVms, overlaps, type Instance } from './fake-vm.ts'

export const VM = 'vm1'

export interface FailoverCluster { c: LocalCluster, disk: string, script: string }

/**
 * Creates and starts the cluster. `a` is vm1's home and replicates it to every other host;
 * witnesses get no hypervisor; `opts.hypervisor` replaces the fake VM's driver section. Waits until vm1 runs on `a` and (when there are other hosts)
 * their replicas have applied a generation, so a failover has data to start from.
 */
export async function startFailoverCluster (nodes: LocalNodeSpec[], onCreated: (c: LocalCluster) => void, opts: { hypervisor?: (script: string, node: string) => Record<string, unknown> } = {}): Promise<FailoverCluster> {
  const c = await LocalCluster.create({ nodes })
  onCreated(c)
  const script = await installFakeVm(c.dir)
  const disk = join(c.dir, 'vm1.img')
  await writeFile(disk, Buffer.alloc(1024 * 1024, 7))
  const hosts = nodes.filter(n => n.role !== 'witness')
  for (const n of hosts) {
    const extra: Record<string, unknown> = { hypervisor: (opts.hypervisor ?? fakeVmHypervisor)(script, n.name) }
    if (n.name === 'a') extra.vms = [{ name: VM, disks: [disk], replicateTo: hosts.filter(x => x.name !== 'a').map(x => x.name), scanInterval: '500ms' }]
    await c.writeConfig(n.name, extra)
  }
  await c.startAll()
  await c.waitFor('vm1 running on a', () => runningOn(c, 'a'), 60_000, 100)
  for (const n of hosts) {
    if (n.name === 'a') continue
    await c.waitFor(`replica of vm1 on ${n.name}`, async () => (await replicaGeneration(c, n.name)) > 0, 60_000, 100)
  }
  return { c, disk, script }
}

/** vm1 runs on `node` by that node's own account (false when it does not answer). */
export async function runningOn (c: LocalCluster, node: string): Promise<boolean> {
  try { return (await c.status(node)).vms.some(v => v.name === VM && v.runningHere) } catch { return false }
}

/** Generation of vm1's replica applied on `node` (0 when none or no answer). */
export async function replicaGeneration (c: LocalCluster, node: string): Promise<number> {
  try { return (await c.status(node)).vms.find(v => v.name === VM)?.replica?.appliedGeneration ?? 0 } catch { return 0 }
}

/** Generation of the replica of vm1 sourced by `from` that `node` holds (0 when none or no answer). */
export async function replicaFrom (c: LocalCluster, node: string, from: string): Promise<number> {
  try { return (await c.status(node)).vms.find(v => v.name === VM && v.replica?.from === from)?.replica?.appliedGeneration ?? 0 } catch { return 0 }
}

export interface OwnershipView {
  vms: VmOwnershipStatus[]
  timeline: Array<{ atWallMs: number, vm: string, event: string, epoch?: number, detail?: string }>
  stats: { decodeErrors: number, starts: number, stops: number, startFailures: number }
}

export async function ownershipOf (c: LocalCluster, node: string): Promise<OwnershipView> {
  return await c.node(node).client.call<OwnershipView>('GET', '/v1/ownership', undefined, { timeoutMs: 3000 })
}

/** vm1's owner and epoch as `node` sees them, or undefined when it does not answer. */
export async function ownerSeenBy (c: LocalCluster, node: string): Promise<{ owner: string | null, epoch: number } | undefined> {
  try {
    const v = (await c.status(node)).vms.find(x => x.name === VM)
    return v === undefined ? undefined : { owner: v.owner, epoch: v.epoch }
  } catch { return undefined }
}

/** True when every running daemon sees every other configured node alive. */
export async function allAlive (c: LocalCluster): Promise<boolean> {
  for (const n of c.nodes) {
    const s = await c.status(n.name)
    if (s.members.some(m => m.state !== 'alive')) return false
  }
  return true
}

/** The stand-in VM's instances so far, with the no-overlap invariant checked by the caller. */
export async function vmInstances (c: LocalCluster): Promise<{ list: Instance[], overlapping: Array<[Instance, Instance]> }> {
  const list = (await instances(c.dir)).filter(i => i.vm === VM)
  return { list, overlapping: overlaps(list) }
}

/**
 * Waits until `b` has started vm1 after an incident that began at `sinceMs`, and checks the
 * handover: no overlap, `a`'s one instance went off at or after the incident and before `b`'s
 * began, and `b` runs at a higher epoch. Returns both instances and the margin between them.
 */
export async function waitTakeoverAfterFence (c: LocalCluster, sinceMs: number, timeoutMs: number): Promise<{ onB: Instance, fencedA: Instance, marginMs: number }> {
  const onB = await c.waitFor('vm1 started on b', async () => (await vmInstances(c)).list.find(i => i.node === 'b'), timeoutMs, 100)
  const { list, overlapping } = await vmInstances(c)
  assert.deepEqual(overlapping, [])
  const onA = list.filter(i => i.node === 'a')
  assert.equal(onA.length, 1, JSON.stringify(list))
  const fencedA = onA[0]
  assert.ok(fencedA !== undefined && Number.isFinite(fencedA.to), `a's instance was never turned off: ${JSON.stringify(list)}`)
  assert.ok(fencedA.to >= sinceMs, 'a\'s VM went off before the incident')
  const marginMs = onB.from - fencedA.to
  assert.ok(marginMs > 0, `b started ${marginMs} ms after a's VM went off (must be > 0)`)
  assert.ok(onB.epoch > fencedA.epoch, `epochs: a ${fencedA.epoch}, b ${onB.epoch}`)
  return { onB, fencedA, marginMs }
}

/** Whether the fake VM's process for `node` is alive (its pid file names a live process). */
export async function vmProcessAlive (c: LocalCluster, node: string): Promise<boolean> {
  try {
    const pid = Number((await readFile(join(c.dir, `${VM}.${node}.pid`), 'utf8')).trim())
    process.kill(pid, 0)
    return true
  } catch { return false }
}

/** Lines of a node's watchdog log (JSON objects). */
export async function watchdogLog (c: LocalCluster, node: string): Promise<Array<Record<string, unknown>>> {
  const text = await readFile(join(c.node(node).dir, 'data', 'watchdog.log'), 'utf8').catch(() => '')
  return text.split('\n').filter(Boolean).flatMap(l => { try { return [JSON.parse(l) as Record<string, unknown>] } catch { return [] } })
}

/** Prints what explains a failed failover test: daemons' relevant lines, watchdogs, VM events. */
export async function dumpFailure (c: LocalCluster, note = ''): Promise<void> {
  const out: string[] = [`=== failed failover test${note !== '' ? ` (${note})` : ''}; cluster ${c.dir}`]
  for (const n of c.nodes) {
    const log = await readFile(n.logPath, 'utf8').catch(() => '')
    const lines = log.split('\n').filter(l => /ownership|member (dead|alive|suspect)|VM |watchdog|scan failed|"level":(50|60)/.test(l) || (l !== '' && !l.startsWith('{'))).slice(-80)
    out.push(`--- ${n.name} daemon (relevant lines) ---`, ...lines)
    out.push(`--- ${n.name} daemon (raw tail) ---`, log.slice(-1500))
    out.push(`--- ${n.name} watchdog ---`, await readFile(join(n.dir, 'data', 'watchdog.log'), 'utf8').catch(() => '(none)'))
    try { out.push(`--- ${n.name} /v1/ownership ---`, JSON.stringify(await ownershipOf(c, n.name))) } catch (err) { out.push(`--- ${n.name} /v1/ownership: ${(err as Error).name}`) }
  }
  out.push('--- events.log ---', await readFile(join(c.dir, 'events.log'), 'utf8').catch(() => '(none)'))
  process.stderr.write(out.join('\n') + '\n')
  if (process.env.VMESH_KEEP_FAILED !== undefined) {
    await cp(c.dir, join(process.env.VMESH_KEEP_FAILED, `cluster-${Date.now()}`), { recursive: true }).catch(() => {})
  }
}

/** Real-time pause (only for "nothing happens during X" windows, which cannot be polled). */
export async function sleep (ms: number): Promise<void> { await new Promise(resolve => setTimeout(resolve, ms)) }

/**
 * Watches for `ms` that a condition keeps holding, polling every `pollMs`; rejects with the
 * first violation. For "the VM keeps running and nothing stops it" windows.
 */
export async function holdsFor (what: string, ms: number, check: () => Promise<string | undefined>, pollMs = 200): Promise<void> {
  const end = Date.now() + ms
  while (Date.now() < end) {
    const bad = await check()
    if (bad !== undefined) throw new InvariantBrokenError(what, bad)
    await sleep(pollMs)
  }
  const bad = await check()
  if (bad !== undefined) throw new InvariantBrokenError(what, bad)
}

export class InvariantBrokenError extends Error {
  readonly code = 'ERR_INVARIANT'
  constructor (readonly what: string, readonly detail: string) {
    super(`${what}: ${detail}`)
    this.name = 'InvariantBrokenError'
  }
}

/**
 * The afterEach of a test that ran a cluster and maybe a network bed: the evidence printed when
 * it failed, every stand-in VM killed, the cluster gone, the bed taken down even if that threw.
 */
export async function tearDownCluster (test: Mocha.Test | undefined, c: LocalCluster | undefined, bed?: { down: () => void }): Promise<void> {
  try {
    if (c !== undefined) {
      if (test?.state === 'failed') await dumpFailure(c, test.title)
      await killAllVms(c.dir)
      await c.destroy()
    }
  } finally {
    bed?.down()
  }
}
