/**
 * kill -9 in the middle of a stream, on either side: the replica is always exactly one
 * generation (never half-written), a seed resumes without resending what is durable, and
 * replication converges after the restart.
 *
 * The oracle after a kill mid-change-set (`checkAfterCrash`). A change set bigger than ~3 s of
 * the link goes as chunks (daemon/replication/sender.ts), each its own *fuzzy* generation that
 * the target applies and acknowledges; the last one carries the set's capture times and may be
 * consistent. The store never holds half a generation (storage/replica: redo, undo, commit), and
 * fuzzy generations are never recovery points. So after the crash:
 *  - the replica files (read at rest) hold A, or B, or A with B's blocks on a prefix, in offset
 *    order, of the set's ranges (the chunks acknowledged so far); only when a scan read the file
 *    while the test's one write() was still copying can the set itself be part of the write (the
 *    rest follows in a later set), and then each block is still A's or B's;
 *  - the recovery point the target exposes (`appliedConsistentGeneration`, the failover default)
 *    is the one before the write, or a generation holding exactly B: never a chunk prefix. It is
 *    restored through the API and compared byte for byte.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { copyFile, mkdir, open, readFile, rm, stat } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import type { ReplicaPoints } from '../../../daemon/replication/types.ts'
import { DEFAULT_BLOCK_SIZE } from '../../../common/block-size.ts'
import { requireQemu, qemuImgCompare } from '../../helpers/qemu.ts'
import { destroyKeepingFailures } from '../../helpers/keep.ts'
import { vmsSection, waitInSync, replicaPath, sameBytes, randomFixedVhd, replicaOf, logOf, replicaEvidence, readReplicaAtRest } from './helpers.ts'

const MiB = 1024 * 1024
const VM = 'db01'

/** The target's newest recovery point and its bytes (restored through the API). */
interface PointState { generation: number, bytes: Buffer | null }

async function replicaPoints (c: LocalCluster): Promise<ReplicaPoints['replicas'][number]> {
  const r = await c.node('hv-b').client.call<ReplicaPoints>('GET', `/v1/replication/points?vm=${VM}`, undefined, { timeoutMs: 10_000 })
  const x = r.replicas[0]
  assert.ok(x !== undefined, 'hv-b holds a replica')
  return x
}

/** The newest recovery point: its generation and, unless none exists, its bytes restored. */
async function newestPoint (c: LocalCluster, disk: string, tag: string, known?: { generation: number, bytes: Buffer }): Promise<PointState> {
  const x = await replicaPoints(c)
  const g = x.appliedConsistentGeneration
  if (g === 0) return { generation: 0, bytes: null }
  if (known !== undefined && known.generation === g) return { generation: g, bytes: known.bytes }
  const point = x.points.find(p => p.generation === g)
  assert.ok(point !== undefined, `the newest consistent generation ${g} is a listed point (${JSON.stringify(x.points)})`)
  const to = join(c.dir, `restore-${tag}`)
  const r = await c.node('hv-b').client.call<{ generation: number, files: Record<string, string> }>('POST', '/v1/replication/restore', { vm: VM, point: point.id, to }, { timeoutMs: 120_000 })
  assert.equal(r.generation, g)
  const path = r.files[disk]
  assert.ok(path !== undefined, 'the restore holds the disk')
  const bytes = await readFile(path)
  await rm(to, { recursive: true, force: true })
  return { generation: g, bytes }
}

/**
 * One write() of `data` at guest `offset` of a fixed VHD (data starts at 0), timed closely: the
 * wall-clock span of the call itself (the data is made before), for `scanOverlapped`.
 */
async function timedWrite (path: string, offset: number, data: Buffer): Promise<[number, number]> {
  const fh = await open(path, 'r+')
  try {
    const w0 = Date.now()
    await fh.write(data, 0, data.length, offset)
    return [w0, Date.now()]
  } finally { await fh.close() }
}

