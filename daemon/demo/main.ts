/**
 * `npm start`: a local demo mesh. Three daemons (two hosts and a witness) on 127.0.0.1 with
 * generated configs in a temp folder; prints the live membership table, kills one host with
 * SIGKILL, shows it declared dead by the survivors, restarts it, shows it alive again, and
 * cleans up. Each step prints the elapsed time so the detector's speed is visible.
 */
import '../../common/polyfill.ts'
import { LocalCluster } from './local-cluster.ts'
import type { StatusDocument } from '../status.ts'

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
  const cluster = await LocalCluster.create({ nodes: [{ name: 'hv-a' }, { name: 'hv-b' }, { name: 'witness', role: 'witness' }], logLevel: 'info' })
  const names = cluster.nodes.map(n => n.name)
  let cleaned = false
  const cleanup = async (): Promise<void> => { if (!cleaned) { cleaned = true; await cluster.destroy() } }
  process.on('SIGINT', () => { void cleanup().then(() => process.exit(130)) })
  try {
    say(`configs and data in ${cluster.dir}`)
    for (const n of cluster.nodes) say(`  ${n.name.padEnd(8)} ${n.role.padEnd(8)} /ip4/127.0.0.1/tcp/${n.port}  peer ${n.peerId}`)
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
    say('demo complete; stopping daemons and removing the temp folder')
  } finally {
    await cleanup()
  }
}

main().catch((err) => { process.stderr.write(`demo failed: ${(err as Error).stack ?? String(err)}\n`); process.exitCode = 1 })
