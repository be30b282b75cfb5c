/**
 * WAN benchmark (issue #15): two daemons in network namespaces joined by an emulated WAN link
 * (tbf rate cap; 25 ms each way and loss through NFQUEUE + nfq-delay, test/helpers/wan-link.ts),
 * each case with raw TCP over the same link in the same run:
 *   seed-10mbit          incompressible seed, no `limit` (probe RTT measured during it: the
 *                        sender's in-stream probes, and a TCP echo on its own connection)
 *   seed-10mbit-limit    the same with `limit: 9Mbit`
 *   seed-10mbit-text     compressible (text-like) data
 *   seed-100mbit         incompressible at 100 Mbit/s
 *   incr-64k / incr-4k   2 MiB of 64 KiB-aligned writes / 2 MiB of scattered 4 KiB writes after
 *                        the 10 Mbit/s seed: time from the writes until in sync, and wire bytes
 *   seed-10mbit-loss1    incompressible seed with 1 % loss each way
 *   seed-10mbit-cuts     the link cut every 20 s for 5 s during the seed: completes? bytes resent
 *   clone-10mbit         content index (`contentIndex.enabled` on both ends): VM "template" seeded
 *                        at 10 Mbit/s, then VM "clone" (a copy of it plus 4 MiB of its own writes
 *                        at 4 places) added by a reload: the clone's seed time and wire bytes,
 *                        against its allocated size (goal ≤ 10 %) and raw TCP for the 4 MiB
 * Counts in every case: false suspicions (member suspect / dead, refuted suspicions) and
 * replication sessions opened (1 = no restart). Needs root (skips otherwise).
 * Usage: npm run bench -- wan [--mib 64] [--cases a,b,...] [--profile wan] [--keep]
 */
import '../common/polyfill.ts'
import { randomBytes } from 'node:crypto'
import { copyFile, mkdir, open, readFile, stat } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { LocalCluster } from '../daemon/cluster/local-cluster.ts'
import type { TargetStatus } from '../daemon/status.ts'
import { Netbed } from '../test/helpers/netbed.ts'
import { WanLink, nfqDelayBinary, rawTcpSeconds, startEchoProbe } from '../test/helpers/wan-link.ts'
import { vmsSection, randomFixedVhd, randomWrite, targetOf, vmOf, logOf, replicaOf, replicaPath, sameBytes } from '../test/integration/replication/helpers.ts'
import { qemuImgCreate } from '../test/helpers/qemu.ts'

const MiB = 1024 * 1024
const ALL = ['seed-10mbit', 'seed-10mbit-limit', 'seed-10mbit-text', 'seed-100mbit', 'incr-64k', 'incr-4k', 'seed-10mbit-loss1', 'seed-10mbit-cuts', 'clone-10mbit']

interface Args { mib: number, cases: string[], profile: string, keep: boolean }

function parseArgs (argv: string[]): Args {
  const a: Args = { mib: 64, cases: ALL, profile: 'wan', keep: false }
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]
    const v = argv[i + 1]
    if (k === '--keep') { a.keep = true; continue }
    if (v === undefined) break
    if (k === '--mib') a.mib = Number(v)
    else if (k === '--cases') a.cases = v.split(',')
    else if (k === '--profile') a.profile = v
    else continue
    i++
  }
  return a
}

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const round = (x: number, d = 2): number => Math.round(x * 10 ** d) / 10 ** d
function percentile (xs: number[], p: number): number | null {
  if (xs.length === 0) return null
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p / 100 * s.length) - 1))] as number
}

/** A fixed VHD of text-like (lz4-compressible) data. */
async function textVhd (path: string, size: number): Promise<void> {
  await qemuImgCreate(path, 'vpc', size, { subformat: 'fixed', force_size: true })
  const words = Array.from({ length: 2000 }, () => randomBytes(3 + (Math.random() * 6 | 0)).toString('base64').replace(/[^a-z]/gi, '').toLowerCase())
  const fh = await open(path, 'r+')
  try {
    for (let at = 0; at < size; at += 4 * MiB) {
      const n = Math.min(4 * MiB, size - at)
      let s = ''
      while (s.length < n) s += (words[Math.random() * words.length | 0] as string) + (Math.random() < 0.1 ? '.\n' : ' ')
      await fh.write(Buffer.from(s.slice(0, n)), 0, n, at)
    }
  } finally { await fh.close() }
}

