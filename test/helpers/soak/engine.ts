/**
 * The chaos soak on real processes (issue #14 item 4), shared by `npm run bench -- soak` and
 * test/integration/soak/soak.test.ts.
 *
 * Flow: three hosts (h1..h3) and a witness (w), each daemon in a network namespace of its own
 * when this machine allows it (test/helpers/netbed.ts), else on 127.0.0.1; every daemon runs
 * under libfaketime with its own offset file. Four VMs (vm1..vm4, homes h1 h2 h3 h1, each
 * replicated to the two other hosts) whose process is a writer (writer.mjs) on the file vmesh
 * starts it from; each host's replica folder is a small tmpfs (root only) the nemesis can fill.
 * Once every VM runs and every replica is in sync, a seeded nemesis acts every 10-30 s, one fault
 * at a time: inject, hold, heal, then measure how long until every VM runs somewhere and until
 * every replica has caught up with what its source had at the heal. Meanwhile a checker rebuilds
 * each VM's instances from the VM script's events log (never two at once), reads every replica
 * at rest and checks it is exactly one state its source's writer logged (`qemu-img compare`
 * against that state rebuilt), watches every daemon for exits nobody caused, and samples RSS.
 * Everything is torn down in `finally`; the cluster folder is kept when an invariant broke.
 */
