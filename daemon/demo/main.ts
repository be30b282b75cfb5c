/**
 * `npm start`: a local demo mesh. Three daemons (two hosts and a witness) on 127.0.0.1 with
 * generated configs in a temp folder; prints the live membership table, kills one host with
 * SIGKILL, shows it declared dead by the survivors, restarts it, shows it alive again; then
 * protects a small VHD on hv-a (added with a live `reload`), writes into it, and shows the
 * replica on hv-b converging generation by generation; then crashes hv-a (daemon and VM) and
 * shows web01 restarted on exactly one survivor, with the timeline; then brings hv-a back (it
 * receives only the blocks that changed, its own disk seeding the replica) and moves web01 home
 * with a planned failover (zero data loss); and cleans up. Each step prints the
 * elapsed time so the detector's and the replication's speed are visible.
 */
import '../../common/polyfill.ts'
import { LocalCluster } from '../cluster/local-cluster.ts'
import { installFakeVm, fakeVmHypervisor, crashVm, instances, overlaps, killAllVms } from '../cluster/fake-vm.ts'
import type { StatusDocument } from '../status.ts'
import { execFile, spawnSync } from 'node:child_process'
import { mkdir, open, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'

const t0 = Date.now()
const stamp = (): string => `[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s]`
const say = (msg: string): void => { process.stdout.write(`${stamp()} ${msg}\n`) }

function table (views: Array<{ name: string, s: StatusDocument | undefined }>, names: string[]): string {
  const w = 12
  const head = 'view \\ member'.padEnd(16) + names.map(n => n.padEnd(w)).join('')
  const rows = views.map(v => v.name.padEnd(16) + names.map(n => {
    if (v.s === undefined) return '(down)'.padEnd(w)
    if (n === v.name) return 'self'.padEnd(w)
    return (v.s.members.find(m => m.name === n)?.state ?? '?').padEnd(w)
  }).join(''))
  return [head, ...rows].map(l => '        ' + l).join('\n')
}

async function snapshot (c: LocalCluster): Promise<Array<{ name: string, s: StatusDocument | undefined }>> {
  return await Promise.all(c.nodes.map(async n => ({ name: n.name, s: c.isRunning(n.name) ? await c.status(n.name).catch(() => undefined) : undefined })))
}

async function main (): Promise<void> {
  say('vmesh demo: starting a local mesh of two hosts and a witness on 127.0.0.1')
  const cluster = await LocalCluster.create({ nodes: [{ name: 'hv-a' }, { name: 'hv-b' }, { name: 'witness', role: 'witness' }], logLevel: 'info', keep: process.env.VMESH_DEMO_KEEP === '1' })
  const names = cluster.nodes.map(n => n.name)
  let cleaned = false
  const cleanup = async (): Promise<void> => { if (!cleaned) { cleaned = true; await killAllVms(cluster.dir); await cluster.destroy() } }
  process.on('SIGINT', () => { void cleanup().then(() => process.exit(130)) })
  try {
    say(`configs and data in ${cluster.dir}`)
    for (const n of cluster.nodes) say(`  ${n.name.padEnd(8)} ${n.role.padEnd(8)} /ip4/127.0.0.1/tcp/${n.port}  peer ${n.peerId}`)
    // the hosts get the `command` hypervisor driver with a stand-in VM (a process per host)
    const script = await installFakeVm(cluster.dir)
    for (const h of ['hv-a', 'hv-b']) await cluster.writeConfig(h, { hypervisor: fakeVmHypervisor(script, h) })
    await cluster.startAll()
    say('daemons started; waiting for every member to see every other alive')
    await cluster.waitFor('all alive', async () => {
      const snap = await snapshot(cluster)
      return snap.every(v => v.s !== undefined && v.s.members.every(m => m.state === 'alive')) ? snap : undefined
    }, 20_000)
    say('membership converged:\n' + table(await snapshot(cluster), names))

    say('kill -9 hv-b (a host crash)')
    const killedAt = Date.now()
    await cluster.kill('hv-b')
    let last = ''
    await cluster.waitFor('hv-b dead everywhere', async () => {
      const snap = await snapshot(cluster)
      const t = table(snap, names)
      if (t !== last) { last = t; say('membership:\n' + t) }
      return snap.filter(v => v.s !== undefined).every(v => v.s?.members.find(m => m.name === 'hv-b')?.state === 'dead')
    }, 30_000, 100)
    say(`hv-b declared dead by every survivor ${((Date.now() - killedAt) / 1000).toFixed(2)} s after the kill`)

    say('restarting hv-b')
    const restartAt = Date.now()
    await cluster.start('hv-b')
    await cluster.waitFor('all alive again', async () => {
      const snap = await snapshot(cluster)
      return snap.every(v => v.s !== undefined && v.s.members.every(m => m.state === 'alive'))
    }, 30_000, 100)
    say(`hv-b alive again in every view ${((Date.now() - restartAt) / 1000).toFixed(2)} s after its restart began:\n` + table(await snapshot(cluster), names))
    await replicationDemo(cluster)
    await failoverDemo(cluster)
    await failbackDemo(cluster)
    say('demo complete; stopping daemons and removing the temp folder')
  } finally {
    await cleanup()
  }
}

function hasTool (tool: string): boolean { return spawnSync(tool, ['--version'], { stdio: 'ignore' }).status === 0 }

async function run (tool: string, args: string[]): Promise<string> {
  return await new Promise((resolve, reject) => {
    execFile(tool, args, { timeout: 60_000 }, (err, stdout, stderr) => { if (err !== null) reject(new Error(`${tool}: ${stderr || err.message}`)); else resolve(stdout) })
  })
}

/** Protects a small disk on hv-a and shows hv-b's replica converging. */
async function replicationDemo (cluster: LocalCluster): Promise<void> {
  const qemu = hasTool('qemu-img') && hasTool('qemu-io')
  const dir = join(cluster.dir, 'vms')
  await mkdir(dir, { recursive: true })
  const disk = join(dir, qemu ? 'web01.vhd' : 'web01.img')
  const size = 64 * 1024 * 1024
  if (qemu) {
    await run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', disk, String(size)])
    await run('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x11 0 4M', '-c', 'write -P 0x22 32M 2M', disk])
  } else {
    const fh = await open(disk, 'w')
    await fh.truncate(size)
    await fh.write(Buffer.alloc(4 * 1024 * 1024, 0x11), 0, undefined, 0)
    await fh.close()
  }
  say(`replication: protecting ${disk} (${qemu ? 'dynamic VHD made by qemu-img' : 'raw file; qemu-img not installed'}) on hv-a, replicating to hv-b`)
  await cluster.writeConfig('hv-a', { hypervisor: fakeVmHypervisor(join(cluster.dir, 'vm.sh'), 'hv-a'), vms: [{ name: 'web01', disks: [disk], replicateTo: ['hv-b'], scanInterval: 500, quietBudget: 1000 }] })
  const r = await cluster.node('hv-a').client.call<{ applied: string[] }>('POST', '/v1/reload')
  say(`vmesh reload on hv-a applied: ${r.applied.join(', ')}`)

  let last = ''
  const show = async (): Promise<{ inSync: boolean, generation: number }> => {
    const a = await cluster.status('hv-a')
    const b = await cluster.status('hv-b')
    const v = a.vms.find(x => x.name === 'web01')
    const t = v?.targets.find(x => x.node === 'hv-b')
    const rep = b.vms.find(x => x.name === 'web01')?.replica
    const line = `hv-a generation ${v?.generation ?? 0}; hv-b ${t?.state ?? '?'}${t?.seedProgress !== undefined ? ` ${(t.seedProgress * 100).toFixed(0)}%` : ''}, acked ${t?.ackedGeneration ?? 0}, lag ${t?.lagMs ?? '?'} ms, pending ${t?.bytesPending ?? '?'} B; replica applied generation ${rep?.appliedGeneration ?? 0}`
    if (line !== last) { last = line; say('  ' + line) }
    return { inSync: t?.state === 'in-sync' && (v?.generation ?? 0) > 0 && t.ackedGeneration === v?.generation, generation: v?.generation ?? 0 }
  }
  /** Waits until hv-b acknowledged a generation after `after`; returns that generation. */
  const converge = async (what: string, after = 0): Promise<number> => {
    const t0 = Date.now()
    const s = await cluster.waitFor(what, async () => { const s = await show(); return s.inSync && s.generation > after ? s : undefined }, 30_000, 150)
    say(`${what}: converged in ${((Date.now() - t0) / 1000).toFixed(2)} s`)
    return s.generation
  }
  await converge('initial seed')
  const g0 = (await cluster.status('hv-a')).vms[0]?.generation ?? 0
  say('writing into the disk on hv-a' + (qemu ? ' with qemu-io (guest writes through the VHD format)' : ''))
  if (qemu) await run('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x33 8M 1M', '-c', 'write -P 0x44 48M 512k', disk])
  else { const fh = await open(disk, 'r+'); await fh.write(Buffer.alloc(1024 * 1024, 0x33), 0, undefined, 8 * 1024 * 1024); await fh.close() }
  await cluster.waitReplicaApplied('hv-b', 'web01', await converge('write → replica durable on hv-b', g0))
  const b = await cluster.status('hv-b')
  const replica = b.vms.find(x => x.name === 'web01')?.replica?.files[disk]
  if (replica !== undefined) {
    const same = qemu
      ? await run('qemu-img', ['compare', '-q', '-f', 'vpc', '-F', 'vpc', disk, replica]).then(() => true, () => false)
      : (await readFile(disk)).equals(await readFile(replica))
    say(`replica on hv-b ${replica}: ${same ? 'identical to the source' : 'DIFFERS from the source'}${qemu ? ' (qemu-img compare)' : ''}`)
  }
}