interface LogCounts { suspicions: number, dead: number, refuted: number, sessions: number, sessionEnds: number, openedAt: number | null, firstAckAt: number | null, heldByTargetBytes: number }

/**
 * What the daemons logged from the first replication session on (earlier suspicions belong to
 * the start-up of two daemons on a loaded machine, not to the link): suspicions, sessions, the
 * times of the first session and the first acknowledged generation (the seed), and the bytes
 * the target copied from its content index instead of receiving them. With `vm`, only that
 * VM's sessions and generations count (suspicions from its first session on).
 */
async function logCounts (c: LocalCluster, vm?: string): Promise<LogCounts> {
  const out: LogCounts = { suspicions: 0, dead: 0, refuted: 0, sessions: 0, sessionEnds: 0, openedAt: null, firstAckAt: null, heldByTargetBytes: 0 }
  const lines: Array<{ node: string, at: number, msg: string, vm?: string, held?: number }> = []
  for (const n of ['a', 'b']) {
    const text = await readFile(logOf(c, n), 'utf8').catch(() => '')
    for (const l of text.split('\n')) {
      try {
        const j = JSON.parse(l) as { time?: string | number, msg?: string, vm?: string, heldByTargetBytes?: number }
        lines.push({ node: n, at: typeof j.time === 'number' ? j.time : Date.parse(String(j.time)), msg: j.msg ?? '', ...(j.vm !== undefined ? { vm: j.vm } : {}), ...(j.heldByTargetBytes !== undefined ? { held: j.heldByTargetBytes } : {}) })
      } catch {}
    }
  }
  lines.sort((x, y) => x.at - y.at)
  for (const l of lines) {
    // the sender's own lines: the session and generation lines of `vm` (of every VM without it)
    const sender = l.node === 'a' && (vm === undefined || l.vm === vm)
    if (sender && l.msg === 'replication session open') { out.sessions++; out.openedAt ??= l.at }
    if (out.openedAt === null) continue
    if (sender && l.msg === 'generation acknowledged') { out.firstAckAt ??= l.at; out.heldByTargetBytes += l.held ?? 0 }
    if (l.msg === 'member suspect') out.suspicions++
    if (l.msg === 'member dead') out.dead++
    if (l.msg === 'refuted a suspicion about this node') out.refuted++
    if (sender && l.msg === 'replication session ended') out.sessionEnds++
  }
  return out
}

/** Seconds of a seed by the daemons' own log times when they logged them: status polls lag under load. */
function seedSeconds (log: LogCounts, polled: { t0: number, at: number }): number {
  return round(log.openedAt !== null && log.firstAckAt !== null ? (log.firstAckAt - log.openedAt) / 1000 : (polled.at - polled.t0) / 1000)
}

/** Waits for `vm`'s seed to `b`: from the session's first byte to the target's durable ack. */
async function waitSeed (c: LocalCluster, vm: string): Promise<{ t0: number, at: number, generation: number, pacing: TargetStatus['pacing'] }> {
  const t0 = await c.waitFor(`${vm} seed started`, async () => ((await replicaOf(c, 'b', vm))?.bytesReceived ?? 0) > 0 ? performance.now() : undefined, 120_000, 50)
  const done = await c.waitFor(`${vm} seed acked`, async () => {
    const s = await c.status('a')
    const t = targetOf(s, vm, 'b')
    const v = vmOf(s, vm)
    return t !== undefined && v !== undefined && t.state === 'in-sync' && t.ackedGeneration === v.generation && v.generation > 0 ? { at: performance.now(), generation: v.generation, pacing: t.pacing } : undefined
  }, 1_800_000, 100)
  return { t0, ...done }
}

/** `vm`: the VM's name (default vm1); `both`: config for both nodes (e.g. `contentIndex`). */
interface SeedOpts { rate: string, delayMs: number, lossPct?: number, limit?: string, text?: boolean, cuts?: { everyMs: number, forMs: number }, keepCluster?: boolean, vm?: string, both?: Record<string, unknown> }