import { spawnSync } from 'node:child_process'
import { mkdir, mkdtemp, open, readFile, writeFile, rm, statfs, cp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import { crashVm, instances, overlaps, killAllVms, type Instance } from '../../../daemon/cluster/fake-vm.ts'
import { SeededRandom, shuffle } from '../../../common/random.ts'
import type { StatusDocument } from '../../../daemon/status.ts'
import { Netbed } from '../netbed.ts'
import { qemuImgCreate, qemuImgCompare } from '../qemu.ts'
import { installSoakVm, soakHypervisor } from './vm.ts'
import { VmStates, sha256 } from './states.ts'

const HOSTS = ['h1', 'h2', 'h3'] as const
const NODES = [...HOSTS, 'w'] as const
const VMS: Array<{ name: string, home: string }> = [
  { name: 'vm1', home: 'h1' }, { name: 'vm2', home: 'h2' }, { name: 'vm3', home: 'h3' }, { name: 'vm4', home: 'h1' }
]
const DISK_BYTES = 4 * 1024 * 1024
const LIBFAKETIME = '/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1'
/**
 * Each host's replica folder (tmpfs, so the nemesis can fill it). It must hold the steady state:
 * up to one store per (former owner, VM) with its undo logs — the default retention keeps every
 * generation of the last hour, ≈ 64-200 KiB each at a write a second (`vms[].recoveryPoints`
 * is not applied by the daemon, see the README) — and a seed copy per (owner, VM). 96 MiB
 * filled up for good within a 10-minute run. Pages are only used as written.
 */
const REPLICA_TMPFS = '1g'

export type FaultKind = 'kill-host' | 'sigstop' | 'partition-one' | 'partition-split' | 'disk-full' | 'restart' | 'clock-jump'

export interface SoakOptions {
  durationMs: number
  seed: number
  /** Every VM must run somewhere within this long after each heal. @default 15000 */
  runningBoundMs?: number
  /** Every replica must have caught up with its source's generation at the heal within this long. @default 60000 */
  syncBoundMs?: number
  /** RSS is compared from this process age on. @default 60000 */
  warmupMs?: number
  /** Progress lines (stderr in the bench). */
  log?: (line: string) => void
  /** Keep the cluster folder even when every invariant held. */
  keep?: boolean
}

export interface SoakAction {
  n: number
  kind: FaultKind
  target: string
  detail?: string
  /** ms since the soak began */
  atMs: number
  holdMs: number
  healedAtMs?: number
  timeToRunningMs?: number
  timeToInSyncMs?: number
  error?: string
}

export interface SoakResult {
  seed: number
  durationMs: number
  mode: 'netns' | 'loopback'
  /** Faults this machine could not inject, and why. */
  unavailable: Record<string, string>
  bounds: { runningMs: number, inSyncMs: number, rssGrowthPct: number }
  actions: SoakAction[]
  figures: {
    actions: number
    doubleStarts: number
    tornReplicas: number
    replicaChecks: number
    /** Of those, replicas at a fuzzy generation (checked page by page). */
    fuzzyChecks: number
    qemuCompares: number
    tornStarts: number
    unexpectedExits: number
    maxTimeToRunningMs: number | null
    maxTimeToInSyncMs: number | null
    rssGrowthPct: number | null
    vmStarts: number
    writerStates: number
  }
  rss: Array<{ node: string, pid: number, livedMs: number, baselineKiB: number, endKiB: number, growthPct: number, /** [age s, RSS MiB, V8 heap committed MiB, external MiB, LevelDB MiB, V8 malloced peak MiB] every ~5 s (-1: not read) */ samples: Array<[number, number, number, number, number, number]> }>
  violations: string[]
  clusterDir?: string
}

interface DaemonWatch { pid: number, node: string, startedAt: number, expectedExit: boolean, rss: Array<{ age: number, kib: number, heapKib?: number, extKib?: number, levelKib?: number, mallocPeakKib?: number }> }

const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

export async function runSoak (opts: SoakOptions): Promise<SoakResult> {
  const log = opts.log ?? (() => {})
  const runningBound = opts.runningBoundMs ?? 15_000
  const syncBound = opts.syncBoundMs ?? 60_000
  const warmupMs = opts.warmupMs ?? 60_000
  const rng = new SeededRandom(opts.seed)
  const why = Netbed.unavailable()
  const unavailable: Record<string, string> = {}
  if (why !== undefined) {
    unavailable['partition-one'] = unavailable['partition-split'] = `no network namespaces: ${why}`
    unavailable['disk-full'] = `no tmpfs for the replica folders: ${why}`
  }
  const kinds: FaultKind[] = (['kill-host', 'sigstop', 'partition-one', 'partition-split', 'disk-full', 'restart', 'clock-jump'] as FaultKind[]).filter(k => unavailable[k] === undefined)
  const bed = why === undefined ? new Netbed() : undefined
  const violations: string[] = []
  const actions: SoakAction[] = []
  const watches: DaemonWatch[] = []
  const mounts: string[] = []
  let c: LocalCluster | undefined
  let t0 = Date.now()
  let stopped = false
  const frozen = new Set<string>()
  const down = new Set<string>()
  const seenOverlaps = new Set<string>()
  let doubleStarts = 0
  let torn = 0
  let tornStarts = 0
  let replicaChecks = 0
  let fuzzyChecks = 0
  let qemuCompares = 0
  const timesToRunning: number[] = []
  const timesToSync: number[] = []
  const violate = (what: string): void => { violations.push(`${((Date.now() - t0) / 1000).toFixed(1)} s: ${what}`); log(`VIOLATION ${what}`) }

  try {
    bed?.start(NODES.length)
    const specDir = await mkdtemp(join(tmpdir(), 'vmesh-soak-'))
    const faketime = (node: string): string => join(specDir, node, 'faketime.rc')
    c = await LocalCluster.create({
      dir: specDir,
      nodes: NODES.map((name, i) => ({
        name,
        ...(name === 'w' ? { role: 'witness' as const } : {}),
        ...(bed !== undefined ? { netns: { prefix: bed.exec(i + 1), ip: bed.ip(i + 1) } } : {}),
        env: { LD_PRELOAD: LIBFAKETIME, FAKETIME_TIMESTAMP_FILE: faketime(name), FAKETIME_DONT_FAKE_MONOTONIC: '1', FAKETIME_CACHE_DURATION: '1' }
      }))
    })
    const cl = c
    for (const n of NODES) await writeFile(faketime(n), '+0\n')
    const script = await installSoakVm(cl.dir)
    const vmDir = join(cl.dir, 'vms')
    await mkdir(vmDir)
    const states = new Map<string, VmStates>()
    for (const v of VMS) {
      const disk = join(vmDir, `${v.name}.vhd`)
      await qemuImgCreate(disk, 'vpc', DISK_BYTES, { subformat: 'fixed', force_size: true })
      states.set(v.name, new VmStates(v.name, join(cl.dir, `states-${v.name}.log`), await readFile(disk)))
    }
    for (const h of HOSTS) {
      if (bed !== undefined) {
        const dir = join(cl.node(h).dir, 'data', 'replicas')
        await mkdir(dir, { recursive: true })
        const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${REPLICA_TMPFS}`, 'tmpfs', dir], { encoding: 'utf8', timeout: 20_000 })
        if (r.status !== 0) throw new Error(`mount tmpfs on ${dir}: ${r.stderr}`)
        mounts.push(dir)
      }
      await cl.writeConfig(h, {
        hypervisor: soakHypervisor(script, h),
        vms: VMS.filter(v => v.home === h).map(v => ({ name: v.name, disks: [join(vmDir, `${v.name}.vhd`)], replicateTo: HOSTS.filter(x => x !== h), scanInterval: '500ms' }))
      })
    }

    const watch = (node: string): void => {
      const p = cl.node(node).proc
      if (p?.pid === undefined) return
      const w: DaemonWatch = { pid: p.pid, node, startedAt: Date.now(), expectedExit: false, rss: [] }
      watches.push(w)
      p.once('exit', (code, sig) => {
        if (!w.expectedExit && !stopped) violate(`${node}'s daemon (pid ${w.pid}) exited by itself: code ${code} signal ${sig}; log ${cl.node(node).logPath}`)
      })
    }
    const expectExit = (node: string): void => { for (const w of watches) if (w.node === node) w.expectedExit = true }
    const startNode = async (node: string): Promise<void> => {
      try { await cl.start(node, { timeoutMs: 90_000 }) } catch (err) { violate(`${node} did not start: ${(err as Error).message.slice(0, 500)}`); return }
      watch(node)
    }

    log(`soak seed ${opts.seed}, ${bed !== undefined ? 'network namespaces' : 'loopback'}; cluster ${cl.dir}`)
    for (const n of NODES) await startNode(n)

    // ---- probes ----
    const status = async (node: string): Promise<StatusDocument | undefined> => {
      if (frozen.has(node) || down.has(node) || !cl.isRunning(node)) return undefined
      try { return await cl.status(node) } catch { return undefined }
    }
    const pidAlive = async (vm: string, node: string): Promise<boolean> => {
      try { process.kill(Number((await readFile(join(cl.dir, `${vm}.${node}.pid`), 'utf8')).trim()), 0); return true } catch { return false }
    }
    const notRunning = async (): Promise<string[]> => {
      const out: string[] = []
      for (const v of VMS) {
        let any = false
        for (const h of HOSTS) if (await pidAlive(v.name, h)) any = true
        if (!any) out.push(v.name)
      }
      return out
    }
    /** VMs whose owner has not yet had every other host ack its generation as of `base` (reset when the owner changes). */
    const behind = async (base: Map<string, { owner: string, generation: number }>): Promise<string[]> => {
      const docs = new Map<string, StatusDocument>()
      for (const h of HOSTS) { const s = await status(h); if (s !== undefined) docs.set(h, s) }
      const out: string[] = []
      for (const v of VMS) {
        const owner = [...docs.entries()].find(([, s]) => s.vms.some(x => x.name === v.name && x.runningHere))
        if (owner === undefined) { out.push(`${v.name}: runs nowhere we can see`); continue }
        const vs = owner[1].vms.find(x => x.name === v.name)
        if (vs === undefined) { out.push(v.name); continue }
        let b = base.get(v.name)
        if (b === undefined || b.owner !== owner[0]) { b = { owner: owner[0], generation: vs.generation }; base.set(v.name, b) }
        const targets = HOSTS.filter(h => h !== owner[0])
        const lag = targets.filter(t => { const ts = vs.targets.find(x => x.node === t); return ts === undefined || ts.ackedGeneration < (b?.generation ?? 0) || ts.state === 'seeding' || ts.state === 'disconnected' || ts.state === 'error' })
        if (lag.length > 0) out.push(`${v.name}@${owner[0]} g${b.generation}: ${lag.map(t => `${t}=${vs.targets.find(x => x.node === t)?.state ?? 'none'}/${vs.targets.find(x => x.node === t)?.ackedGeneration ?? '-'}`).join(',')}`)
      }
      return out
    }

    /** Every replica at rest on every answering host: exactly one state its writer logged. */
    const checkReplicas = async (): Promise<void> => {
      for (const h of HOSTS) {
        const before = await status(h)
        if (before === undefined) continue
        for (const v of before.vms) {
          const r = v.replica
          const st = states.get(v.name)
          if (r == null || st === undefined || r.finalized === true || v.runningHere || r.seeding === true || r.applyingGeneration != null || r.receivingGeneration != null) continue
          const path = Object.values(r.files)[0]
          if (path === undefined) continue
          const bytes = await readFile(path).catch(() => undefined)
          if (bytes === undefined) continue
          const after = (await status(h))?.vms.find(x => x.name === v.name)?.replica
          if (after == null || after.finalized === true || after.seeding === true || after.applyingGeneration != null || after.receivingGeneration != null || after.appliedGeneration !== r.appliedGeneration || after.from !== r.from || Object.values(after.files)[0] !== path) continue
          replicaChecks++
          const hash = sha256(bytes)
          await st.refresh()
          // A fuzzy generation (blocks read while the writer wrote: the source sends it, marked, and
          // failover never finalizes at one) is a mix of states; each of its pages is still one
          // the file held. A consistent generation is exactly one state.
          const fuzzy = (r.appliedConsistentGeneration ?? 0) < r.appliedGeneration
          if (fuzzy) {
            fuzzyChecks++
            const bad = st.unknownPages(bytes)
            if (bad.length > 0) {
              torn++
              const saved = join(cl.dir, `torn-${v.name}-${h}-${Date.now()}.bin`)
              await writeFile(saved, bytes)
              violate(`${h}'s replica of ${v.name} (from ${r.from}, fuzzy generation ${r.appliedGeneration}) holds ${bad.length} page(s) no writer ever wrote, first at ${bad[0]} (saved ${saved})`)
            }
            continue
          }
          if (!st.has(hash)) {
            torn++
            const saved = join(cl.dir, `torn-${v.name}-${h}-${Date.now()}.bin`)
            await writeFile(saved, bytes)
            violate(`${h}'s replica of ${v.name} (from ${r.from}, consistent generation ${r.appliedGeneration}) is no state its writer ever logged (saved ${saved})`)
            continue
          }
          const snap = join(cl.dir, 'vms', `snapshot-${v.name}.vhd`)
          await writeFile(snap, st.rebuild(hash))
          qemuCompares++
          if (!await qemuImgCompare(snap, 'vpc', path, 'vpc')) {
            // the file changed under us after the hash: only a fault if it is still at rest on the same generation
            const again = (await status(h))?.vms.find(x => x.name === v.name)?.replica
            if (again?.appliedGeneration === r.appliedGeneration && again.applyingGeneration == null) {
              torn++
              violate(`${h}'s replica of ${v.name}: qemu-img compare differs from the rebuilt state ${hash.slice(0, 12)} at generation ${r.appliedGeneration}`)
            }
          }
        }
      }
      for (const st of states.values()) {
        await st.refresh()
        for (const s of st.starts.splice(0)) {
          if (!st.has(s.hash)) { tornStarts++; violate(`${st.vm} started on ${s.node} (epoch ${s.epoch}) from a disk that is no logged state`) }
        }
      }
    }

    const checkOverlaps = async (): Promise<void> => {
      const list: Instance[] = await instances(cl.dir)
      for (const [a, b] of overlaps(list)) {
        const key = `${a.vm}/${a.node}/${a.from}/${b.node}/${b.from}`
        if (seenOverlaps.has(key)) continue
        seenOverlaps.add(key)
        doubleStarts++
        violate(`two instances of ${a.vm}: ${a.node} epoch ${a.epoch} [${a.from}, ${a.to}] and ${b.node} epoch ${b.epoch} [${b.from}, ${b.to}]`)
      }
    }

    const sampleRss = async (): Promise<void> => {
      for (const w of watches) {
        if (!cl.isRunning(w.node) || cl.node(w.node).proc?.pid !== w.pid) continue
        const text = await readFile(`/proc/${w.pid}/status`, 'utf8').catch(() => '')
        const m = /VmRSS:\s+(\d+)/.exec(text)
        if (m === null) continue
        // where the memory is, for the evidence when RSS grows: V8's heap (committed) and the
        // memory outside it that V8 knows of (ArrayBuffers, external strings)
        const metrics = await cl.node(w.node).client.text('/metrics').catch(() => '')
        const gauge = (name: string): number | undefined => {
          const g = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+(?:\\.\\d+)?(?:e\\+\\d+)?)$`, 'm').exec(metrics)
          return g !== null ? Math.round(Number(g[1]) / 1024) : undefined
        }
        const heapKib = gauge('nodejs_heap_size_total_bytes')
        const extKib = gauge('nodejs_external_memory_bytes')
        // and LevelDB's memtables and block caches (native, bounded by their configured sizes)
        const levels = [...metrics.matchAll(/^vmesh_leveldb_memory_bytes\{[^}]*\} (\d+(?:\.\d+)?(?:e\+\d+)?)$/gm)].map(x => Number(x[1]))
        const levelKib = levels.length > 0 ? Math.round(levels.reduce((a, b) => a + b, 0) / 1024) : undefined
        const mallocPeakKib = gauge('vmesh_v8_malloced_bytes\\{[^}]*at="peak"[^}]*\\}')
        w.rss.push({ age: Date.now() - w.startedAt, kib: Number(m[1]), ...(heapKib !== undefined ? { heapKib } : {}), ...(extKib !== undefined ? { extKib } : {}), ...(levelKib !== undefined ? { levelKib } : {}), ...(mallocPeakKib !== undefined ? { mallocPeakKib } : {}) })
      }
    }

    // ---- warm-up: everything running and in sync before the first fault ----
    await cl.waitFor('every VM running', async () => (await notRunning()).length === 0, 120_000, 250)
    await cl.waitFor('every replica in sync', async () => (await behind(new Map())).length === 0, 180_000, 500)
    await checkReplicas()
    log(`warm: every VM runs, every replica in sync (${((Date.now() - t0) / 1000).toFixed(1)} s after start)`)
    t0 = Date.now()

    // ---- the checker, continuously ----
    let checking = true
    const checker = (async () => {
      let i = 0
      while (checking) {
        try {
          await checkOverlaps()
          if (i % 5 === 0) await sampleRss()
          if (i % 8 === 0) await checkReplicas()
        } catch (err) { log(`checker: ${(err as Error).message}`) }
        i++
        await sleep(1000)
      }
    })()

    // ---- the nemesis ----
    const hostIndex = (name: string): number => NODES.indexOf(name as typeof NODES[number]) + 1
    const pick = <T>(xs: readonly T[]): T => xs[rng.int(xs.length)] as T
    const between = (lo: number, hi: number): number => lo + rng.int(hi - lo + 1)
    const lease = 5000
    let n = 0
    let round: FaultKind[] = []
    for (;;) {
      const started = Date.now()
      if (started - t0 > opts.durationMs - 15_000) break
      // every kind once per round, in a seeded order: a short run still meets most of them
      if (round.length === 0) round = shuffle([...kinds], rng)
      const kind = round.shift() as FaultKind
      const target = kind === 'partition-one' || kind === 'clock-jump' ? pick(NODES) : pick(HOSTS)
      const a: SoakAction = { n: ++n, kind, target, atMs: started - t0, holdMs: 0 }
      const gap = between(10_000, 30_000)
      actions.push(a)
      try {
        switch (kind) {
          case 'kill-host': {
            a.holdMs = between(3000, 12_000)
            const running = []
            for (const v of VMS) if (await pidAlive(v.name, target)) running.push(v.name)
            expectExit(target)
            down.add(target)
            if (bed !== undefined) bed.kill(hostIndex(target))
            else { await cl.kill(target); killWatchdogs(cl.node(target).dir) }
            await cl.kill(target)
            for (const vm of running) await crashVm(cl.dir, target, vm)
            a.detail = `VMs lost with it: ${running.join(' ') || 'none'}`
            await sleep(a.holdMs)
            down.delete(target)
            await startNode(target)
            break
          }
          case 'sigstop': {
            a.holdMs = between(lease + 2000, lease + 7000)
            frozen.add(target)
            await cl.signal(target, 'SIGSTOP')
            await sleep(a.holdMs)
            await cl.signal(target, 'SIGCONT')
            frozen.delete(target)
            break
          }
          case 'partition-one': {
            a.holdMs = between(5000, 15_000)
            bed?.isolate(hostIndex(target))
            await sleep(a.holdMs)
            bed?.heal()
            break
          }
          case 'partition-split': {
            const others = NODES.filter(x => x !== target)
            const mate = pick(others)
            const sideA = [target, mate]
            const sideB = NODES.filter(x => !sideA.includes(x))
            a.target = `${sideA.join('+')} | ${sideB.join('+')}`
            a.holdMs = between(5000, 15_000)
            for (const x of sideA) for (const y of sideB) bed?.cut(hostIndex(x), hostIndex(y))
            await sleep(a.holdMs)
            bed?.heal()
            break
          }
          case 'disk-full': {
            a.holdMs = between(5000, 15_000)
            const dir = join(cl.node(target).dir, 'data', 'replicas')
            const filled = await fillVolume(dir)
            a.detail = `filled ${filled.bytes} bytes, ${filled.left} left`
            if (filled.left > 1024 * 1024) violate(`disk-full on ${target}: ${filled.left} bytes still free after filling`)
            await sleep(a.holdMs)
            await rm(join(dir, 'soak-filler'), { force: true })
            break
          }
          case 'restart': {
            expectExit(target)
            down.add(target)
            const t = setTimeout(() => cl.node(target).proc?.kill('SIGKILL'), 15_000)
            await cl.signal(target, 'SIGTERM')
            clearTimeout(t)
            down.delete(target)
            await startNode(target)
            break
          }
          case 'clock-jump': {
            const sign = rng.int(2) === 0 ? '+' : '-'
            a.detail = `${sign}1 h`
            a.holdMs = between(5000, 15_000)
            await writeFile(faketime(target), `${sign}3600s\n`)
            await sleep(a.holdMs)
            await writeFile(faketime(target), '+0\n')
            break
          }
        }
      } catch (err) {
        a.error = (err as Error).message
        violate(`action ${a.n} ${kind} ${a.target} failed: ${a.error}`)
      }
      const healed = Date.now()
      a.healedAtMs = healed - t0
      // every VM runs somewhere
      const tr = await waitUntil(async () => (await notRunning()).length === 0, 60_000, 200)
      if (tr === undefined) violate(`after ${kind} ${a.target}: ${(await notRunning()).join(' ')} not running 60 s after the heal`)
      else { a.timeToRunningMs = tr - healed; timesToRunning.push(a.timeToRunningMs); if (a.timeToRunningMs > runningBound) violate(`after ${kind} ${a.target}: every VM running only ${a.timeToRunningMs} ms after the heal (bound ${runningBound})`) }
      // every replica caught up with its source's generation at (or after) the heal
      const base = new Map<string, { owner: string, generation: number }>()
      let last: string[] = []
      const ts = await waitUntil(async () => { last = await behind(base); return last.length === 0 }, syncBound * 2, 500)
      if (ts === undefined) violate(`after ${kind} ${a.target}: replication not back in sync ${syncBound * 2} ms after the heal: ${last.join('; ')}`)
      else { a.timeToInSyncMs = ts - healed; timesToSync.push(a.timeToInSyncMs); if (a.timeToInSyncMs > syncBound) violate(`after ${kind} ${a.target}: in sync only ${a.timeToInSyncMs} ms after the heal (bound ${syncBound})`) }
      log(`#${a.n} ${((a.atMs) / 1000).toFixed(1)} s ${kind} ${a.target}${a.detail !== undefined ? ` (${a.detail})` : ''} held ${a.holdMs} ms; running after ${a.timeToRunningMs ?? '—'} ms, in sync after ${a.timeToInSyncMs ?? '—'} ms`)
      const wait = started + gap - Date.now()
      if (wait > 0) await sleep(Math.min(wait, Math.max(0, opts.durationMs - (Date.now() - t0))))
      if (Date.now() - t0 >= opts.durationMs) break
    }
    const rest = opts.durationMs - (Date.now() - t0)
    if (rest > 0) await sleep(rest)
    checking = false
    await checker
    // the last word: overlaps, replicas at rest, RSS
    await checkOverlaps()
    await sampleRss()
    await checkReplicas()

    const rss = rssGrowth(watches, warmupMs)
    const rssMax = rss.length > 0 ? Math.max(...rss.map(r => r.growthPct)) : null
    if (rssMax !== null && rssMax > 10) violate(`RSS grew ${rssMax.toFixed(1)} % after warm-up: ${JSON.stringify(rss.filter(r => r.growthPct > 10))}`)
    let writerStates = 0
    for (const st of states.values()) { await st.refresh(); writerStates += st.size }
    const vmStarts = (await instances(cl.dir)).length
    return {
      seed: opts.seed,
      durationMs: Date.now() - t0,
      mode: bed !== undefined ? 'netns' : 'loopback',
      unavailable,
      bounds: { runningMs: runningBound, inSyncMs: syncBound, rssGrowthPct: 10 },
      actions,
      figures: {
        actions: actions.length,
        doubleStarts,
        tornReplicas: torn,
        replicaChecks,
        fuzzyChecks,
        qemuCompares,
        tornStarts,
        unexpectedExits: violations.filter(v => v.includes('exited by itself')).length,
        maxTimeToRunningMs: timesToRunning.length > 0 ? Math.max(...timesToRunning) : null,
        maxTimeToInSyncMs: timesToSync.length > 0 ? Math.max(...timesToSync) : null,
        rssGrowthPct: rssMax,
        vmStarts,
        writerStates
      },
      rss,
      violations,
      ...(violations.length > 0 || opts.keep === true ? { clusterDir: cl.dir } : {})
    }
  } catch (err) {
    violate(`soak aborted: ${(err as Error).stack ?? String(err)}`)
    throw err
  } finally {
    stopped = true
    const keep = violations.length > 0 || opts.keep === true
    if (c !== undefined) {
      for (const n of frozen) await c.signal(n, 'SIGCONT').catch(() => {})
      await killAllVms(c.dir)
      await c.destroy({ keep: true }).catch(() => {})
      await killAllVms(c.dir)
      if (keep) {
        for (const m of mounts) await cp(m, `${m}.kept`, { recursive: true }).catch(() => {})
        log(`kept the soak's cluster folder: ${c.dir}`)
      }
    }
    for (const m of mounts) spawnSync('umount', ['-l', m], { timeout: 20_000 })
    bed?.down()
    if (c !== undefined && !keep) await rm(c.dir, { recursive: true, force: true }).catch(() => {})
  }
}

/**
 * Fills the volume of `dir` (a tmpfs here) with `soak-filler`: fallocate all but 8 MiB (tmpfs
 * refuses a fallocate of exactly the free space), then appends 64 KiB, then 4 KiB, until ENOSPC.
 */
async function fillVolume (dir: string): Promise<{ bytes: number, left: number }> {
  const filler = join(dir, 'soak-filler')
  const before = await statfs(dir)
  const free = before.bavail * before.bsize
  if (free > 8 * 1024 * 1024) spawnSync('fallocate', ['-l', String(free - 8 * 1024 * 1024), filler], { timeout: 20_000 })
  const fh = await open(filler, 'a')
  try {
    for (const chunk of [65536, 4096]) {
      const buf = Buffer.alloc(chunk)
      for (let i = 0; i < 4096; i++) {
        try { await fh.write(buf) } catch { break }
      }
    }
  } finally { await fh.close() }
  const after = await statfs(dir)
  const left = after.bavail * after.bsize
  return { bytes: free - left, left }
}

/** Polls until `ok` holds; resolves with the time it first held, or undefined after `timeoutMs`. */
async function waitUntil (ok: () => Promise<boolean>, timeoutMs: number, pollMs: number): Promise<number | undefined> {
  const end = Date.now() + timeoutMs
  for (;;) {
    try { if (await ok()) return Date.now() } catch {}
    if (Date.now() > end) return undefined
    await sleep(pollMs)
  }
}

/** Loopback host crash: the daemon's watchdog (a detached process naming the node's folder) dies too. */
function killWatchdogs (nodeDir: string): void {
  const r = spawnSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8', timeout: 10_000 })
  for (const line of (r.stdout ?? '').split('\n')) {
    const m = /^\s*(\d+)\s+(.*)$/.exec(line)
    if (m !== null && (m[2] ?? '').includes('watchdog') && (m[2] ?? '').includes(nodeDir)) { try { process.kill(Number(m[1]), 'SIGKILL') } catch {} }
  }
}

/**
 * Per daemon process that lived past warm-up and 30 s more: the median RSS over the first 20 s
 * after warm-up against the median of its last three samples.
 */
function rssGrowth (watches: DaemonWatch[], warmupMs: number): SoakResult['rss'] {
  const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] ?? NaN }
  const out: SoakResult['rss'] = []
  for (const w of watches) {
    const last = w.rss[w.rss.length - 1]
    if (last === undefined || last.age < warmupMs + 30_000) continue
    const base = w.rss.filter(s => s.age >= warmupMs && s.age < warmupMs + 20_000).map(s => s.kib)
    const end = w.rss.slice(-3).map(s => s.kib)
    if (base.length === 0) continue
    const b = median(base); const e = median(end)
    out.push({ node: w.node, pid: w.pid, livedMs: last.age, baselineKiB: b, endKiB: e, growthPct: Math.round((e / b - 1) * 1000) / 10, samples: w.rss.map(s => [Math.round(s.age / 1000), Math.round(s.kib / 1024), s.heapKib !== undefined ? Math.round(s.heapKib / 1024) : -1, s.extKib !== undefined ? Math.round(s.extKib / 1024) : -1, s.levelKib !== undefined ? Math.round(s.levelKib / 1024) : -1, s.mallocPeakKib !== undefined ? Math.round(s.mallocPeakKib / 1024) : -1]) })
  }
  return out
}
