/**
 * VmSource.changed(ms, signal): a sender's idle wait. A signal that aborted before the call
 * fires no 'abort' event, so the wait used to run its full `ms` — forever under a virtual
 * clock: a VmSource whose sender was between two waits when stop() aborted it never stopped
 * (consistency-point.test.ts timed out in close() under load).
 */
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ManualClock } from '../../../common/clock.ts'
import { silentLogger } from '../../../daemon/log.ts'
import { VmSource } from '../../../daemon/replication/vm-source.ts'
import { defaultVmConfig } from '../../../config/load.ts'
import { openBinaryLevel } from '../../../storage/manifest/db.ts'
import { tempDir } from '../../helpers/tmp.ts'

describe('replication/VmSource.changed (a sender\'s idle wait)', () => {
  it('returns at once for a signal that aborted before the call, and on an abort during it, without time passing', async () => {
    const t = await tempDir('vmesh-vm-source-changed-')
    const file = join(t.dir, 'vm1.img')
    await writeFile(file, Buffer.alloc(64 * 1024))
    const clock = new ManualClock(0, Date.now())
    const db = await openBinaryLevel(join(t.dir, 'db'))
    const src = new VmSource({ clock, log: silentLogger(), db, dial: async () => { throw new Error('no peers here') } }, { vm: { ...defaultVmConfig('vm1'), files: [file], replicateTo: [] }, nodeName: 'a', watch: false })
    try {
      const race = async (p: Promise<void>): Promise<boolean> => await Promise.race([p.then(() => true), new Promise<boolean>(resolve => setTimeout(() => { resolve(false) }, 2_000))])
      assert.equal(await race(src.changed(60_000, AbortSignal.abort())), true, 'an earlier abort')
      const ac = new AbortController()
      const waiting = src.changed(60_000, ac.signal)
      ac.abort()
      assert.equal(await race(waiting), true, 'an abort during the wait')
      assert.equal(clock.now(), 0)
    } finally { await db.close(); await t.cleanup() }
  })
})
