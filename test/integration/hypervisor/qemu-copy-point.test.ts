/**
 * Copied points for real (qemu-fleece.ts copyPoint): the changed blocks are read while no guest
 * write completes — checked by the new bitmap's dirty count — instead of a fleecing job.
 *
 * 1. The test bed's TCG guest writes record n into slot n mod 32 of its fixed VHDX (~10×/s);
 *    every round is a point, its told answer's ranges are held by the copy, and the replica
 *    built from the copies alone is one point each round (guest-slots.ts oracle), passing
 *    `qemu-img check`.
 * 2. A write that completes inside the copy window (issued through QEMU from the plan step, so it
 *    lands between the rotation and the count) makes the copy start again with it included; a
 *    write in every attempt makes the round a fleecing point, and the copied blocks are dropped.
 * Skips without qemu-system-x86_64, qemu-img, nasm or the test bed.
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { open, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { systemClock } from '../../../common/clock.ts'
import { PointCopy, copyPlan } from '../../../daemon/hypervisor/point-copy.ts'
import { QemuPointCapture, type PointCapture } from '../../../daemon/hypervisor/qemu-fleece.ts'
import { qmpCommand, type QmpReply } from '../../../daemon/hypervisor/qmp.ts'
import type { ChangeSet } from '../../../storage/changes/source.ts'
import { ToldRangesSource } from '../../../storage/changes/told.ts'
import { readDiskLayout } from '../../../storage/formats/layout.ts'
import { DISKWRITER_ASM, SLOTS, killQemu, pointOf, presentFixedVhdx, slotsOf } from '../../helpers/guest-slots.ts'
import { tempDir } from '../../helpers/tmp.ts'

const has = (cmd: string, arg = '--version'): boolean => spawnSync(cmd, [arg], { stdio: 'ignore' }).status === 0
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const KiB = 1024
const BS = 4 * KiB

describe('integration: copied points — the changed blocks read while no guest write completes', function () {
  this.timeout(60_000)
  let dir: string
  let cleanup: () => Promise<void>
  let qemu: ChildProcess | undefined

  before(function () {
    const ok = has('qemu-system-x86_64') && has('qemu-img') && has('nasm', '-v') && DISKWRITER_ASM !== undefined
    if (!ok) this.skip()
  })
  beforeEach(async () => { ({ dir, cleanup } = await tempDir('vmesh-copy-it-')) })
  afterEach(async () => {
    await killQemu(qemu)
    await cleanup()
  })
  const qmpOf = (sock: string) => async (command: string, args?: Record<string, unknown>): Promise<QmpReply> =>
    await qmpCommand(sock, command, args, { clock: systemClock, timeoutMs: 20_000 })

  async function capture (image: string, qmp: (c: string, a?: Record<string, unknown>) => Promise<QmpReply>): Promise<{ cap: QemuPointCapture, told: ToldRangesSource, cache: PointCopy }> {
    const base = copyPlan(await readDiskLayout(image), BS)
    assert.ok(base !== null)
    const cache = new PointCopy(BS, 16 * 1024 * KiB)
    const told = new ToldRangesSource({}, { blockSizeBytes: BS })
    const cap = new QemuPointCapture({ clock: systemClock, qmp, told }, {
      file: image, nbdSocket: join(dir, 'nbd.sock'), scratchDir: dir, mode: 'fleece', granularityBytes: BS,
      copy: { plan: base, cache }
    })
    return { cap, told, cache }
  }

  /** The set's ranges from the point into the replica (a copied point must hold all of them). */
  async function apply (c: PointCapture, set: ChangeSet, replica: string): Promise<void> {
    if (c.mode === 'copy') assert.ok(c.covers?.(set.ranges) === true, `the copy does not hold the answer's ranges ${JSON.stringify(set.ranges)} (told ${JSON.stringify(c.virtualRanges)}, file ${c.fileSize})`)
    const fh = await open(replica, existsSync(replica) ? 'r+' : 'w+')
    try {
      await fh.truncate(c.fileSize)
      for (const r of set.ranges) {
        for (let at = r.offset; at < r.offset + r.length; at += 256 * KiB) {
          const len = Math.min(256 * KiB, r.offset + r.length - at)
          await fh.write(await c.read(at, len), 0, len, at)
        }
      }
    } finally { await fh.close() }
  }

  it('a guest writing ~10 records/s into a fixed VHDX: every round a copied point, each replica state one point', async () => {
    const bin = join(dir, 'diskwriter.bin')
    assert.equal(spawnSync('nasm', ['-f', 'bin', '-o', bin, DISKWRITER_ASM as string]).status, 0)
    const image = join(dir, 'guest.vhdx')
    presentFixedVhdx(image, dir, '64M', '1M', bin)
    const size = (await stat(image)).size
    const sock = join(dir, 'guest.qmp')
    const serial = join(dir, 'serial.log')
    qemu = spawn('qemu-system-x86_64', ['-m', '32', '-nodefaults', '-no-reboot', '-display', 'none', '-accel', 'tcg',
      '-drive', `file=${image},format=vhdx,if=ide,cache=none`, '-serial', `file:${serial}`,
      '-qmp', `unix:${sock},server=on,wait=off`], { stdio: ['ignore', 'ignore', 'inherit'] })
    const writes = async (): Promise<number> => ((await readFile(serial, 'utf8').catch(() => '')).match(/W /g) ?? []).length
    for (const end = Date.now() + 30_000; await writes() < 3;) {
      if (Date.now() > end || qemu.exitCode !== null) throw new Error('the guest did not start writing')
      await sleep(50)
    }
    const { cap, told } = await capture(image, qmpOf(sock))
    const replica = join(dir, 'replica.vhdx')
    let token: string | null = null
    const points: number[] = []
    const rounds = 10
    for (let round = 0; round < rounds; round++) {
      if (round > 0) await sleep(250)
      const c = await cap.capture()
      assert.equal(c.mode, round === 0 ? 'fleece' : (c.mode === 'fleece' ? 'fleece' : 'copy')) // the first point of a chain is a whole file
      const set = await told.changes(image, token, { view: c.view })
      token = set.token
      assert.equal(set.consistent, true)
      await apply(c, set, replica)
      await c.release(true)
      assert.equal(spawnSync('qemu-img', ['check', '-q', '-f', 'vhdx', replica]).status, 0, `round ${round}: replica image damaged`)
      const p = pointOf(slotsOf(replica, dir))
      assert.ok('n' in p, `round ${round} (${c.mode}): ${'torn' in p ? p.torn : ''}`)
      points.push(p.n)
    }
    assert.equal(cap.stats.copied + cap.stats.fleeced, rounds)
    assert.ok(cap.stats.copied >= rounds - 3, JSON.stringify(cap.stats))
    assert.ok(points.every((n, i) => i === 0 || n > (points[i - 1] as number)), `points do not advance: ${points.join(',')}`)
    assert.equal((await stat(image)).size, size, 'the fixed file grew')
    assert.ok(points[rounds - 1] as number > SLOTS, `the guest wrote ${String(points[rounds - 1])} records: every slot should have been rewritten during the test`)
    // nothing of the copies left in QEMU: no job, no node, only the live bitmap
    assert.deepEqual((await qmpOf(sock)('query-block-jobs')).return, [])
    await cap.stop()
    console.log(`      points ${points.join(' → ')}; ${JSON.stringify(cap.stats)}`)
  })

  it('a write that completes inside the copy window restarts the copy with it; a write in every attempt makes the round a fleecing point', async () => {
    const image = join(dir, 'disk.raw')
    assert.equal(spawnSync('qemu-img', ['create', '-q', '-f', 'raw', image, '64M']).status, 0)
    const sock = join(dir, 'vm.qmp')
    const writerSock = join(dir, 'writer.qmp')
    qemu = spawn('qemu-system-x86_64', ['-machine', 'none', '-nodefaults', '-display', 'none',
      '-drive', `file=${image},format=raw,if=none,id=d0,cache=none`,
      '-qmp', `unix:${sock},server=on,wait=off`, '-qmp', `unix:${writerSock},server=on,wait=off`], { stdio: ['ignore', 'ignore', 'inherit'] })
    for (let i = 0; !existsSync(sock) || !existsSync(writerSock); i++) { if (i > 400) throw new Error('qemu did not start'); await sleep(25) }
    const write = async (offset: number, pattern: number): Promise<void> => {
      const r = await qmpOf(writerSock)('human-monitor-command', { 'command-line': `qemu-io d0 "write -P ${pattern} ${offset} ${BS}"` })
      assert.equal(r.error, undefined) // (qemu-io prints to QEMU's stdout, not into the reply: the bytes are checked below)
    }
    let racesLeft = 0
    let at = 0
    // the dirty count is asked after the blocks were read: a write completed just before it is
    // one that completed inside the copy window
    const vmQmp = qmpOf(sock)
    const { cap, told, cache } = await capture(image, async (command, args) => {
      if (command === 'query-block' && racesLeft > 0) { racesLeft--; at++; await write(8 * 1024 * KiB + at * BS, 0x70 + at) }
      return await vmQmp(command, args)
    })
    let token: string | null = null
    const first = await cap.capture()
    token = (await told.changes(image, token, { view: first.view })).token
    await first.release(true)

    // one write in the window of the first attempt
    await write(0, 0x11)
    racesLeft = 1
    const c = await cap.capture()
    const plannedWrite = at
    assert.equal(c.mode, 'copy')
    assert.equal(cap.stats.raced, 1)
    const windowWrite = { offset: 8 * 1024 * KiB + plannedWrite * BS, length: BS }
    const set = await told.changes(image, token, { view: c.view })
    token = set.token
    // the point holds both the write before it and the one that raced the first attempt, with their bytes
    for (const [r, v] of [[{ offset: 0, length: BS }, 0x11], [windowWrite, 0x70 + plannedWrite]] as const) {
      assert.ok(set.ranges.some(x => x.offset <= r.offset && x.offset + x.length >= r.offset + r.length), `${JSON.stringify(r)} missing from ${JSON.stringify(set.ranges)}`)
      assert.ok((await c.read(r.offset, r.length)).every(b => b === v))
    }
    await c.release(true)

    // a write in the window of every attempt: this round is fleeced, the copied blocks dropped
    await write(BS * 3, 0x22)
    racesLeft = 99
    const f = await cap.capture()
    assert.equal(f.mode, 'fleece')
    assert.equal(cap.stats.raced, 4)
    assert.equal(cache.bytes, 0)
    const fset = await told.changes(image, token, { view: f.view })
    assert.ok(fset.ranges.some(x => x.offset <= BS * 3 && x.offset + x.length >= BS * 4))
    assert.ok((await f.read(BS * 3, BS)).every(b => b === 0x22))
    await f.release(true)
    racesLeft = 0
    // and copies again after it
    await write(BS * 5, 0x33)
    const again = await cap.capture()
    assert.equal(again.mode, 'copy')
    const aset = await told.changes(image, fset.token, { view: again.view })
    assert.ok(again.covers?.(aset.ranges))
    await again.release(true)
    await cap.stop()
    console.log(`      ${JSON.stringify(cap.stats)}`)
  })
})
