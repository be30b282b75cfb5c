/**
 * Replication benchmark: real daemons (LocalCluster) over loopback, with baselines measured in
 * the same run on the same bytes:
 *  - initial sync of an incompressible fixed VHD (random data + footer) vs `rsync -a` over ssh on
 *    loopback (a private sshd on a free 127.0.0.1 port, temp keys) vs a bare libp2p stream
 *    (two nodes in this process, Noise + yamux, 1 MiB sends, receiver discards);
 *  - incremental sync after 1 % of the 64 KiB blocks changed (scattered) vs rsync's delta
 *    transfer of the same change (time from the last write until the replica is durable);
 *  - replica lag under a steady random writer (5 MB/s on a 1 GiB disk, ~30 s): the status lagMs
 *    p50/p99, and an end-to-end probe (a marker written into the disk, polled in the replica
 *    file on the target) p50/p99;
 *  - daemon RSS while protecting a dynamic 1 TiB VHDX (qemu-img), idle and after the seed.
 * Usage: npm run bench -- replicate [--size-mib 2048] [--lag-mib 1024] [--lag-seconds 30]
 *        [--no-rsync] [--no-bare] [--keep]
 */
import '../common/polyfill.ts'
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes, randomFillSync } from 'node:crypto'
import { mkdir, open, readFile, rm, writeFile, chmod } from 'node:fs/promises'
import { join } from 'node:path'
import { LocalCluster, freePort } from '../daemon/demo/local-cluster.ts'
import type { StatusDocument } from '../daemon/status.ts'

const MiB = 1024 * 1024

interface Args { sizeMiB: number, lagMiB: number, lagSeconds: number, rsync: boolean, bare: boolean, keep: boolean }

function parseArgs (argv: string[]): Args {
  const a: Args = { sizeMiB: 2048, lagMiB: 1024, lagSeconds: 30, rsync: true, bare: true, keep: false }
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]
    const v = argv[i + 1]
    if (k === '--no-rsync') { a.rsync = false; continue }
    if (k === '--no-bare') { a.bare = false; continue }
    if (k === '--keep') { a.keep = true; continue }
    if (v === undefined) break
    if (k === '--size-mib') a.sizeMiB = Number(v)
    else if (k === '--lag-mib') a.lagMiB = Number(v)
    else if (k === '--lag-seconds') a.lagSeconds = Number(v)
    else continue
    i++
  }
  return a
}

const now = (): number => performance.now()
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const round = (x: number, d = 2): number => Math.round(x * 10 ** d) / 10 ** d