interface SeedResult { pacing: unknown, seconds: number, wireBytes: number, rttP50Ms: number | null, rttP99Ms: number | null, echoP50Ms: number | null, echoP99Ms: number | null, cuts?: number, log: LogCounts, cluster?: LocalCluster, disk: string }

async function seedCase (args: Args, bed: Netbed, link: WanLink, o: SeedOpts): Promise<SeedResult> {
  link.rate(1, o.rate); link.rate(2, o.rate)
  link.delay(1, 2, o.delayMs, o.lossPct ?? 0)
  const ns = (i: number): { netns: { prefix: string[], ip: string } } => ({ netns: { prefix: bed.exec(i), ip: bed.ip(i) } })
  const c = await LocalCluster.create({ nodes: [{ name: 'a', ...ns(1) }, { name: 'b', ...ns(2) }], profile: args.profile as 'wan', keep: args.keep, logLevel: 'debug' })
  let keep = false
  try {
    const vmDir = join(c.dir, 'vms')
    await mkdir(vmDir)
    const vm = o.vm ?? 'vm1'
    const disk = join(vmDir, `${vm}.vhd`)
    if (o.text === true) await textVhd(disk, args.mib * MiB); else await randomFixedVhd(disk, args.mib * MiB)
    await c.writeConfig('a', { ...vmsSection([{ name: vm, disks: [disk], replicateTo: ['b'], ...(o.limit !== undefined ? { limit: o.limit } : {}) }]), ...o.both })
    if (o.both !== undefined) await c.writeConfig('b', o.both)
    await c.startAll()
    const echo = await startEchoProbe(bed, 2, 1)
    let cutting = true
    let cuts = 0
    const cutter = o.cuts === undefined
      ? Promise.resolve()
      : (async () => {
          const cu = o.cuts as { everyMs: number, forMs: number }
          // bounded by `cutting`, cleared when the seed is done
          while (cutting) {
            await sleep(cu.everyMs - cu.forMs)
            if (!cutting) break
            bed.cut(1, 2); cuts++
            await sleep(cu.forMs)
            bed.heal()
          }
        })()
    const done = await waitSeed(c, vm)
    cutting = false
    bed.heal()
    await cutter
    const rtts = echo.stop()
    const wireBytes = (await replicaOf(c, 'b', vm))?.bytesReceived ?? 0
    const log = await logCounts(c)
    const result: SeedResult = {
      seconds: seedSeconds(log, done),
      pacing: done.pacing,
      wireBytes,
      rttP50Ms: done.pacing?.rttP50Ms ?? null,
      rttP99Ms: done.pacing?.rttP99Ms ?? null,
      echoP50Ms: percentile(rtts, 50),
      echoP99Ms: percentile(rtts, 99),
      ...(o.cuts !== undefined ? { cuts } : {}),
      log,
      disk
    }
    if (o.keepCluster === true) { keep = true; result.cluster = c }
    return result
  } finally {
    if (!keep) await c.destroy()
  }
}

/** Writes, then the time until the target acked them and the wire bytes they cost. */
async function incrCase (c: LocalCluster, disk: string, writes: Array<{ offset: number, length: number }>): Promise<{ seconds: number, bytesWritten: number, wireBytes: number, wireRatio: number }> {
  const before = (await replicaOf(c, 'b', 'vm1'))?.bytesReceived ?? 0
  const gen0 = vmOf(await c.status('a'), 'vm1')?.generation ?? 0
  const t0 = performance.now()
  for (const w of writes) await randomWrite(disk, w.offset, w.length)
  const done = await c.waitFor('incremental acked', async () => {
    const s = await c.status('a')
    const t = targetOf(s, 'vm1', 'b')
    const v = vmOf(s, 'vm1')
    return t !== undefined && v !== undefined && v.generation > gen0 && t.state === 'in-sync' && t.ackedGeneration === v.generation && t.bytesPending === 0 ? performance.now() : undefined
  }, 600_000, 100)
  await sleep(500)
  const wire = ((await replicaOf(c, 'b', 'vm1'))?.bytesReceived ?? 0) - before
  const written = writes.reduce((n, w) => n + w.length, 0)
  return { seconds: round((done - t0) / 1000), bytesWritten: written, wireBytes: wire, wireRatio: round(wire / written, 3) }
}

