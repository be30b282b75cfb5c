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
    assert.deepEqual(r.status(), { live: false, scanAnswers: 1, toldAnswers: 0 })
    const c = await r.source.changes(conf, null)
    assert.equal(c.full, true)
    assert.equal(r.lastAnswer(conf), undefined)
    await r.stop()
  })
})
