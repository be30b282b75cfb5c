/**
 * Failure-detection benchmark on real daemons over loopback (LAN profile unless --wan).
 * For 3 and 10 nodes: kill -9 one node (rotating), take each survivor's "member dead" log
 * timestamp minus the kill time as its detection time, restart the victim and time its return
 * to alive; repeat ≥ 10 times. Then a quiet 60 s run under `stress-ng --cpu 2` counting false
 * suspicions and false deaths. Reports daemon RSS idle and under load.
 * Usage: npm run bench -- detect [--kills N] [--sizes 3,10] [--stress-s 60] [--wan]
 */
import { readFile } from 'node:fs/promises'
import { spawn } from 'node:child_process'
import { LocalCluster } from '../daemon/cluster/local-cluster.ts'
import { PROFILES } from '../config/profiles.ts'

interface LogEvent { t: number, peer: string, state: string, node: string }

async function readEvents (c: LocalCluster): Promise<LogEvent[]> {
  const out: LogEvent[] = []
  for (const n of c.nodes) {
    let text = ''
    try { text = await readFile(n.logPath, 'utf8') } catch { continue }
    for (const line of text.split('\n')) {
      if (!line.startsWith('{')) continue
      try {
        const j = JSON.parse(line) as { time?: string, msg?: string, peer?: string, state?: string }
        if (j.msg !== undefined && j.msg.startsWith('member ') && j.peer !== undefined && j.time !== undefined && j.state !== undefined) out.push({ t: Date.parse(j.time), peer: j.peer, state: j.state, node: n.name })
      } catch {}
    }
  }
  return out
}

function pct (xs: number[], p: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] as number
}

async function rssMiB (c: LocalCluster): Promise<number[]> {
  const out: number[] = []
  for (const n of c.nodes) {
    const pid = n.proc?.pid
    if (pid === undefined || !c.isRunning(n.name)) continue
    try {
      const st = await readFile(`/proc/${pid}/status`, 'utf8')
      const m = /VmRSS:\s+(\d+) kB/.exec(st)
      if (m != null) out.push(Math.round(Number(m[1]) / 1024))
    } catch {}
  }
  return out
}

function arg (args: string[], name: string, def: string): string {
  const i = args.indexOf(name)
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] as string : def
}

async function allAlive (c: LocalCluster): Promise<boolean> {
  for (const n of c.nodes) {
    if (!c.isRunning(n.name)) return false
    const s = await c.status(n.name)
    if (s.members.some(m => m.state !== 'alive')) return false
  }
  return true
}

async function sizeRun (size: number, kills: number, stressS: number, wan: boolean): Promise<object> {
  const nodes = Array.from({ length: size }, (_, i) => ({ name: `n${i}` }))
  const c = await LocalCluster.create({ nodes, profile: wan ? 'wan' : 'lan' })
  try {
    await c.startAll()
    await c.waitFor('converged', () => allAlive(c), 60_000, 200)
    await new Promise(resolve => setTimeout(resolve, 2000))
    const idleRss = await rssMiB(c)
    const detect: number[] = []
    const worstPerKill: number[] = []
    const rejoin: number[] = []
    for (let k = 0; k < kills; k++) {
      const victim = c.nodes[1 + (k % (size - 1))] as (typeof c.nodes)[number]
      const killAt = Date.now()
      await c.kill(victim.name)
      const survivors = c.nodes.filter(n => n.name !== victim.name)
      await c.waitFor(`${victim.name} dead everywhere`, async () => {
        for (const s of survivors) if ((await c.memberState(s.name, victim.name)) !== 'dead') return false
        return true
      }, wan ? 60_000 : 20_000, 100)
      await new Promise(resolve => setTimeout(resolve, 300)) // let logs flush
      const ev = (await readEvents(c)).filter(e => e.peer === victim.peerId && e.state === 'dead' && e.t >= killAt - 50)
      const per = survivors.map(s => { const e = ev.find(x => x.node === s.name); return e === undefined ? NaN : e.t - killAt }).filter(x => !Number.isNaN(x))
      detect.push(...per)
      worstPerKill.push(Math.max(...per))
      const restartAt = Date.now()
      await c.start(victim.name)
      await c.waitFor('all alive again', () => allAlive(c), 60_000, 100)
      rejoin.push(Date.now() - restartAt)
    }
    // quiet period under CPU stress: any suspect/dead event is false
    let stress: object = { skipped: 'stress-ng not found' }
    const stressStart = Date.now()
    const proc = spawn('stress-ng', ['--cpu', '2', '--timeout', `${stressS}s`, '--quiet'], { stdio: 'ignore' })
    const ok = await new Promise<boolean>(resolve => { proc.once('spawn', () => resolve(true)); proc.once('error', () => resolve(false)) })
    if (ok) {
      await new Promise(resolve => setTimeout(resolve, Math.max(1000, (stressS * 1000) / 2)))
      const loadedRss = await rssMiB(c)
      await new Promise<void>(resolve => proc.once('exit', () => resolve()))
      await new Promise(resolve => setTimeout(resolve, 500))
      const ev = (await readEvents(c)).filter(e => e.t >= stressStart)
      stress = {
        seconds: stressS,
        falseSuspicions: ev.filter(e => e.state === 'suspect').length,
        falseDeaths: ev.filter(e => e.state === 'dead').length,
        loadedRssMiB: { max: Math.max(...loadedRss), mean: Math.round(loadedRss.reduce((a, b) => a + b, 0) / loadedRss.length) }
      }
    }
    return {
      nodes: size,
      profile: wan ? 'wan' : 'lan',
      // the daemons run the profile with no overrides: these timings, from the one table
      timings: PROFILES[wan ? 'wan' : 'lan'].detector,
      kills,
      detectionMs: { p50: pct(detect, 50), p99: pct(detect, 99), max: Math.max(...detect), samples: detect.length },
      lastSurvivorMs: { p50: pct(worstPerKill, 50), p99: pct(worstPerKill, 99) },
      rejoinAliveMs: { p50: pct(rejoin, 50), p99: pct(rejoin, 99), note: 'includes daemon process start (~1 s of Node/tsx startup)' },
      stress,
      idleRssMiB: { max: Math.max(...idleRss), mean: Math.round(idleRss.reduce((a, b) => a + b, 0) / idleRss.length) }
    }
  } finally {
    await c.destroy()
  }
}

export async function run (args: string[]): Promise<object> {
  const kills = Number(arg(args, '--kills', '10'))
  const sizes = arg(args, '--sizes', '3,10').split(',').map(Number)
  const stressS = Number(arg(args, '--stress-s', '60'))
  const wan = args.includes('--wan')
  const results = []
  for (const size of sizes) results.push(await sizeRun(size, kills, stressS, wan))
  return { goal: { lanDetectP99Ms: 3000, wanDetectMs: 25000, falseDeaths: 0, idleRssMiB: 100 }, baseline: 'memberlist defaults 5-8 s, WSFC 10 s, vSphere HA 15-18 s (published)', results }
}