/**
 * The content index over the WAN link: VM "template" seeded (everything travels), then VM
 * "clone" — a copy of the template's disk with 1 MiB of its own writes at 4 places, each
 * 4 KiB past a 64 KiB boundary (17 blocks changed apiece, as in the loopback test,
 * test/integration/replication/content-index.test.ts) — added to the source by a reload
 * (SIGHUP: the template's session stays up) and seeded. Its wire bytes are what the target
 * received for it, as for every case here.
 */
async function cloneCase (args: Args, bed: Netbed, link: WanLink, rawS: number): Promise<object> {
  const ci = { contentIndex: { enabled: true } }
  const r = await seedCase(args, bed, link, { rate: '10mbit', delayMs: 25, vm: 'template', both: ci, keepCluster: true })
  const c = r.cluster as LocalCluster
  try {
    const clone = join(dirname(r.disk), 'clone.vhd')
    await copyFile(r.disk, clone)
    const writes = [0, 1, 2, 3].map(i => ({ offset: (Math.floor(i * args.mib / 4) + Math.floor(args.mib / 16)) * MiB + 4096, length: MiB }))
    for (const w of writes) await randomWrite(clone, w.offset, w.length)
    await c.writeConfig('a', { ...vmsSection([{ name: 'template', disks: [r.disk], replicateTo: ['b'] }, { name: 'clone', disks: [clone], replicateTo: ['b'] }]), ...ci })
    const tReload = performance.now()
    await c.signal('a', 'SIGHUP')
    const done = await waitSeed(c, 'clone')
    await c.waitReplicaApplied('b', 'clone', done.generation)
    const wireBytes = (await replicaOf(c, 'b', 'clone'))?.bytesReceived ?? 0
    const allocated = (await stat(clone)).size
    const identical = await sameBytes(clone, await replicaPath(c, 'b', 'clone', clone))
    const written = writes.reduce((n, w) => n + w.length, 0)
    const all = await logCounts(c)
    const mine = await logCounts(c, 'clone')
    const pct = round(100 * wireBytes / allocated)
    return {
      template: { seconds: r.seconds, rawTcpSeconds: rawS, wireMB: round(r.wireBytes / 1e6) },
      seconds: seedSeconds(mine, done),
      secondsFromReload: round((done.at - tReload) / 1000),
      wireBytes,
      wireMB: round(wireBytes / 1e6),
      allocatedMB: round(allocated / 1e6),
      wireOfAllocatedPct: pct,
      heldByTargetMB: round(mine.heldByTargetBytes / 1e6),
      bytesWritten: written,
      rawTcpSecondsForWrittenBytes: round(await rawTcpSeconds(bed, 1, 2, written)),
      replicaIdentical: identical,
      sessionsOpened: { template: all.sessions - mine.sessions, clone: mine.sessions },
      falseSuspicions: all.suspicions + all.dead,
      refutedSuspicions: all.refuted,
      goal: '≤ 10 % of allocated on the wire',
      goalMet: wireBytes <= 0.1 * allocated
    }
  } finally { await c.destroy() }
}