/** A scan of the source that read the file while [w0, w1] (the test's write) was in progress. */
async function scanOverlapped (c: LocalCluster, w0: number, w1: number): Promise<boolean> {
  const lines = (await readFile(logOf(c, 'hv-a'), 'utf8')).split('\n')
  for (const l of lines) {
    if (!l.includes('"scan"')) continue
    let e: { msg?: string, vm?: string, time?: string, scanMs?: number | null, scannedBytes?: number }
    try { e = JSON.parse(l) } catch { continue }
    if (e.msg !== 'scan' || e.vm !== VM || (e.scannedBytes ?? 0) === 0 || typeof e.time !== 'string') continue
    const end = Date.parse(e.time)
    const start = end - (e.scanMs ?? 60_000)
    if (start <= w1 + 20 && end >= w0 - 20) return true
  }
  return false
}

/** Bytes of each generation the source began to send to hv-b (its last attempt), from its log. */
async function sentBytes (c: LocalCluster): Promise<Map<number, number>> {
  const out = new Map<number, number>()
  for (const l of (await readFile(logOf(c, 'hv-a'), 'utf8')).split('\n')) {
    if (!l.includes('"sending generation"')) continue
    let e: { msg?: string, vm?: string, target?: string, generation?: number, bytes?: number }
    try { e = JSON.parse(l) } catch { continue }
    if (e.msg === 'sending generation' && e.vm === VM && e.target === 'hv-b' && typeof e.generation === 'number' && typeof e.bytes === 'number') out.set(e.generation, e.bytes)
  }
  return out
}

/** Per block of the disk: `A`, `B`, `=` (both) or `?` (neither). */
function blockMap (bytes: Buffer, a: Buffer, b: Buffer, bs: number): string {
  let m = ''
  for (let at = 0; at < bytes.length; at += bs) {
    const part = bytes.subarray(at, at + bs)
    const isA = a.subarray(at, at + bs).equals(part)
    const isB = b.subarray(at, at + bs).equals(part)
    m += isA && isB ? '=' : isA ? 'A' : isB ? 'B' : '?'
  }
  return m
}

/**
 * The oracle (see the top of the file): `r` read at rest after a kill during the change set
 * that wrote [offset, offset + length) of A (generation `genA`), giving B. The chunks are the
 * generations the source sent after genA (`sending generation`, with their bytes): at
 * generation g the replica holds B on exactly the first Σ bytes(genA < h ≤ g) of the write and A
 * everywhere else — one generation without chunks is all or nothing, so a half-applied one fails.
 */
async function checkAfterCrash (c: LocalCluster, o: {
  tag: string, disk: string, r: { generation: number, bytes: Buffer }, genA: number, a: Buffer, b: Buffer,
  offset: number, length: number, write: [number, number], point0: PointState, midChangeSet?: boolean
}): Promise<void> {
  const { r, a, b, genA } = o
  const bs = DEFAULT_BLOCK_SIZE
  const map = blockMap(r.bytes, a, b, bs)
  const first = o.offset / bs
  const end = (o.offset + o.length) / bs
  const outside = map.slice(0, first) + map.slice(end)
  const inside = map.slice(first, end)
  const sent = await sentBytes(c)
  let prefix = 0
  for (const [g, n] of sent) if (g > genA && g <= r.generation) prefix += n
  const chunks = [...sent].filter(([g]) => g > genA).map(([g, n]) => `${g}:${n}`).join(' ')
  // restored afresh even when unchanged: the files may be at a chunk, and the point is reached
  // back through the chunks' undo logs
  const point = await newestPoint(c, o.disk, o.tag)
  const overlapped = await scanOverlapped(c, o.write[0], o.write[1])
  const isB = r.bytes.equals(b)
  const runs = inside.replace(/(.)\1*/g, (m, ch: string) => `${ch}×${m.length} `).trim()
  const state = `${o.tag}: replica at generation ${r.generation} (A is ${genA}), blocks of the write ${runs}, sent after A (generation:bytes) ${chunks}, newest point ${point.generation} (before the write ${o.point0.generation}), a scan overlapped the write: ${overlapped}`
  process.stderr.write(`${state}\n`)
  try {
    assert.ok(r.generation >= genA, 'the replica went back before A')
    if (r.generation === genA) assert.ok(r.bytes.equals(a), 'the replica is exactly A, the generation it names')
    assert.ok(!/[B?]/.test(outside), 'outside the write every block is A\'s')
    assert.ok(!/\?/.test(inside), 'inside the write every block is A\'s or B\'s (never half a block of a generation)')
    const nB = inside.replace(/[^B]/g, '').length
    if (!overlapped) {
      // one change set of the whole write, sent in offset order: exactly the acknowledged chunks
      const p = Math.min(prefix, o.length) / bs
      assert.equal(inside, 'B'.repeat(p) + 'A'.repeat(end - first - p), `B on exactly the first ${prefix} bytes of the write (the generations after A up to ${r.generation}), A after`)
    } else {
      // a scan read the file during the write: the first change set may hold only part of it and
      // a later one the rest; still never more B than the generations up to the replica's sent
      assert.ok(nB * bs <= prefix, `no more B (${nB} blocks) than the generations up to ${r.generation} sent (${prefix} bytes)`)
    }
    if (o.midChangeSet === true) assert.ok(!isB, 'the change set cannot have landed whole')
    // the recovery point: the one before the write, or one holding exactly B — never a chunk prefix
    if (point.generation === o.point0.generation) {
      assert.ok(point.bytes === null || point.bytes.equals(o.point0.bytes as Buffer), 'the old recovery point restores to its bytes')
    } else {
      assert.ok(point.generation > genA && point.generation <= r.generation, 'a new recovery point is one of the generations received')
      assert.ok(point.bytes?.equals(b) === true, 'a new recovery point holds exactly B')
    }
    if (!isB) assert.equal(point.generation, o.point0.generation, 'a partial change set is no recovery point')
  } catch (err) {
    process.stderr.write(`${new Date().toISOString()} ${state}\nblocks of the write: ${inside}\n${await replicaEvidence(c, 'hv-b', VM, r.bytes, { A: a, B: b }, o.tag)}\n`)
    throw err
  }
}

