import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { NbdProtocolError } from '../../../daemon/hypervisor/errors.ts'
import { QemuBitmapTracker, bitmapGranularity } from '../../../daemon/hypervisor/qemu-bitmaps.ts'
import type { Tell } from '../../../storage/changes/told.ts'

describe('qemu dirty bitmaps: granularity and the rotation protocol', () => {
  it('bitmap granularity is the VM\'s block size; QEMU-impossible values are a RangeError before any QMP', () => {
    assert.equal(bitmapGranularity(4096), 4096)
    assert.equal(bitmapGranularity(65536), 65536)
    assert.equal(bitmapGranularity(4 * 1024 * 1024), 4 * 1024 * 1024)
    for (const bad of [0, 256, 3000, 65537, 2 ** 32, Number.NaN]) assert.throws(() => bitmapGranularity(bad), { name: 'RangeError' })
  })

  it('rotates in one transaction, tells the chain, merges back on a failed read, restarts the chain when the bitmap is gone', async () => {
    const calls: Array<{ command: string, args?: Record<string, unknown> }> = []
    const tells: Tell[] = []
    let lost = false
    let nbdFails = false
    const maps: Array<{ socket: string, exportName: string, bitmap: string }> = []
    const tracker = new QemuBitmapTracker({
      clock: new ManualClock(),
      qmp: async (command, args) => {
        calls.push({ command, ...(args !== undefined ? { args } : {}) })
        if (command === 'transaction' && lost) { lost = false; return { error: { class: 'GenericError', desc: "Dirty bitmap 'x' not found" } } }
        return { return: {} }
      },
      told: { tell: (_f, t) => { tells.push({ ...t, ranges: [...t.ranges] }) } },
      map: async (socket, exportName, bitmap) => {
        maps.push({ socket, exportName, bitmap })
        if (nbdFails) throw new NbdProtocolError('boom')
        return [{ offset: 4096, length: 4096 }]
      }
    }, { file: '/vms/a.vhdx', node: 'fmt0', nbdSocket: '/run/nbd.sock', granularityBytes: 4096 })
    await tracker.start()
    const b1 = tracker.bitmap
    assert.deepEqual(tells[0], { since: null, until: b1, ranges: [], space: 'virtual' })
    assert.deepEqual(calls.find(c => c.command === 'block-dirty-bitmap-add')?.args, { node: 'fmt0', name: b1, persistent: false, granularity: 4096 })
    await tracker.rotate()
    const b2 = tracker.bitmap
    const tx = calls.find(c => c.command === 'transaction')
    assert.deepEqual(tx?.args, { actions: [
      { type: 'block-dirty-bitmap-add', data: { node: 'fmt0', name: b2, persistent: false, granularity: 4096 } },
      { type: 'block-dirty-bitmap-disable', data: { node: 'fmt0', name: b1 } }
    ] })
    assert.deepEqual(tells[1], { since: b1, until: b2, ranges: [{ offset: 4096, length: 4096 }], space: 'virtual' }, 'the extents exactly as the map gave them')
    const exp = calls.find(c => c.command === 'block-export-add')?.args
    assert.deepEqual(maps[0], { socket: '/run/nbd.sock', exportName: exp?.name, bitmap: b1 }, 'the closed bitmap is read through the export that exposes it')
    assert.deepEqual(exp?.bitmaps, [b1])
    assert.ok(calls.some(c => c.command === 'block-export-del'), 'the export is removed')

    nbdFails = true
    await assert.rejects(tracker.rotate(), { name: 'NbdProtocolError' })
    const b3 = tracker.bitmap
    assert.deepEqual(calls.find(c => c.command === 'block-dirty-bitmap-merge')?.args, { node: 'fmt0', target: b3, bitmaps: [b2] })
    assert.equal(tells.length, 2, 'nothing told for the failed round')
    nbdFails = false
    await tracker.rotate()
    assert.equal(tells[2]?.since, b2, 'the chain continues from the last point told')

    lost = true
    await tracker.rotate()
    assert.equal(tells[3]?.since, null, 'a lost bitmap starts a new chain: the next answer is full')
  })
})