export async function run (argv: string[]): Promise<object> {
  const args = parseArgs(argv)
  const why = Netbed.unavailable()
  if (why !== undefined) return { skipped: why }
  const nfq = nfqDelayBinary()
  if (nfq instanceof Error) return { skipped: nfq.message }
  const bed = new Netbed()
  bed.start(2)
  const link = new WanLink(bed)
  const bytes = args.mib * MiB
  const cases: Record<string, unknown> = {}
  const raw: Record<string, number> = {}
  const rawAt = async (key: string, rate: string, lossPct = 0): Promise<number> => {
    if (raw[key] === undefined) {
      link.rate(1, rate); link.rate(2, rate); link.delay(1, 2, 25, lossPct)
      raw[key] = round(await rawTcpSeconds(bed, 1, 2, bytes))
    }
    return raw[key] as number
  }
  const seedReport = (r: SeedResult, rawS: number): object => ({
    seconds: r.seconds,
    rawTcpSeconds: rawS,
    ofRawTcp: round(rawS / r.seconds, 3),
    wireMB: round(r.wireBytes / 1e6),
    effectiveMBps: round(bytes / 1e6 / r.seconds),
    sessionsOpened: r.log.sessions,
    falseSuspicions: r.log.suspicions + r.log.dead,
    refutedSuspicions: r.log.refuted,
    replicationProbeRttMs: { p50: r.rttP50Ms, p99: r.rttP99Ms },
    tcpEchoRttMs: { p50: r.echoP50Ms, p99: r.echoP99Ms },
    pacingAtEnd: r.pacing,
    ...(r.cuts !== undefined ? { cuts: r.cuts, resentMiB: round((r.wireBytes - bytes) / MiB), resentMiBPerCut: r.cuts > 0 ? round((r.wireBytes - bytes) / MiB / r.cuts) : null } : {})
  })
  const want = (k: string): boolean => args.cases.includes(k)
  try {
    if (want('seed-10mbit') || want('incr-64k') || want('incr-4k')) {
      const rawS = await rawAt('10mbit', '10mbit')
      const r = await seedCase(args, bed, link, { rate: '10mbit', delayMs: 25, keepCluster: true })
      cases['seed-10mbit'] = seedReport(r, rawS)
      const c = r.cluster as LocalCluster
      try {
        const blocks = bytes / (64 * 1024)
        if (want('incr-64k')) {
          // 2 MiB as 32 aligned 64 KiB writes spread over the disk
          const w = Array.from({ length: 32 }, (_, i) => ({ offset: Math.floor(i * blocks / 32) * 64 * 1024, length: 64 * 1024 }))
          cases['incr-64k'] = { ...await incrCase(c, r.disk, w), rawTcpSecondsFor2MiB: round(await rawTcpSeconds(bed, 1, 2, 2 * MiB)) }
        }
        if (want('incr-4k')) {
          // 2 MiB as 512 scattered 4 KiB writes, each in a different 64 KiB block
          const n = Math.min(512, blocks)
          const w = Array.from({ length: n }, (_, i) => ({ offset: Math.floor(i * blocks / n) * 64 * 1024 + ((i * 7) % 16) * 4096, length: 4096 }))
          cases['incr-4k'] = { ...await incrCase(c, r.disk, w), rawTcpSecondsForSameBytes: round(await rawTcpSeconds(bed, 1, 2, n * 4096)) }
        }
        const lc = await logCounts(c)
        cases['after-incrementals'] = { sessionsOpened: lc.sessions, falseSuspicions: lc.suspicions + lc.dead }
      } finally { await c.destroy() }
    }
    if (want('seed-10mbit-limit')) cases['seed-10mbit-limit'] = seedReport(await seedCase(args, bed, link, { rate: '10mbit', delayMs: 25, limit: '9Mbit' }), await rawAt('10mbit', '10mbit'))
    if (want('seed-10mbit-text')) cases['seed-10mbit-text'] = seedReport(await seedCase(args, bed, link, { rate: '10mbit', delayMs: 25, text: true }), await rawAt('10mbit', '10mbit'))
    if (want('seed-100mbit')) cases['seed-100mbit'] = seedReport(await seedCase(args, bed, link, { rate: '100mbit', delayMs: 25 }), await rawAt('100mbit', '100mbit'))
    if (want('seed-10mbit-loss1')) cases['seed-10mbit-loss1'] = seedReport(await seedCase(args, bed, link, { rate: '10mbit', delayMs: 25, lossPct: 1 }), await rawAt('10mbit-loss1', '10mbit', 1))
    if (want('seed-10mbit-cuts')) cases['seed-10mbit-cuts'] = seedReport(await seedCase(args, bed, link, { rate: '10mbit', delayMs: 25, cuts: { everyMs: 20_000, forMs: 5000 } }), await rawAt('10mbit', '10mbit'))
    if (want('clone-10mbit')) cases['clone-10mbit'] = await cloneCase(args, bed, link, await rawAt('10mbit', '10mbit'))
  } finally {
    link.close()
    bed.down()
  }
  return { diskMiB: args.mib, profile: args.profile, link: '25 ms each way (50 ms RTT), tbf rate cap both ways', rawTcpSeconds: raw, cases }
}
