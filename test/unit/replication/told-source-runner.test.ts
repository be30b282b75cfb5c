import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Level } from 'level'
import { ToldSourceRunner, changeSourceKind } from '../../../daemon/replication/told-source-runner.ts'
import { HashScanSource } from '../../../storage/changes/hash-scan.ts'
import { Manifest } from '../../../storage/manifest/manifest.ts'
import { binarySublevel } from '../../../storage/manifest/db.ts'
import type { Logger } from '../../../daemon/log.ts'
import { aheadClock, blockContent, tempDb, tempDir, KiB } from '../changes/helpers.ts'
import type { TempDir } from '../changes/helpers.ts'

describe('replication/changeSourceKind', () => {
  it('auto: bitmaps with a qmp socket or the qemu driver, else the hash scan; explicit choices win', () => {
    assert.equal(changeSourceKind({ changeSource: 'auto' }, 'none'), 'hash-scan')
    assert.equal(changeSourceKind({ changeSource: 'auto' }, 'hyperv'), 'hash-scan')
    assert.equal(changeSourceKind({ changeSource: 'auto' }, 'qemu'), 'qemu-bitmap')
    assert.equal(changeSourceKind({ changeSource: 'auto', qmpPath: '/run/a.qmp' }, 'command'), 'qemu-bitmap')
    assert.equal(changeSourceKind({ changeSource: 'scan' }, 'qemu'), 'hash-scan')
    assert.equal(changeSourceKind({ changeSource: 'qemu-bitmap', qmpPath: '/run/a.qmp' }, 'none'), 'qemu-bitmap')
    assert.equal(changeSourceKind({ changeSource: 'rct' }, 'hyperv'), 'hyperv-rct')
  })
})

describe('replication/ToldSourceRunner without QEMU', function () {
  this.timeout(20_000)
  let dir: TempDir
  let db: Level<Uint8Array, Uint8Array>

  beforeEach(async () => { dir = await tempDir(); db = await tempDb(dir.path) })
  afterEach(async () => { await db.close(); await dir.cleanup() })

  it('no socket, or nobody listening on it: the hash scan answers and status says not live; other files always go to the hash scan', async () => {
    const disk = join(dir.path, 'disk.raw')
    const conf = join(dir.path, 'vm.conf')
    await writeFile(disk, blockContent(4 * KiB, 1))
    await writeFile(conf, 'x')
    const clock = aheadClock()
    const hashScan = new HashScanSource({ manifest: new Manifest(binarySublevel(db, 'manifest')), clock }, { blockSizeBytes: 4 * KiB })
    let socket: string | undefined
    const log = { info: () => {}, warn: () => {}, debug: () => {}, error: () => {} } as unknown as Logger
    const r = new ToldSourceRunner({ clock, log, hashScan, qmpSocket: async () => socket }, { vm: 'a', disks: [disk], blockSizeBytes: 4 * KiB })
    const s1 = await r.source.changes(disk, null)
    assert.equal(r.lastAnswer(disk), 'idle-scan')
    assert.equal(s1.full, true)
    socket = join(dir.path, 'nobody.qmp') // ENOENT
    const s2 = await r.source.changes(disk, s1.token)
    assert.equal(r.lastAnswer(disk), 'idle-scan')
    assert.equal(s2.full, false)
    assert.deepEqual(r.status(), { live: false, scanAnswers: 1, toldAnswers: 0, fleecing: false })
    const c = await r.source.changes(conf, null)
    assert.equal(c.full, true)
    assert.equal(r.lastAnswer(conf), undefined)
    await r.stop()
  })
})

describe('replication/ToldSourceRunner with a (fake) QEMU', function () {
  this.timeout(20_000)
  let dir: TempDir
  let db: Level<Uint8Array, Uint8Array>

  beforeEach(async () => { dir = await tempDir(); db = await tempDb(dir.path) })
  afterEach(async () => { await db.close(); await dir.cleanup() })

  it('one QMP session for the VM, one connection per round (freed after it); bitmaps at the VM\'s block size; the map\'s extents told exactly (4 KiB, not 64 KiB)', async () => {
    const disks = [join(dir.path, 'a.raw'), join(dir.path, 'b.raw')]
    for (const d of disks) await writeFile(d, blockContent(64 * KiB, 1))
    const clock = aheadClock()
    const hashScan = new HashScanSource({ manifest: new Manifest(binarySublevel(db, 'manifest')), clock }, { blockSizeBytes: 4 * KiB })
    const log = { info: () => {}, warn: () => {}, debug: () => {}, error: () => {} } as unknown as Logger
    const links: Array<{ socket: string, closed: boolean, connected: boolean, connects: number }> = []
    const adds: unknown[] = []
    let dirty: Array<{ offset: number, length: number }> = []
    const r = new ToldSourceRunner({
      clock,
      log,
      hashScan,
      qmpSocket: async () => '/run/vm.qmp',
      qmpSession: (socket) => {
        const link = { socket, closed: false, connected: false, connects: 0 }
        links.push(link)
        return {
          close: () => { link.closed = true },
          disconnect: async () => { link.connected = false },
          command: async (command, args) => {
            if (!link.connected) { link.connected = true; link.connects++ }
            if (command === 'query-block') return { return: disks.map((f, i) => ({ inserted: { file: f, 'node-name': `fmt${i}` } })) }
            if (command === 'block-dirty-bitmap-add') adds.push(args)
            if (command === 'transaction') adds.push((args?.actions as Array<{ type: string, data: unknown }>)[0]?.data)
            return { return: {} }
          }
        }
      },
      map: async () => dirty
    }, { vm: 'a', disks, blockSizeBytes: 4 * KiB })
    const first = []
    for (const d of disks) first.push(await r.source.changes(d, null))
    assert.deepEqual(disks.map(d => r.lastAnswer(d)), ['gap-scan', 'gap-scan'], 'a new chain: one hash scan each')
    dirty = [{ offset: 8 * KiB, length: 4 * KiB }, { offset: 40 * KiB, length: 8 * KiB }]
    const second = await r.source.changes(disks[0] as string, (first[0] as { token: string }).token)
    assert.equal(r.lastAnswer(disks[0] as string), 'told')
    assert.equal(second.full, false)
    assert.deepEqual(second.ranges, dirty, 'exactly the dirty extents')
    assert.equal(links.length, 1, 'one QMP session for the VM')
    assert.equal(links[0]?.connected, false, 'the monitor is free between rounds (it serves one client at a time)')
    assert.equal(links[0]?.connects, 3, 'one connection per round, not per command')
    assert.ok(adds.length >= 3 && adds.every(a => (a as { granularity?: number }).granularity === 4 * KiB), JSON.stringify(adds))
    assert.deepEqual(r.status(), { live: true, scanAnswers: 2, toldAnswers: 1, fleecing: false })
    await r.stop()
    assert.equal(links[0]?.closed, true, 'stop closes the link')
  })

  it('a block size QEMU cannot track at is refused at construction (RangeError), not at the first round', () => {
    const clock = aheadClock()
    const hashScan = new HashScanSource({ manifest: new Manifest(binarySublevel(db, 'manifest')), clock }, { blockSizeBytes: 4 * KiB })
    const log = { info: () => {}, warn: () => {}, debug: () => {}, error: () => {} } as unknown as Logger
    assert.throws(() => new ToldSourceRunner({ clock, log, hashScan, qmpSocket: async () => undefined }, { vm: 'a', disks: [], blockSizeBytes: 3000 }), { name: 'RangeError' })
  })
})