describe('replication: kill -9 mid-stream (integration)', function () {
  this.timeout(180_000)
  let c: LocalCluster
  let disk: string
  let vmDir: string

  before(async function () {
    requireQemu(this)
    c = await LocalCluster.create({ nodes: [{ name: 'hv-a' }, { name: 'hv-b' }], logLevel: 'debug', keep: process.env.KEEP === '1' })
    vmDir = join(c.dir, 'vms')
    await mkdir(vmDir)
    disk = join(vmDir, 'db01.vhd')
    await randomFixedVhd(disk, 64 * MiB)
    // 16 MB/s: the 64 MiB seed takes about 4 s, long enough to kill in the middle
    await c.writeConfig('hv-a', vmsSection([{ name: 'db01', disks: [disk], replicateTo: ['hv-b'], limit: String(16_000_000) }]))
    await c.startAll()
  })

  after(async function () { await destroyKeepingFailures(this, c) })

  it('target killed mid-seed: the seed resumes, skipping durable blocks, and converges', async function () {
    // bytes received run ahead of those written (the channel and the write queue buffer them) and
    // a checkpoint makes them durable later: wait for the target to say one checkpoint is durable
    const durable = await c.waitFor('a durable seed checkpoint', async () => {
      const r = await replicaOf(c, 'hv-b', 'db01')
      return r?.seeding === true && (r.seedDurableBytes ?? 0) >= 16 * MiB ? r.seedDurableBytes : undefined
    }, 30_000, 20)
    await c.kill('hv-b')
    await c.start('hv-b')
    const r = await replicaOf(c, 'hv-b', 'db01')
    assert.equal(r?.seeding, true, 'the interrupted seed is still a seed after restart')
    await waitInSync(c, 'hv-a', 'db01', 'hv-b', 60_000)
    const rp = await replicaPath(c, 'hv-b', 'db01', disk)
    assert.equal(await sameBytes(disk, rp), true)
    assert.equal(await qemuImgCompare(disk, 'vpc', rp, 'vpc'), true)
    const resumed = (await readFile(logOf(c, 'hv-a'), 'utf8')).split('\n').filter(l => l.includes('seed resumes')).map(l => JSON.parse(l) as { skipped: number })
    assert.ok(resumed.length >= 1, 'the source resumed the seed')
    for (const r of resumed) assert.ok(r.skipped * 65536 >= 16 * MiB, `every resumed attempt skipped at least one checkpoint of blocks (${r.skipped} blocks; ${durable} bytes were durable)`)
    // after the restart only the rest crossed the wire: each resumed attempt sends what it did
    // not skip (the source aborts an attempt when a scan ran while it read a consistent seed and
    // resumes again fuzzy — under load that happens; the attempt's bytes crossed the wire too)
    const size = (await stat(disk)).size
    const budget = resumed.reduce((n, r) => n + size - r.skipped * 65536, 0)
    const after = (await replicaOf(c, 'hv-b', 'db01'))?.bytesReceived ?? Infinity
    assert.ok(after < budget * 1.05 + MiB, `received ${after} bytes after the restart; ${resumed.length} resumed attempt(s) had ${budget} bytes to send`)
  })

  it('target killed mid-generation: the replica holds A, B or A plus the chunks acknowledged; its recovery point is exactly A or B; then converges', async function () {
    const { generation: genA } = await waitInSync(c, 'hv-a', 'db01', 'hv-b')
    const copyA = join(vmDir, 'db01-A.vhd')
    await copyFile(disk, copyA)
    const point0 = await newestPoint(c, disk, 'target-kill-before', { generation: genA, bytes: await readFile(copyA) })
    const rx0 = (await replicaOf(c, 'hv-b', 'db01'))?.bytesReceived ?? 0
    const [w0, w1] = await timedWrite(disk, 0, randomBytes(40 * MiB))
    await c.waitFor('generation streaming', async () => ((await replicaOf(c, 'hv-b', 'db01'))?.bytesReceived ?? 0) > rx0 + 16 * MiB, 30_000, 20)
    await c.signal('hv-a', 'SIGSTOP')
    try {
      // The source is frozen. A target that has counted less than 20 MiB of the 40 MiB
      // generation cannot get its end (at most the 16 MiB stream window and the socket buffers
      // are still in flight): the kill is then surely mid-generation. On a starved machine the
      // status poll may lag so far that the whole generation arrived before the freeze; the
      // replica must then still be exactly one of the two generations.
      const rx = (await replicaOf(c, 'hv-b', 'db01'))?.bytesReceived ?? Infinity
      const midGeneration = rx < rx0 + 20 * MiB
      await c.kill('hv-b')
      await c.start('hv-b')
      const r = await readReplicaAtRest(c, 'hv-b', 'db01', disk)
      const [a, b] = await Promise.all([readFile(copyA), readFile(disk)])
      process.stderr.write(`target-kill case: ${rx - rx0} bytes of the change set received at the freeze\n`)
      await checkAfterCrash(c, { tag: 'target-kill', disk, r, genA, a, b, offset: 0, length: 40 * MiB, write: [w0, w1], point0, midChangeSet: midGeneration })
    } finally {
      await c.signal('hv-a', 'SIGCONT')
    }
    await waitInSync(c, 'hv-a', 'db01', 'hv-b', 60_000)
    assert.equal(await sameBytes(disk, await replicaPath(c, 'hv-b', 'db01', disk)), true)
  })

  it('source killed mid-generation: the replica holds A, B or A plus the chunks acknowledged; its recovery point is exactly A or B; converges after the source restarts', async function () {
    const { generation: genA } = await waitInSync(c, 'hv-a', 'db01', 'hv-b')
    const copyA = join(vmDir, 'db01-A2.vhd')
    await copyFile(disk, copyA)
    const point0 = await newestPoint(c, disk, 'source-kill-before', { generation: genA, bytes: await readFile(copyA) })
    const rx0 = (await replicaOf(c, 'hv-b', 'db01'))?.bytesReceived ?? 0
    const [w0, w1] = await timedWrite(disk, 8 * MiB, randomBytes(40 * MiB))
    await c.waitFor('generation streaming', async () => ((await replicaOf(c, 'hv-b', 'db01'))?.bytesReceived ?? 0) > rx0 + 16 * MiB, 30_000, 20)
    await c.kill('hv-a')
    // the target drops the unfinished generation when it sees the stream close (or completes
    // it, if its end had arrived): read the replica once it is at rest
    const r = await readReplicaAtRest(c, 'hv-b', 'db01', disk)
    const [a, b] = await Promise.all([readFile(copyA), readFile(disk)])
    await checkAfterCrash(c, { tag: 'source-kill', disk, r, genA, a, b, offset: 8 * MiB, length: 40 * MiB, write: [w0, w1], point0 })
    await c.start('hv-a')
    await waitInSync(c, 'hv-a', 'db01', 'hv-b', 60_000)
    assert.equal(await sameBytes(disk, await replicaPath(c, 'hv-b', 'db01', disk)), true)
  })
})
