/**
 * QEMU dirty bitmaps for real: a qemu-system-x86_64 (no guest: `-machine none`) holds a VHDX
 * open through -blockdev; writes go through QEMU's block layer (HMP `qemu-io` on the format
 * node, so QEMU allocates blocks and updates the BAT, log and headers itself). The tracker
 * rotates a bitmap on the format node each round and tells a ToldRangesSource the virtual
 * ranges, which it maps to file ranges; those are copied into a replica, which must equal the image byte for byte after every round. Then a
 * failed read is merged back (nothing lost), and a restarted QEMU (bitmap gone) gives one full
 * answer and bitmaps again. Bitmaps at 4 KiB granularity: a 4 KiB write is told as exactly that
 * extent. Skips without qemu-system-x86_64 or qemu-img.
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { open, readFile, truncate, copyFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { systemClock } from '../../../common/clock.ts'
import { qmpCommand } from '../../../daemon/hypervisor/qmp.ts'
import { NbdProtocolError } from '../../../daemon/hypervisor/errors.ts'
import { QemuBitmapTracker, formatNodeOf, nbdDirtyMap, type DirtyMapReader } from '../../../daemon/hypervisor/qemu-bitmaps.ts'
import { ToldRangesSource } from '../../../storage/changes/told.ts'
import type { ChangeSet } from '../../../storage/changes/source.ts'
import { totalBytes } from '../../../storage/changes/range.ts'
import { tempDir } from '../../helpers/tmp.ts'

const has = (cmd: string, arg = '--version'): boolean => spawnSync(cmd, [arg], { stdio: 'ignore' }).status === 0
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const KiB = 1024
const MiB = 1024 * KiB

async function apply (src: string, replica: string, set: ChangeSet): Promise<void> {
  await truncate(replica, set.fileSize)
  const from = await open(src, 'r')
  const to = await open(replica, 'r+')
  try {
    for (const r of set.ranges) {
      const buf = Buffer.alloc(r.length)
      const { bytesRead } = await from.read(buf, 0, r.length, r.offset)
      await to.write(buf, 0, bytesRead, r.offset)
    }
  } finally { await from.close(); await to.close() }
}

describe('integration: QEMU dirty bitmaps → told ranges → byte-identical replica', function () {
  this.timeout(120_000)
  let dir: string
  let cleanup: () => Promise<void>
  let qemu: ChildProcess | undefined
  let qmpSock: string

  before(function () {
    if (!has('qemu-system-x86_64') || !has('qemu-img')) this.skip()
  })
  beforeEach(async () => { ({ dir, cleanup } = await tempDir('vmesh-bitmap-it-')) })
  afterEach(async () => {
    if (qemu !== undefined && qemu.exitCode === null) { qemu.kill('SIGKILL'); await new Promise(resolve => qemu?.once('exit', resolve)) }
    await cleanup()
  })

  async function startQemu (image: string, fmt: string): Promise<void> {
    qmpSock = join(dir, `qmp-${Date.now()}.sock`)
    qemu = spawn('qemu-system-x86_64', ['-machine', 'none', '-nodefaults', '-display', 'none',
      '-blockdev', `driver=file,filename=${image},node-name=file0`,
      '-blockdev', `driver=${fmt},file=file0,node-name=fmt0`,
      '-qmp', `unix:${qmpSock},server=on,wait=off`], { stdio: ['ignore', 'ignore', 'pipe'] })
    const end = Date.now() + 20_000
    while (!existsSync(qmpSock)) {
      if (Date.now() > end || qemu.exitCode !== null) throw new Error('qemu did not start')
      await sleep(20)
    }
  }

  const qmp = async (command: string, args?: Record<string, unknown>): Promise<{ return?: unknown, error?: { class?: string, desc?: string } }> =>
    await qmpCommand(qmpSock, command, args, { clock: systemClock, timeoutMs: 20_000 })

  async function guestWrite (offset: number, length: number, pattern: number): Promise<void> {
    const r = await qmp('human-monitor-command', { 'command-line': `qemu-io fmt0 "write -P 0x${pattern.toString(16)} ${offset} ${length}"` })
    assert.equal(r.error, undefined, JSON.stringify(r.error))
    assert.doesNotMatch(String(r.return), /error|fail/i)
  }

  for (const c of [
    { name: 'dynamic VHDX', fmt: 'vhdx', opts: 'subformat=dynamic,block_size=1M' },
    { name: 'dynamic VHD', fmt: 'vpc', opts: 'subformat=dynamic' }
  ]) {
    it(`${c.name} held by QEMU: every round the replica equals the file; failed reads merge back; a restart rescans once`, async () => {
      const image = join(dir, `disk.${c.fmt}`)
      const replica = join(dir, `replica.${c.fmt}`)
      assert.equal(spawnSync('qemu-img', ['create', '-q', '-f', c.fmt, '-o', c.opts, image, '64M']).status, 0)
      await startQemu(image, c.fmt)
      let failNext = false
      const map: DirtyMapReader = async (socket, exportName, bitmap, o) => {
        if (failNext) { failNext = false; throw new NbdProtocolError('injected failure') }
        return await nbdDirtyMap(socket, exportName, bitmap, o)
      }
      const told = new ToldRangesSource({}, { blockSizeBytes: 4 * KiB })
      const tracker = new QemuBitmapTracker({ clock: systemClock, qmp, told, map }, { file: image, node: 'fmt0', nbdSocket: join(dir, 'nbd.sock'), granularityBytes: 4 * KiB })
      await tracker.start()
      const first = await told.changes(image, null)
      assert.equal(first.full, true)
      await copyFile(image, replica)
      await truncate(replica, 0)
      await apply(image, replica, first)
      let token = first.token

      const writes: Array<Array<[number, number, number]>> = [
        [[0, 4 * KiB, 0x11]], // allocates block 0: BAT, log, headers (first write after open)
        [[40 * MiB + 512, 300 * KiB, 0x22], [63 * MiB, 64 * KiB, 0x23]],
        [[4 * KiB, 4 * KiB, 0x33]], // inside an allocated block: data only
        [] // nothing written: nothing told
      ]
      for (const [round, ws] of writes.entries()) {
        for (const [o, l, p] of ws) await guestWrite(o, l, p)
        const ranges = await tracker.rotate()
        if (ws.length === 0) assert.deepEqual(ranges, [])
        else assert.ok(ranges.length > 0)
        if (round === 2) assert.deepEqual(ranges, [{ offset: 4 * KiB, length: 4 * KiB }], 'a 4 KiB write is one 4 KiB extent at 4 KiB granularity')
        const set = await told.changes(image, token)
        assert.equal(set.full, false, `round ${round}`)
        token = set.token
        await apply(image, replica, set)
        assert.ok((await readFile(image)).equals(await readFile(replica)), `round ${round}: replica differs`)
        assert.ok(totalBytes(set.ranges) < 8 * MiB, `round ${round}: ${totalBytes(set.ranges)} bytes, not a whole-file copy`)
      }
      assert.equal(spawnSync('qemu-img', ['compare', '-q', '-U', '-f', c.fmt, '-F', c.fmt, image, replica]).status, 0)

      // A failed read of the bitmap keeps its changes: they come with the next round's.
      await guestWrite(20 * MiB, 64 * KiB, 0x44)
      failNext = true
      await assert.rejects(tracker.rotate(), { name: 'NbdProtocolError' })
      await guestWrite(30 * MiB, 4 * KiB, 0x55)
      await tracker.rotate()
      const merged = await told.changes(image, token)
      assert.equal(merged.full, false)
      token = merged.token
      await apply(image, replica, merged)
      assert.ok((await readFile(image)).equals(await readFile(replica)), 'after the merge-back round')

      // QEMU restarted: the bitmap is gone; one full answer, then bitmaps again.
      qemu?.kill('SIGKILL')
      await new Promise(resolve => qemu?.once('exit', resolve))
      await startQemu(image, c.fmt)
      await guestWrite(50 * MiB, 4 * KiB, 0x66)
      assert.deepEqual(await tracker.rotate(), [])
      const full = await told.changes(image, token)
      assert.equal(full.full, true)
      assert.equal(told.lastFullReason(image), 'chain-broken')
      token = full.token
      await apply(image, replica, full)
      await guestWrite(51 * MiB, 4 * KiB, 0x77)
      await tracker.rotate()
      const again = await told.changes(image, token)
      assert.equal(again.full, false)
      await apply(image, replica, again)
      assert.ok((await readFile(image)).equals(await readFile(replica)), 'after the restart')
      await tracker.stop()
    })
  }

  it('the test bed\'s TCG guest writing into its VHDX (started with -drive): bitmaps follow it, the replica equals the disk once it is paused', async function () {
    const asm = [join(fileURLToPath(new URL('../../../../shared/testbed/diskwriter.asm', import.meta.url))), '/work/shared/testbed/diskwriter.asm'].find(p => existsSync(p))
    if (asm === undefined || !has('nasm', '-v') || !has('qemu-io')) { this.skip(); return }
    const bin = join(dir, 'diskwriter.bin')
    assert.equal(spawnSync('nasm', ['-f', 'bin', '-o', bin, asm]).status, 0)
    const image = join(dir, 'guest.vhdx')
    const replica = join(dir, 'replica.vhdx')
    assert.equal(spawnSync('qemu-img', ['create', '-q', '-f', 'vhdx', image, '64M']).status, 0)
    assert.equal(spawnSync('qemu-io', ['-f', 'vhdx', '-c', `write -q -s ${bin} 0 512`, image]).status, 0)
    qmpSock = join(dir, 'guest.qmp')
    const serial = join(dir, 'serial.log')
    qemu = spawn('qemu-system-x86_64', ['-m', '32', '-nodefaults', '-no-reboot', '-display', 'none', '-accel', 'tcg',
      '-drive', `file=${image},format=vhdx,if=ide`, '-serial', `file:${serial}`,
      '-qmp', `unix:${qmpSock},server=on,wait=off`], { stdio: ['ignore', 'ignore', 'pipe'] })
    const writesSeen = async (): Promise<number> => ((await readFile(serial, 'utf8').catch(() => '')).match(/W /g) ?? []).length
    const end = Date.now() + 30_000
    while (await writesSeen() < 3) {
      if (Date.now() > end || qemu.exitCode !== null) throw new Error('the guest did not start writing')
      await sleep(50)
    }
    const told = new ToldRangesSource({}, { blockSizeBytes: 64 * KiB })
    const node = await formatNodeOf(qmp, image)
    const tracker = new QemuBitmapTracker({ clock: systemClock, qmp, told }, { file: image, node, nbdSocket: join(dir, 'nbd.sock') })
    await tracker.start()
    const first = await told.changes(image, null) // read while the guest writes: fuzzy, fixed by the rounds after
    await copyFile(image, replica)
    await truncate(replica, 0)
    await apply(image, replica, first)
    let token = first.token
    let rounds = 0
    let sent = 0
    const before = await writesSeen()
    while (await writesSeen() < before + 20 && rounds < 100) {
      await sleep(300)
      await tracker.rotate()
      const set = await told.changes(image, token)
      assert.equal(set.full, false)
      token = set.token
      sent += totalBytes(set.ranges)
      await apply(image, replica, set)
      rounds++
    }
    // Pause the guest (QEMU drains and flushes its writes), then the last round.
    assert.equal((await qmp('stop')).error, undefined)
    await tracker.rotate()
    const last = await told.changes(image, token)
    await apply(image, replica, last)
    assert.ok((await readFile(image)).equals(await readFile(replica)), 'replica differs from the paused guest\'s disk')
    assert.equal(spawnSync('qemu-img', ['compare', '-q', '-U', '-f', 'vhdx', '-F', 'vhdx', image, replica]).status, 0)
    console.log(`      ${await writesSeen() - before} guest writes over ${rounds} rounds: ${sent} bytes sent (file ${(await readFile(image)).length} bytes)`)
    await tracker.stop()
  })
})
