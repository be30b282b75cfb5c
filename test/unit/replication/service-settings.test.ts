/**
 * ReplicationService keeps the whole config slice it is given: the constructor once dropped
 * `hypervisorDriver` (only a reload set it), so `changeSource: auto` never chose QEMU dirty
 * bitmaps in a freshly started daemon. And a VM name with a space (allowed, common on Hyper-V)
 * gets a LevelDB sublevel LevelDB accepts.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { ReplicationService } from '../../../daemon/replication/service.ts'
import { vmSublevelName } from '../../../daemon/replication/vm-source.ts'
import { binarySublevel, openBinaryLevel } from '../../../storage/manifest/db.ts'
import { ManualClock } from '../../../common/clock.ts'
import { tempDir } from '../../helpers/tmp.ts'
import type { Logger } from '../../../daemon/log.ts'

const silent = (): Logger => {
  const l: Record<string, unknown> = {}
  for (const k of ['trace', 'debug', 'info', 'warn', 'error', 'fatal']) l[k] = () => {}
  l.child = () => l
  return l as unknown as Logger
}

describe('replication service: config slice and VM sublevels', () => {
  it('the constructor keeps hypervisorDriver (auto → bitmaps under the qemu driver)', async () => {
    const { dir } = await tempDir()
    const svc = new ReplicationService({ clock: new ManualClock(), log: silent(), libp2p: {} as never }, {
      nodeName: 'hv-a', dataDir: join(dir, 'data'), peers: [], vms: [], scan: { budgetBytesPerSec: Infinity }, hypervisorDriver: 'qemu'
    })
    assert.equal(svc.settings().hypervisorDriver, 'qemu')
  })

  it('a VM name with spaces and parentheses has a sublevel LevelDB accepts; other names keep theirs', async () => {
    const db = await openBinaryLevel(join((await tempDir()).dir, 'db'))
    try {
      assert.throws(() => binarySublevel(db, 'vm-web 01'), 'the raw name is refused (the bug)')
      const sub = binarySublevel(db, vmSublevelName('web 01 (prod)'))
      await sub.put(new Uint8Array([1]), new Uint8Array([2]))
      assert.deepEqual([...(await sub.get(new Uint8Array([1]))) ?? []], [2])
      assert.equal(vmSublevelName('web01'), 'vm-web01')
      assert.equal(vmSublevelName('db-1.prod_(a)'), 'vm-db-1.prod_(a)')
      assert.notEqual(vmSublevelName('web 01'), vmSublevelName('web01'))
    } finally { await db.close() }
  })
})