async function exec (cmd: string, args: string[], timeoutMs = 3_600_000): Promise<string> {
  return await new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 64 * MiB }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${cmd} ${args.join(' ')}: ${String(stderr) || err.message}`)); else resolve(String(stdout))
    })
  })
}

function percentile (xs: number[], p: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p / 100 * s.length) - 1))] as number
}

/** A fixed VHD of `size` bytes of random data (footer by qemu-img). */
async function randomVhd (path: string, size: number): Promise<void> {
  await exec('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=fixed,force_size=on', path, String(size)])
  const fh = await open(path, 'r+')
  const buf = Buffer.allocUnsafe(16 * MiB)
  try {
    for (let at = 0; at < size; at += buf.length) {
      const n = Math.min(buf.length, size - at)
      randomFillSync(buf, 0, n)
      await fh.write(buf, 0, n, at)
    }
    await fh.sync()
  } finally { await fh.close() }
}

/** Rewrites `pct` % of the 64 KiB blocks of the data area at scattered offsets. */
async function changeBlocks (path: string, size: number, pct: number, seed: number): Promise<number> {
  const bs = 65536
  const blocks = Math.floor(size / bs)
  const n = Math.max(1, Math.round(blocks * pct / 100))
  const fh = await open(path, 'r+')
  let x = seed
  const picked = new Set<number>()
  try {
    // bounded: stops after n distinct picks (n ≤ blocks)
    for (let i = 0; picked.size < n && i < n * 20; i++) {
      x = (x * 1103515245 + 12345) >>> 0
      const b = x % blocks
      if (picked.has(b)) continue
      picked.add(b)
      await fh.write(randomBytes(bs), 0, bs, b * bs)
    }
  } finally { await fh.close() }
  return picked.size * bs
}

async function status (c: LocalCluster, node: string): Promise<StatusDocument> { return await c.status(node) }

async function waitSync (c: LocalCluster, vm: string, after: number, timeoutMs: number): Promise<{ generation: number }> {
  return await c.waitFor(`${vm} in sync`, async () => {
    const s = await status(c, 'hv-a')
    const v = s.vms.find(x => x.name === vm)
    const t = v?.targets[0]
    return v !== undefined && t !== undefined && t.state === 'in-sync' && t.ackedGeneration === v.generation && v.generation > after ? { generation: v.generation } : undefined
  }, timeoutMs, 50)
}

async function addVm (c: LocalCluster, vm: Record<string, unknown>): Promise<void> {
  await c.writeConfig('hv-a', { vms: [vm] })
  await c.node('hv-a').client.call('POST', '/v1/reload')
}

function rssOf (pid: number | undefined): { rssMB: number, peakMB: number } {
  if (pid === undefined) return { rssMB: NaN, peakMB: NaN }
  try {
    const s = spawnSync('cat', [`/proc/${pid}/status`], { encoding: 'utf8' }).stdout
    const kb = (k: string): number => Number(/\d+/.exec(s.split('\n').find(l => l.startsWith(k)) ?? '')?.[0] ?? NaN)
    return { rssMB: round(kb('VmRSS:') / 1024, 1), peakMB: round(kb('VmHWM:') / 1024, 1) }
  } catch { return { rssMB: NaN, peakMB: NaN } }
}

// ---- rsync over ssh ------------------------------------------------------------------------

interface Sshd { proc: ChildProcess, port: number, key: string, stop: () => Promise<void> }

async function startSshd (dir: string): Promise<Sshd | string> {
  if (spawnSync('rsync', ['--version'], { stdio: 'ignore' }).status !== 0) return 'rsync not installed'
  const sshdBin = ['/usr/sbin/sshd', '/usr/bin/sshd'].find(p => spawnSync('test', ['-x', p]).status === 0)
  if (sshdBin === undefined) return 'sshd not installed (apt-get install openssh-server)'
  if (process.getuid?.() !== 0) return 'sshd baseline needs root here (runs a private sshd)'
  await mkdir(dir, { recursive: true })
  const hostKey = join(dir, 'host_ed25519')
  const key = join(dir, 'client_ed25519')
  await exec('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey])
  await exec('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key])
  const auth = join(dir, 'authorized_keys')
  await writeFile(auth, await readFile(key + '.pub'))
  await chmod(auth, 0o600)
  const port = await freePort()
  const conf = join(dir, 'sshd_config')
  await writeFile(conf, [
    `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${hostKey}`, `AuthorizedKeysFile ${auth}`,
    `PidFile ${join(dir, 'sshd.pid')}`, 'PermitRootLogin prohibit-password', 'PasswordAuthentication no',
    'UsePAM no', 'StrictModes no', 'Subsystem sftp internal-sftp', ''
  ].join('\n'))
  await mkdir('/run/sshd', { recursive: true }).catch(() => {})
  const proc = spawn(sshdBin, ['-D', '-e', '-f', conf], { stdio: ['ignore', 'ignore', 'pipe'] })
  let err = ''
  proc.stderr?.on('data', (d: Buffer) => { err += d.toString() })
  const ssh = sshArgs(port, key)
  for (let i = 0; i < 50; i++) {
    if (spawnSync('ssh', [...ssh, 'root@127.0.0.1', 'true'], { stdio: 'ignore', timeout: 5000 }).status === 0) {
      return { proc, port, key, stop: async () => { proc.kill('SIGTERM') } }
    }
    if (proc.exitCode !== null) break
    await sleep(100)
  }
  proc.kill('SIGTERM')
  return `sshd did not come up: ${err.slice(0, 300)}`
}

function sshArgs (port: number, key: string): string[] {
  return ['-p', String(port), '-i', key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-o', 'BatchMode=yes']
}

async function rsyncOnce (sshd: Sshd, src: string, dstDir: string): Promise<number> {
  const t0 = now()
  await exec('rsync', ['-a', '--inplace', '-e', ['ssh', ...sshArgs(sshd.port, sshd.key)].join(' '), src, `root@127.0.0.1:${dstDir}/`])
  return (now() - t0) / 1000
}

// ---- bare libp2p stream --------------------------------------------------------------------

async function bareLibp2p (file: string, size: number): Promise<number> {
  const { createMeshNode } = await import('../daemon/mesh/node.ts')
  const { generateKeyPair } = await import('@libp2p/crypto/keys')
  const { peerIdFromPrivateKey } = await import('@libp2p/peer-id')
  const ka = await generateKeyPair('Ed25519')
  const kb = await generateKeyPair('Ed25519')
  const idA = peerIdFromPrivateKey(ka).toString()
  const idB = peerIdFromPrivateKey(kb).toString()
  const a = await createMeshNode({ privateKey: ka, listen: ['/ip4/127.0.0.1/tcp/0'], allowedPeerIds: [idB] })
  const b = await createMeshNode({ privateKey: kb, listen: ['/ip4/127.0.0.1/tcp/0'], allowedPeerIds: [idA] })
  await a.libp2p.start()
  await b.libp2p.start()
  try {
    let got = 0
    let done!: () => void
    const finished = new Promise<void>(resolve => { done = resolve })
    await b.libp2p.handle('/bench/bare/1.0.0', (stream) => {
      stream.addEventListener('message', (e) => { got += e.data.byteLength; if (got >= size) done() })
    })
    const addr = b.libp2p.getMultiaddrs()[0]
    if (addr === undefined) throw new Error('no address')
    const stream = await a.libp2p.dialProtocol(addr, '/bench/bare/1.0.0')
    const fh = await open(file, 'r')
    const t0 = now()
    try {
      for (let at = 0; at < size; at += MiB) {
        const buf = Buffer.allocUnsafe(Math.min(MiB, size - at))
        await fh.read(buf, 0, buf.length, at)
        if (!stream.send(buf)) await new Promise<void>(resolve => { stream.addEventListener('drain', () => { resolve() }, { once: true }) })
      }
      await finished
    } finally { await fh.close() }
    const s = (now() - t0) / 1000
    await stream.close().catch(() => {})
    return s
  } finally {
    await a.libp2p.stop()
    await b.libp2p.stop()
  }
}

// ---- the benchmark ---------------------------------------------------------------------------

export async function run (argv: string[]): Promise<object> {
  const args = parseArgs(argv)
  if (spawnSync('qemu-img', ['--version'], { stdio: 'ignore' }).status !== 0) throw new Error('qemu-img is required (apt-get install qemu-utils)')
  const size = args.sizeMiB * MiB
  const out: Record<string, unknown> = { machine: { cores: (await import('node:os')).availableParallelism() }, args }
  const notes: string[] = []
  const c = await LocalCluster.create({ nodes: [{ name: 'hv-a' }, { name: 'hv-b' }], logLevel: 'info', keep: args.keep })
  const vmDir = join(c.dir, 'vms')
  await mkdir(vmDir)
  let sshd: Sshd | undefined
  try {
    process.stderr.write(`bench replicate: ${c.dir}\n`)
    const disk = join(vmDir, 'big.vhd')
    await randomVhd(disk, size)
    await c.startAll()

    // 1. initial sync
    process.stderr.write('initial sync (vmesh)…\n')
    const t0 = now()
    await addVm(c, { name: 'big', disks: [disk], replicateTo: ['hv-b'], scanInterval: 1000, quietBudget: 2000 })
    let seedStart: number | undefined
    await c.waitFor('seed', async () => {
      const s = await status(c, 'hv-a')
      const t = s.vms[0]?.targets[0]
      if (seedStart === undefined && t !== undefined && (t.state === 'seeding' || t.state === 'in-sync') && (s.vms[0]?.generation ?? 0) > 0) seedStart = now()
      return t?.state === 'in-sync' && t.ackedGeneration === s.vms[0]?.generation && (s.vms[0]?.generation ?? 0) > 0
    }, 3_600_000, 50)
    const vmeshTotal = (now() - t0) / 1000
    const vmeshTransfer = (now() - (seedStart ?? t0)) / 1000
    const fileBytes = size + 512
    const initial: Record<string, unknown> = {
      bytes: fileBytes,
      vmesh: { totalSeconds: round(vmeshTotal), transferSeconds: round(vmeshTransfer), MBps: round(fileBytes / 1e6 / vmeshTotal, 1), transferMBps: round(fileBytes / 1e6 / vmeshTransfer, 1) },
      rssAfterSeed: { 'hv-a': rssOf(c.node('hv-a').proc?.pid), 'hv-b': rssOf(c.node('hv-b').proc?.pid) }
    }
    const rp = (await status(c, 'hv-b')).vms[0]?.replica?.files[disk]
    initial.identical = rp !== undefined && spawnSync('cmp', ['-s', disk, rp]).status === 0

    if (args.bare) {
      process.stderr.write('initial sync (bare libp2p)…\n')
      const s = await bareLibp2p(disk, fileBytes)
      initial.bareLibp2p = { seconds: round(s), MBps: round(fileBytes / 1e6 / s, 1) }
      initial.vsBare = round(vmeshTotal > 0 ? s / vmeshTotal : NaN)
    }
    let rsyncDir: string | undefined
    if (args.rsync) {
      const r = await startSshd(join(c.dir, 'sshd'))
      if (typeof r === 'string') notes.push(`rsync baseline skipped: ${r}`)
      else {
        sshd = r
        rsyncDir = join(c.dir, 'rsync-dst')
        await mkdir(rsyncDir)
        process.stderr.write('initial sync (rsync over ssh)…\n')
        const s = await rsyncOnce(sshd, disk, rsyncDir)
        initial.rsyncSsh = { seconds: round(s), MBps: round(fileBytes / 1e6 / s, 1) }
        initial.vsRsync = round(s / vmeshTotal)
      }
    }
    out.initialSync = initial

    // 2. incremental: 1 % of blocks
    process.stderr.write('incremental 1 % (vmesh)…\n')
    const g0 = (await status(c, 'hv-a')).vms[0]?.generation ?? 0
    const changed = await changeBlocks(disk, size, 1, 42)
    const ti = now()
    await waitSync(c, 'big', g0, 3_600_000)
    const vmeshInc = (now() - ti) / 1000
    const incremental: Record<string, unknown> = { changedBytes: changed, vmesh: { seconds: round(vmeshInc) } }
    const rp2 = (await status(c, 'hv-b')).vms[0]?.replica?.files[disk]
    incremental.identical = rp2 !== undefined && spawnSync('cmp', ['-s', disk, rp2]).status === 0
    if (sshd !== undefined && rsyncDir !== undefined) {
      process.stderr.write('incremental 1 % (rsync over ssh)…\n')
      const s = await rsyncOnce(sshd, disk, rsyncDir)
      incremental.rsyncSsh = { seconds: round(s) }
      incremental.vsRsync = round(vmeshInc / s)
    }
    out.incremental = incremental
    await rm(join(c.dir, 'rsync-dst'), { recursive: true, force: true })

    // 3. lag under a steady writer
    process.stderr.write('lag under a 5 MB/s writer…\n')
    const lagDisk = join(vmDir, 'busy.vhd')
    const lagSize = args.lagMiB * MiB
    await randomVhd(lagDisk, lagSize)
    await addVm(c, { name: 'busy', disks: [lagDisk], replicateTo: ['hv-b'], scanInterval: 1000, quietBudget: 500 })
    await c.waitFor('busy seeded', async () => {
      const v = (await status(c, 'hv-a')).vms.find(x => x.name === 'busy')
      return v?.targets[0]?.state === 'in-sync' && v.generation > 0
    }, 3_600_000, 100)
    const replica = (await status(c, 'hv-b')).vms.find(x => x.name === 'busy')?.replica?.files[lagDisk]
    if (replica === undefined) throw new Error('no replica of busy')
    const statusLag: number[] = []
    const probeLag: number[] = []
    const fh = await open(lagDisk, 'r+')
    const rfh = await open(replica, 'r')
    const probeOffset = lagSize - 65536
    let stop = false
    const writer = (async () => {
      // 512 KiB of random 64 KiB blocks every 100 ms ≈ 5 MB/s
      for (let i = 0; !stop && i < 100_000; i++) {
        for (let k = 0; k < 8; k++) await fh.write(randomBytes(65536), 0, 65536, Math.floor(Math.random() * (lagSize / 65536 - 1)) * 65536)
        await sleep(100)
      }
    })()
    const poller = (async () => {
      for (let i = 0; !stop && i < 1_000_000; i++) {
        try {
          const t = (await status(c, 'hv-a')).vms.find(x => x.name === 'busy')?.targets[0]
          if (t?.lagMs != null) statusLag.push(t.lagMs)
        } catch {}
        await sleep(100)
      }
    })()
    const probeBuf = Buffer.alloc(16)
    const lagEnd = now() + args.lagSeconds * 1000
    for (let n = 1; now() < lagEnd; n++) {
      const marker = Buffer.from(`probe-${String(n).padStart(10, '0')}`)
      await fh.write(marker, 0, 16, probeOffset)
      const tw = now()
      // bounded by the deadline: give up on a probe after 30 s
      while (now() - tw < 30_000) {
        await rfh.read(probeBuf, 0, 16, probeOffset)
        if (probeBuf.equals(marker)) { probeLag.push(now() - tw); break }
        await sleep(20)
      }
      await sleep(500)
    }
    stop = true
    await writer
    await poller
    await fh.close()
    await rfh.close()
    out.lag = {
      writerMBps: 5.2,
      diskMiB: args.lagMiB,
      statusLagMs: { samples: statusLag.length, p50: percentile(statusLag, 50), p99: percentile(statusLag, 99), max: Math.max(...statusLag) },
      writeToReplicaMs: { samples: probeLag.length, p50: round(percentile(probeLag, 50), 0), p99: round(percentile(probeLag, 99), 0), max: round(Math.max(...probeLag), 0) }
    }

    // 4. RSS with a 1 TiB sparse VHDX
    process.stderr.write('RSS with a 1 TiB dynamic VHDX…\n')
    await c.writeConfig('hv-a', { vms: [] })
    await c.node('hv-a').client.call('POST', '/v1/reload')
    await c.kill('hv-a')
    await c.start('hv-a')
    await sleep(2000)
    const idle = rssOf(c.node('hv-a').proc?.pid)
    const huge = join(vmDir, 'huge.vhdx')
    await exec('qemu-img', ['create', '-q', '-f', 'vhdx', huge, '1T'])
    await exec('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x5a 0 8M', '-c', 'write -P 0x6b 512G 8M', '-c', 'write -P 0x7c 1023G 8M', huge])
    const th = now()
    await addVm(c, { name: 'huge', disks: [huge], replicateTo: ['hv-b'], scanInterval: 1000 })
    await waitSync(c, 'huge', 0, 3_600_000)
    const hugeSeconds = (now() - th) / 1000
    await sleep(3000)
    out.rss1TiB = { idleBeforeMB: idle.rssMB, withVm: rssOf(c.node('hv-a').proc?.pid), seedSeconds: round(hugeSeconds), target: rssOf(c.node('hv-b').proc?.pid) }

    out.goals = {
      'initial >= 1.0x rsync-over-ssh': initial.vsRsync === undefined ? 'not measured' : (initial.vsRsync as number) >= 1.0,
      'initial >= 70% of bare stream': initial.vsBare === undefined ? 'not measured' : (initial.vsBare as number) >= 0.7,
      'incremental <= 0.35x rsync': incremental.vsRsync === undefined ? 'not measured' : (incremental.vsRsync as number) <= 0.35,
      'lag p99 <= 2 s': (percentile(probeLag, 99)) <= 2000,
      'RSS <= 200 MB': ((out.rss1TiB as { withVm: { rssMB: number } }).withVm.rssMB) <= 200
    }
    out.notes = notes
    return out
  } finally {
    await sshd?.stop()
    await c.destroy()
  }
}
