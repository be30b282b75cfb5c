/**
 * One consistent point per generation, for real: the test bed's TCG guest (a boot sector that
 * writes record n — "CNTR", then n repeated — into slot n mod 32 of its own VHDX, ~10×/s)
 * keeps writing while QemuPointCapture freezes the image file (fleecing) and the test reads
 * the changed ranges *slowly* (so the guest writes during every read) into a replica file.
 *
 * Oracle: a replica that is one point of the source holds, after record N, in every slot k
 * the newest record n ≤ N with n ≡ k (mod 32) — nothing older, nothing newer. A mix of two
 * moments (a slot read before the guest overwrote it, a later slot after) breaks that, and so
 * would a BAT or log from one moment with payload from another (qemu-img check, and the slot
 * read through the VHDX driver). Also: a failed generation's changes come back with the next
 * one (bitmap merged back), and a refused fleecing falls back to a measured guest pause.
 * Skips without qemu-system-x86_64, qemu-img, nasm or the test bed.
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { open, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { systemClock } from '../../../common/clock.ts'
import { qmpCommand, type QmpReply } from '../../../daemon/hypervisor/qmp.ts'
import { QemuPointCapture, type PointCapture } from '../../../daemon/hypervisor/qemu-fleece.ts'
import { totalBytes } from '../../../storage/changes/range.ts'
import type { ChangeSet } from '../../../storage/changes/source.ts'
import { ToldRangesSource } from '../../../storage/changes/told.ts'
import { tempDir } from '../../helpers/tmp.ts'
import { DISKWRITER_ASM, SLOTS, killQemu, pointOf, slotsOf } from '../../helpers/guest-slots.ts'

const has = (cmd: string, arg = '--version'): boolean => spawnSync(cmd, [arg], { stdio: 'ignore' }).status === 0
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const KiB = 1024
describe('integration: fleecing — every generation is one point of a guest that keeps writing', function () {
  this.timeout(60_000)
  let dir: string
  let cleanup: () => Promise<void>
  let qemu: ChildProcess | undefined
  let qmpSock: string
  let serial: string

  before(function () {
    const ok = has('qemu-system-x86_64') && has('qemu-img') && has('nasm', '-v') && DISKWRITER_ASM !== undefined
    if (!ok) this.skip()
  })
  beforeEach(async () => { ({ dir, cleanup } = await tempDir('vmesh-fleece-it-')) })
  afterEach(async () => {
    await killQemu(qemu)
    await cleanup()
  })
  const writesSeen = async (): Promise<number> => ((await readFile(serial, 'utf8').catch(() => '')).match(/W /g) ?? []).length
  const qmp = async (command: string, args?: Record<string, unknown>): Promise<QmpReply> =>
    await qmpCommand(qmpSock, command, args, { clock: systemClock, timeoutMs: 20_000 })

  /** Copies the capture's ranges into the replica, slowly (the guest writes meanwhile). */
  async function applySlowly (c: PointCapture, set: ChangeSet, replica: string): Promise<number> {
    const before = await writesSeen()
    assert.equal(set.fileSize, c.fileSize)
    assert.equal(set.consistent, true)
    const fh = await open(replica, existsSync(replica) ? 'r+' : 'w+')
    try {
      await fh.truncate(c.fileSize)
      for (const r of set.ranges) {
        for (let at = r.offset; at < r.offset + r.length; at += 256 * KiB) {
          const len = Math.min(256 * KiB, r.offset + r.length - at)
          const buf = await c.read(at, len)
          assert.equal(buf.length, len)
          await fh.write(buf, 0, len, at)
          await sleep(Math.max(5, Math.floor(400 / Math.max(1, Math.ceil(totalBytes(set.ranges) / (256 * KiB))))))
        }
      }
    } finally { await fh.close() }
    return await writesSeen() - before
  }

  async function bootGuest (): Promise<string> {
    const bin = join(dir, 'diskwriter.bin')
    assert.equal(spawnSync('nasm', ['-f', 'bin', '-o', bin, DISKWRITER_ASM as string]).status, 0)
    const image = join(dir, 'guest.vhdx')
    assert.equal(spawnSync('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', image, '64M']).status, 0)
    assert.equal(spawnSync('qemu-io', ['-f', 'vhdx', '-c', `write -q -s ${bin} 0 512`, image]).status, 0)
    qmpSock = join(dir, 'guest.qmp')
    serial = join(dir, 'serial.log')
    qemu = spawn('qemu-system-x86_64', ['-m', '32', '-nodefaults', '-no-reboot', '-display', 'none', '-accel', 'tcg',
      '-drive', `file=${image},format=vhdx,if=ide`, '-serial', `file:${serial}`,
      '-qmp', `unix:${qmpSock},server=on,wait=off`], { stdio: ['ignore', 'ignore', 'inherit'] })
    const end = Date.now() + 30_000
    while (await writesSeen() < 3) {
      if (Date.now() > end || qemu.exitCode !== null) throw new Error('the guest did not start writing')
      await sleep(50)
    }
    return image
  }

  it('the oracle tells one point from a torn mix', () => {
    const atPoint = Array.from({ length: SLOTS }, (_, k) => 40 - ((40 - k) % SLOTS))
    assert.deepEqual(pointOf(atPoint), { n: 40 })
    assert.deepEqual(pointOf(Array.from({ length: SLOTS }, (_, k) => k <= 5 ? (k === 0 ? 0 : k) : 0)), { n: 5 })
    const torn = [...atPoint]
    torn[3] = 3 // read before the guest overwrote it with 35, while slot 8 was read after 40
    assert.ok('torn' in pointOf(torn))
  })

  it('fleecing: a guest writing ~10 records/s, ranges read slowly, each replica state is one point; a failed generation merges back', async () => {
    const image = await bootGuest()
    const replica = join(dir, 'replica.vhdx')
    const told = new ToldRangesSource({}, { blockSizeBytes: 64 * KiB })
    const cap = new QemuPointCapture({ clock: systemClock, qmp, told }, { file: image, nbdSocket: join(dir, 'nbd.sock'), scratchDir: dir })
    let token: string | null = null
    let during = 0
    const points: number[] = []
    for (let round = 0; round < 6; round++) {
      if (round > 0) await sleep(300)
      const c = await cap.capture()
      assert.equal(c.mode, 'fleece')
      const set = await told.changes(image, token, { view: c.view })
      token = set.token
      if (round === 0) assert.equal(set.full, true)
      else {
        assert.equal(set.full, false)
        assert.ok(c.virtualRanges.length > 0 && totalBytes(set.ranges) < c.fileSize, `round ${round}: ${totalBytes(set.ranges)} bytes, the whole file`)
      }
      during += await applySlowly(c, set, replica)
      await c.release(true)
      assert.equal(c.pauseMs, 0)
      assert.equal(spawnSync('qemu-img', ['check', '-q', '-f', 'vhdx', replica]).status, 0, `round ${round}: replica image damaged`)
      const p = pointOf(slotsOf(replica, dir))
      assert.ok('n' in p, `round ${round}: ${'torn' in p ? p.torn : ''}`)
      points.push(p.n)
    }
    assert.ok(during >= 6, `only ${during} guest writes happened while ranges were read: the test would not catch a fuzzy read`)
    assert.ok(points.every((n, i) => i === 0 || n > (points[i - 1] as number)), `points do not advance: ${points.join(',')}`)

    // A generation that fails (never applied): its changes come back with the next point.
    const failed = await cap.capture()
    await told.changes(image, token, { view: failed.view }) // computed, never applied (the consumer keeps `token`)
    await failed.release(false)
    await sleep(300)
    const next = await cap.capture()
    assert.ok(failed.virtualRanges.length > 0)
    for (const r of failed.virtualRanges) {
      assert.ok(next.virtualRanges.some(x => x.offset <= r.offset && x.offset + x.length >= r.offset + r.length), `range ${r.offset}+${r.length} of the failed point is missing`)
    }
    const nextSet = await told.changes(image, token, { view: next.view })
    await applySlowly(next, nextSet, replica)
    await next.release(true)
    const p = pointOf(slotsOf(replica, dir))
    assert.ok('n' in p, 'torn' in p ? p.torn : '')
    // no fleecing node, job or export left behind
    const jobs = await qmp('query-block-jobs')
    assert.deepEqual(jobs.return, [])
    const nodes = (await qmp('query-named-block-nodes', { flat: true })).return as Array<{ 'node-name': string }>
    assert.ok(!nodes.some(n => n['node-name'].includes('-fl-')), 'a fleecing node is left')
    await cap.stop()
    console.log(`      points ${points.join(' → ')}; ${during} guest writes during the reads`)
  })

  it('fleecing refused (a QEMU without it): the guest is paused around rotation + read, the pause is measured, the point holds', async () => {
    const image = await bootGuest()
    const replica = join(dir, 'replica.vhdx')
    const refusing = async (command: string, args?: Record<string, unknown>): Promise<QmpReply> => {
      const actions = (args?.actions ?? []) as Array<{ type: string }>
      if (command === 'transaction' && actions.some(a => a.type === 'blockdev-backup')) return { error: { class: 'GenericError', desc: "Invalid parameter 'blockdev-backup'" } }
      return await qmp(command, args)
    }
    const told = new ToldRangesSource({}, { blockSizeBytes: 64 * KiB })
    const cap = new QemuPointCapture({ clock: systemClock, qmp: refusing, told }, { file: image, nbdSocket: join(dir, 'nbd.sock'), scratchDir: dir })
    let token: string | null = null
    const pauses: number[] = []
    for (let round = 0; round < 3; round++) {
      if (round > 0) await sleep(300)
      const c = await cap.capture()
      assert.equal(c.mode, 'pause')
      const set = await told.changes(image, token, { view: c.view })
      token = set.token
      const during = await applySlowly(c, set, replica)
      assert.equal(during, 0, 'the guest wrote while paused')
      await c.release(true)
      assert.ok(c.pauseMs > 0)
      pauses.push(c.pauseMs)
      const p = pointOf(slotsOf(replica, dir))
      assert.ok('n' in p, `round ${round}: ${'torn' in p ? p.torn : ''}`)
    }
    assert.match(cap.fleecingRefused ?? '', /blockdev-backup/)
    assert.equal(((await qmp('query-status')).return as { status: string }).status, 'running')
    await rm(replica)
    console.log(`      guest pauses: ${pauses.map(x => `${Math.round(x)} ms`).join(', ')} (rotation + a deliberately slow read)`)
  })
})