/** Kills hv-a (daemon and VM: a host crash) and shows web01 restarted on exactly one survivor. */
async function failoverDemo (cluster: LocalCluster): Promise<void> {
  const vmOn = async (node: string): Promise<{ running: boolean, owner: string | null, epoch: number } | undefined> => {
    try {
      const v = (await cluster.status(node)).vms.find(x => x.name === 'web01')
      return v === undefined ? undefined : { running: v.runningHere, owner: v.owner, epoch: v.epoch }
    } catch { return undefined }
  }
  const before = await cluster.waitFor('web01 running on hv-a', async () => { const v = await vmOn('hv-a'); return v?.running === true ? v : undefined }, 30_000, 100)
  say(`failover: web01 runs on hv-a (owner ${before.owner}, epoch ${before.epoch}); its lease is renewed through a majority of hv-a, hv-b and the witness`)
  say('kill -9 hv-a and its VM (a host crash)')
  const killAt = Date.now()
  await cluster.kill('hv-a')
  await crashVm(cluster.dir, 'hv-a', 'web01')
  let last = ''
  const after = await cluster.waitFor('web01 running on hv-b', async () => {
    const b = await vmOn('hv-b')
    const w = await vmOn('witness')
    const line = `hv-b sees owner ${b?.owner ?? '?'} epoch ${b?.epoch ?? '?'}${b?.running === true ? ' (running here)' : ''}; witness sees owner ${w?.owner ?? '?'} epoch ${w?.epoch ?? '?'}`
    if (line !== last) { last = line; say('  ' + line) }
    return b?.running === true ? b : undefined
  }, 40_000, 100)
  const rto = (Date.now() - killAt) / 1000
  say(`web01 restarted on hv-b at epoch ${after.epoch}, ${rto.toFixed(2)} s after the crash (detection, lease expiry, election, replica finalize, start)`)
  const list = await instances(cluster.dir)
  say('timeline of VM instances (from the hypervisor scripts\' log):')
  for (const i of list) say(`  ${i.vm} on ${i.node} epoch ${i.epoch}: ${((i.from - killAt) / 1000).toFixed(2)} s → ${Number.isFinite(i.to) ? ((i.to - killAt) / 1000).toFixed(2) + ' s' : 'running'} (relative to the crash)`)
  const bad = overlaps(list)
  say(bad.length === 0 ? 'never two instances at once: checked' : `DOUBLE START: ${JSON.stringify(bad)}`)
}

