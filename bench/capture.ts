/**
 * Change-capture benchmark (`npm run bench -- capture [--size-gib N] [--seconds S] [--rate W]
 * [--budget RATE] [--bitmap-block-size SIZE] [--only bitmap|scan] [--keep]`): one big allocated disk held open by QEMU
 * (`-drive ...,cache=none`, no guest: `-machine none`), a writer changing W random 4 KiB blocks
 * per second through QEMU (HMP `qemu-io` on its own QMP socket, so the daemon's QMP calls do
 * not queue behind it), two real daemons — first with the QEMU dirty-bitmap source, then,
 * in the same run on the same disk, with the hash scan under `scan.budget`.
 *
 * Per phase (the S-second write window, after the first sync):
 *  - bytes read from storage per changed byte: `read_bytes` of /proc/<pid>/io (what reached the
 *    block device: page-cache hits are not counted) of the source daemon and of QEMU (whose NBD
 *    server answers the bitmap map); `rchar` beside it (every byte read, cache included). The
 *    disk's pages are dropped from the cache (posix_fadvise DONTNEED) before each phase.
 *  - source daemon CPU in % of one core: utime+stime (+ waited-for children, none since the
 *    dirty map is read in-process) over the window.
 * The bitmap phase's VM has `blockSize` --bitmap-block-size (default 4KiB: the configuration
 * that lets a 4 KiB write cost a 4 KiB read; 64KiB reproduces the first measurement); the
 * hash-scan phase keeps the default 64 KiB blocks.
 *  - lag per write, write → on the target: from the writer's timestamp (QEMU acknowledged
 *    the write) until the bench sees the write's bytes in the target's replica file (polled
 *    every 50 ms; the target acknowledges a generation when it is durable, a moment before
 *    its in-place write, so this is an upper bound of write → durable).
 *  - the RPO status shows (`targets[].rpoMs`, polled every 250 ms) against the true one from the
 *    writer's timestamps: at time T, T − the oldest write not yet on the target (0 if none).
 *  - generations in the window and how many of them are recovery points on the target (a
 *    consistent generation is one): the bitmap phase fleeces (the disk is raw: its file keeps
 *    its size) — copied points, a fleecing job for the chain's first point — so every generation
 *    should be one; the hash scan's, of a disk written all along, are fuzzy. `capture.points`
 *    (status) says how the points were taken.
 *  - guest pause per generation: the daemon never pauses the guest (fleecing is copy-before-
 *    write); the cost of a point (QemuPointCapture) is measured separately on the same disk
 *    first: how long its QMP transaction (a drained section: guest I/O waits, the vCPUs run)
 *    takes.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, open, statfs } from 'node:fs/promises'
import { availableParallelism, loadavg } from 'node:os'
import { join } from 'node:path'
import { systemClock } from '../common/clock.ts'
import { LocalCluster } from '../daemon/cluster/local-cluster.ts'
import { QemuPointCapture } from '../daemon/hypervisor/qemu-fleece.ts'
import { qmpCommand, type QmpReply } from '../daemon/hypervisor/qmp.ts'
import type { StatusDocument } from '../daemon/status.ts'
import type { ReplicaPoints } from '../daemon/replication/types.ts'

const GiB = 1024 ** 3
const BLOCK = 4096
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const round = (x: number, d = 2): number => Math.round(x * 10 ** d) / 10 ** d

interface Args { sizeGiB: number, seconds: number, rate: number, budget: string, bitmapBlockSize: string, only: 'bitmap' | 'scan' | null, keep: boolean }

function parseArgs (argv: string[]): Args {
  const a: Args = { sizeGiB: 64, seconds: 60, rate: 10, budget: '200MB/s', bitmapBlockSize: '4KiB', only: null, keep: false }
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]
    const v = argv[i + 1]
    if (k === '--size-gib') { a.sizeGiB = Number(v); i++ } else if (k === '--seconds') { a.seconds = Number(v); i++ } else if (k === '--rate') { a.rate = Number(v); i++ } else if (k === '--budget') { a.budget = String(v); i++ } else if (k === '--bitmap-block-size') { a.bitmapBlockSize = String(v); i++ } else if (k === '--only') { a.only = v === 'scan' ? 'scan' : 'bitmap'; i++ } else if (k === '--keep') a.keep = true
    else throw new Error(`unknown argument ${k}`)
  }
  if (!(a.sizeGiB > 0) || !(a.seconds > 0) || !(a.rate > 0)) throw new Error('bad --size-gib/--seconds/--rate')
  return a
}

function pct (xs: number[], p: number): number | null {
  if (xs.length === 0) return null
  const s = [...xs].sort((x, y) => x - y)
  return s[Math.min(s.length - 1, Math.ceil(p / 100 * s.length) - 1)] as number
}

function procIo (pid: number): { readBytes: number, rchar: number } {
  const t = readFileSync(`/proc/${pid}/io`, 'utf8')
  const get = (k: string): number => Number(new RegExp(`^${k}: (\\d+)`, 'm').exec(t)?.[1] ?? NaN)
  return { readBytes: get('read_bytes'), rchar: get('rchar') }
}

/** CPU seconds of a process: own + waited-for children (fields 14-17 of /proc/pid/stat). */
function procCpu (pid: number): number {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
  const ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])
  return ticks / 100
}

interface Write { offset: number, pattern: number, at: number, seen: number | null }

export async function run (argv: string[]): Promise<object> {
  const args = parseArgs(argv)
  for (const tool of ['qemu-system-x86_64', 'qemu-img']) {
    if (spawnSync(tool, ['--version'], { stdio: 'ignore' }).status !== 0) throw new Error(`${tool} is required`)
  }
  const c = await LocalCluster.create({ nodes: [{ name: 'hv-a' }, { name: 'hv-b' }], logLevel: 'info', keep: args.keep })
  const notes: string[] = []
  const fs = await statfs(c.dir)
  const freeGiB = fs.bavail * fs.bsize / GiB
  let sizeGiB = args.sizeGiB
  // the source is allocated; the replica holds only non-zero blocks (a zero-filled disk seeds as zeros)
  if (sizeGiB > freeGiB - 16) {
    const fit = Math.max(1, Math.floor(freeGiB - 16))
    notes.push(`asked for ${sizeGiB} GiB but ${round(freeGiB, 1)} GiB are free on ${c.dir} (shared with other work): used ${fit} GiB`)
    sizeGiB = fit
  }
  const vmDir = join(c.dir, 'vms')
  await mkdir(vmDir)
  const disk = join(vmDir, 'disk.raw')
  const out: Record<string, unknown> = {
    machine: { cores: availableParallelism(), loadAverageAtStart: loadavg().map(x => round(x, 1)), freeGiB: round(freeGiB, 1) },
    args: { ...args, sizeGiB }
  }
  let qemu: ChildProcess | undefined
  try {
    process.stderr.write(`bench capture: ${c.dir}; writing a ${sizeGiB} GiB allocated disk…\n`)
    // Written, not fallocated: unwritten extents read as zeros without touching the disk.
    const dd = spawnSync('dd', ['if=/dev/zero', `of=${disk}`, 'bs=16M', `count=${sizeGiB * 64}`, 'oflag=direct', 'status=none'])
    if (dd.status !== 0) throw new Error(`dd: ${String(dd.stderr)}`)
    const qmpSock = join(vmDir, 'vm.qmp')
    const writerSock = join(vmDir, 'writer.qmp')
    qemu = spawn('qemu-system-x86_64', ['-machine', 'none', '-nodefaults', '-display', 'none',
      '-drive', `file=${disk},format=raw,if=none,id=d0,cache=none,aio=threads`,
      '-qmp', `unix:${qmpSock},server=on,wait=off`, '-qmp', `unix:${writerSock},server=on,wait=off`], { stdio: ['ignore', 'ignore', 'inherit'] })
    for (let i = 0; !existsSync(writerSock) || !existsSync(qmpSock); i++) { if (i > 400 || qemu.exitCode !== null) throw new Error('qemu did not start'); await sleep(50) }
    const writerQmp = async (command: string, a?: Record<string, unknown>): Promise<QmpReply> => await qmpCommand(writerSock, command, a, { clock: systemClock, timeoutMs: 20_000 })
    const qemuPid = qemu.pid as number

    // Fleecing first, before any daemon has run the VM (a stopped daemon's fencing watchdog may
    // kill the QEMU holding the VM's disk once its lease runs out).
    // The cost per point on the same disk, without the daemon's other work around it.
    if (args.only !== 'scan') {
      process.stderr.write('fleecing points…\n')
      const qmp = async (command: string, a?: Record<string, unknown>): Promise<QmpReply> => {
        const t = Date.now()
        const r = await qmpCommand(qmpSock, command, a, { clock: systemClock, timeoutMs: 20_000 })
        if (command === 'transaction') txMs.push(Date.now() - t)
        return r
      }
      const txMs: number[] = []
      const pauses: number[] = []
      const points = new QemuPointCapture({ clock: systemClock, qmp }, { file: disk, nbdSocket: join(vmDir, 'nbd.sock'), scratchDir: vmDir })
      const q0 = procIo(qemuPid)
      let changed = 0
      let read = 0
      const stopAt = Date.now() + 20_000
      const w = (async () => {
        for (let i = 0; Date.now() < stopAt; i++) {
          await writerQmp('human-monitor-command', { 'command-line': `qemu-io d0 "write -P 0x5a ${((i * 7919) % 100000) * BLOCK} ${BLOCK}"` })
          changed += BLOCK
          await sleep(100)
        }
      })()
      let first = true
      while (Date.now() < stopAt) {
        const p = await points.capture()
        if (!first) {
          for (const r of p.virtualRanges) { const b = await p.read(r.offset, r.length); read += b.length }
        }
        await p.release(true)
        pauses.push(p.pauseMs)
        first = false
        await sleep(1000)
      }
      await w
      await points.stop()
      const q1 = procIo(qemuPid)
      out.fleecing = {
        points: pauses.length,
        mode: points.nextMode,
        guestPauseMs: { p50: pct(pauses, 50), p99: pct(pauses, 99) },
        transactionMs: { p50: pct(txMs, 50), p99: pct(txMs, 99), max: pct(txMs, 100) },
        bytesReadThroughPoints: read,
        qemuReadBytes: q1.readBytes - q0.readBytes,
        changedBytes: changed
      }
    }
    const phases: Record<string, unknown> = {}
    for (const mode of ['bitmap', 'scan'] as const) {
      if (args.only !== null && args.only !== mode) continue
      process.stderr.write(`phase ${mode}: first sync…\n`)
      await stopDaemons(c)
      const name = `big-${mode}`
      const vm: Record<string, unknown> = { name, disks: [disk], replicateTo: ['hv-b'], scanInterval: 1000, quietBudget: 1000 }
      if (mode === 'bitmap') { vm.changeSource = 'qemu-bitmap'; vm.qmp = qmpSock; vm.blockSize = args.bitmapBlockSize } else vm.changeSource = 'scan'
      await c.writeConfig('hv-a', { vms: [vm], scan: { budget: args.budget } })
      await c.writeConfig('hv-b', { scan: { budget: args.budget } })
      spawnSync('dd', [`if=${disk}`, 'iflag=nocache', 'count=0', 'status=none'])
      const tSync = Date.now()
      await c.startAll()
      const synced = await waitAcked(c, name, 0, 3_600_000)
      const firstSyncSeconds = (Date.now() - tSync) / 1000
      const st = await c.status('hv-b')
      const replica = st.vms.find(v => v.name === name)?.replica?.files[disk]
      if (replica === undefined) throw new Error('no replica path in the target\'s status')
      await c.waitReplicaApplied('hv-b', name, synced)
      const daemonPid = c.node('hv-a').proc?.pid as number
      const targetPid = c.node('hv-b').proc?.pid as number
      // the first sync's reads are not the phase's: drop the cache again, then measure
      spawnSync('dd', [`if=${disk}`, 'iflag=nocache', 'count=0', 'status=none'])
      await sleep(2000)

      const writes: Write[] = []
      const statusSamples: Array<{ at: number, rpoMs: number | null, lagMs: number | null, generation: number, acked: number }> = []
      const io0 = procIo(daemonPid)
      const q0 = procIo(qemuPid)
      const cpu0 = procCpu(daemonPid)
      const tcpu0 = procCpu(targetPid)
      const t0 = Date.now()
      const end = t0 + args.seconds * 1000
      let seed = 0x9e3779b9 ^ (mode === 'bitmap' ? 1 : 2)
      const blocks = Math.floor(sizeGiB * GiB / BLOCK)
      const used = new Set<number>()
      const writer = (async () => {
        for (let i = 0; ; i++) {
          const due = t0 + i * 1000 / args.rate
          if (due >= end) break
          if (due > Date.now()) await sleep(due - Date.now())
          let b: number
          do { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; b = (seed * 2654435761 >>> 0) % blocks } while (used.has(b))
          used.add(b)
          const pattern = (i % 255) + 1
          const r = await writerQmp('human-monitor-command', { 'command-line': `qemu-io d0 "write -P 0x${pattern.toString(16)} ${b * BLOCK} ${BLOCK}"` })
          if (r.error !== undefined || /error|fail/i.test(String(r.return))) throw new Error(`write failed: ${JSON.stringify(r)}`)
          writes.push({ offset: b * BLOCK, pattern, at: Date.now(), seen: null })
        }
      })()
      let writing = true
      void writer.finally(() => { writing = false })
      const watcher = (async () => {
        const buf = Buffer.alloc(1)
        while (writing || writes.some(w => w.seen === null)) {
          if (Date.now() > end + 600_000) break
          const fh = await open(replica, 'r')
          try {
            for (const w of writes) {
              if (w.seen !== null) continue
              await fh.read(buf, 0, 1, w.offset)
              if (buf[0] === w.pattern) w.seen = Date.now()
            }
          } finally { await fh.close() }
          await sleep(50)
        }
      })()
      const ioRates: number[] = []
      // bytes per second over each sample's real length: a sample is ≥ 1 s (a timer that fires
      // late), and the bytes of a 1.3 s sample are not a second's
      const ioSampler = (async () => {
        let last = procIo(daemonPid).readBytes
        let lastAt = performance.now()
        while (writing) {
          await sleep(1000)
          const now = procIo(daemonPid).readBytes
          const at = performance.now()
          ioRates.push(Math.round((now - last) / ((at - lastAt) / 1000)))
          last = now
          lastAt = at
        }
      })()
      const poller = (async () => {
        while (writing || writes.some(w => w.seen === null)) {
          if (Date.now() > end + 600_000) break
          const s: StatusDocument = await c.status('hv-a')
          const v = s.vms.find(x => x.name === name)
          const t = v?.targets[0]
          if (v !== undefined && t !== undefined) statusSamples.push({ at: Date.now(), rpoMs: t.rpoMs ?? null, lagMs: t.lagMs, generation: v.generation, acked: t.ackedGeneration })
          await sleep(250)
        }
      })()
      await writer
      const tEnd = Date.now()
      const io1 = procIo(daemonPid)
      const q1 = procIo(qemuPid)
      const cpu1 = procCpu(daemonPid)
      const tcpu1 = procCpu(targetPid)
      await Promise.all([watcher, poller, ioSampler])
      const changed = writes.length * BLOCK
      const windowS = (tEnd - t0) / 1000
      const lags = writes.filter(w => w.seen !== null).map(w => (w.seen as number) - w.at)
      // the true RPO at each status sample, from the writer's timestamps
      const rpo = statusSamples.filter(s => s.at <= tEnd).map(s => {
        const pending = writes.filter(w => w.at <= s.at && (w.seen === null || w.seen > s.at))
        const truth = pending.length === 0 ? 0 : s.at - Math.min(...pending.map(w => w.at))
        return { reported: s.rpoMs, truth }
      })
      const reported = rpo.filter(r => r.reported !== null) as Array<{ reported: number, truth: number }>
      const finalStatus = await c.status('hv-a')
      const cap = finalStatus.vms.find(v => v.name === name)?.capture
      // the window's generations that are recovery points on the target (consistent ones)
      const g0 = statusSamples[0]?.generation ?? 0
      const g1 = statusSamples.at(-1)?.generation ?? 0
      const pts = (await c.node('hv-b').client.call<ReplicaPoints>('GET', `/v1/replication/points?vm=${name}`, undefined, { timeoutMs: 10_000 })).replicas[0]?.points ?? []
      const consistentGenerations = pts.filter(p => p.generation > g0 && p.generation <= g1).length
      phases[mode] = {
        blockSize: mode === 'bitmap' ? args.bitmapBlockSize : 'default (64KiB)',
        loadAverage1m: round(loadavg()[0] as number, 1),
        firstSyncSeconds: round(firstSyncSeconds, 1),
        windowSeconds: round(windowS, 1),
        writes: writes.length,
        changedBytes: changed,
        daemonReadBytes: io1.readBytes - io0.readBytes,
        daemonRchar: io1.rchar - io0.rchar,
        qemuReadBytes: q1.readBytes - q0.readBytes,
        daemonReadBytesPerSec: { mean: Math.round((io1.readBytes - io0.readBytes) / windowS), max1s: Math.max(0, ...ioRates) },
        readPerChangedByte: round((io1.readBytes - io0.readBytes + q1.readBytes - q0.readBytes) / changed, 2),
        rcharPerChangedByte: round((io1.rchar - io0.rchar) / changed, 2),
        daemonCpuPercentOfOneCore: round((cpu1 - cpu0) / windowS * 100, 1),
        targetCpuPercentOfOneCore: round((tcpu1 - tcpu0) / windowS * 100, 1),
        lagMs: { p50: pct(lags, 50), p99: pct(lags, 99), max: pct(lags, 100), notSeen: writes.length - lags.length },
        generations: g1 - g0,
        consistentGenerations,
        rpo: {
          samples: rpo.length,
          reportedMs: { p50: pct(reported.map(r => r.reported), 50), p99: pct(reported.map(r => r.reported), 99), max: pct(reported.map(r => r.reported), 100) },
          trueMs: { p50: pct(rpo.map(r => r.truth), 50), p99: pct(rpo.map(r => r.truth), 99), max: pct(rpo.map(r => r.truth), 100) },
          reportedMinusTrueMs: { p50: pct(reported.map(r => r.reported - r.truth), 50), min: pct(reported.map(r => r.reported - r.truth), 0.0001) },
          underReported: reported.filter(r => r.reported < r.truth).length,
          nullSamples: rpo.length - reported.length
        },
        capture: cap ?? null,
        guestPauseMs: mode === 'bitmap' ? 0 : null
      }
      process.stderr.write(`phase ${mode}: ${JSON.stringify(phases[mode])}\n`)
      await stopDaemons(c)
    }

    out.phases = phases
  } finally {
    if (qemu !== undefined && qemu.exitCode === null) qemu.kill('SIGKILL')
    await c.destroy({ keep: args.keep })
  }
  out.notes = notes
  return out
}

/** Waits until the source's target acknowledged a generation after `after`, all caught up. */
async function waitAcked (c: LocalCluster, name: string, after: number, timeoutMs: number): Promise<number> {
  return await c.waitFor(`${name} in sync`, async () => {
    const s = await c.status('hv-a')
    const v = s.vms.find(x => x.name === name)
    const t = v?.targets[0]
    return v !== undefined && t !== undefined && t.state === 'in-sync' && t.ackedGeneration === v.generation && v.generation > after ? v.generation : undefined
  }, timeoutMs, 500)
}

/** SIGTERM both daemons (a clean stop: the next phase starts from their saved state). */
async function stopDaemons (c: LocalCluster): Promise<void> {
  for (const n of ['hv-a', 'hv-b']) if (c.isRunning(n)) await c.signal(n, 'SIGTERM')
}