/** hv-a returns: it becomes a replica of hv-b, then a planned failover brings web01 home. */
async function failbackDemo (cluster: LocalCluster): Promise<void> {
  const fromB = async (): Promise<{ applied: number, bytes: number } | undefined> => {
    try {
      const r = (await cluster.status('hv-a')).vms.find(x => x.name === 'web01' && x.replica?.from === 'hv-b')?.replica
      return r == null ? undefined : { applied: r.appliedGeneration, bytes: (r as { bytesReceived?: number }).bytesReceived ?? 0 }
    } catch { return undefined }
  }
  const running = Object.values((await cluster.status('hv-b')).vms.find(x => x.name === 'web01')?.replica?.files ?? {})[0]
  if (running !== undefined) {
    say(`the guest on hv-b writes 1 MiB of random data into ${running}`)
    if (running.endsWith('.vhd')) {
      const data = join(cluster.dir, 'guest-write.bin')
      await writeFile(data, randomBytes(1024 * 1024))
      await run('qemu-io', ['-f', 'vpc', '-c', `write -s ${data} 16M 1M`, running])
    } else {
      const fh = await open(running, 'r+')
      try { await fh.write(randomBytes(1024 * 1024), 0, undefined, 16 * 1024 * 1024); await fh.sync() } finally { await fh.close() }
    }
  }
  say('failback: restarting hv-a; it learns hv-b owns web01 at a higher epoch and leaves it off')
  const t0 = Date.now()
  await cluster.start('hv-a')
  const r = await cluster.waitFor('hv-a holds a replica from hv-b', async () => { const x = await fromB(); return x !== undefined && x.applied > 0 ? x : undefined }, 60_000, 150)
  say(`hv-a is now a replica of hv-b, in sync after ${((Date.now() - t0) / 1000).toFixed(2)} s: ${r.bytes} bytes received for a 64 MiB disk (its own copy seeded the replica; only the blocks that differed travelled)`)
  say('vmesh failover web01 --planned --to hv-a (on the owner, hv-b): stop, ship the final generation, start on hv-a')
  const t1 = Date.now()
  await cluster.node('hv-b').client.call('POST', '/v1/failover', { vm: 'web01', to: 'hv-a', planned: true })
  await cluster.waitFor('web01 home on hv-a', async () => (await cluster.status('hv-a')).vms.some(v => v.name === 'web01' && v.runningHere), 60_000, 100)
  const v = (await cluster.status('hv-a')).vms.find(x => x.name === 'web01')
  say(`web01 runs on hv-a again at epoch ${v?.epoch ?? '?'}, ${((Date.now() - t1) / 1000).toFixed(2)} s after the request`)
  const list = await instances(cluster.dir)
  for (const i of list) say(`  ${i.vm} on ${i.node} epoch ${i.epoch}: ${Number.isFinite(i.to) ? 'stopped' : 'running'}`)
  const bad = overlaps(list)
  say(bad.length === 0 ? 'never two instances at once: checked' : `DOUBLE START: ${JSON.stringify(bad)}`)
}

main().catch((err) => { process.stderr.write(`demo failed: ${(err as Error).stack ?? String(err)}\n`); process.exitCode = 1 })
