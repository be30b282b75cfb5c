import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { QemuBitmapTracker, parseDirtyMap } from '../../../daemon/hypervisor/qemu-bitmaps.ts'
import type { Tell } from '../../../storage/changes/told.ts'

describe('qemu dirty bitmaps: nbdinfo map and the rotation protocol', () => {
  it('parses nbdinfo --json --map output: dirty extents merged, clean ones dropped', () => {
    const out = JSON.stringify([
      { offset: 0, length: 65536, type: 1, description: 'dirty' },
      { offset: 65536, length: 65536, type: 1, description: 'dirty' },
      { offset: 131072, length: 1048576, type: 0, description: 'clean' },
      { offset: 1179648, length: 512, type: 1, description: 'dirty' }
    ])
    assert.deepEqual(parseDirtyMap(out), [{ offset: 0, length: 131072 }, { offset: 1179648, length: 512 }])
  })

  it('refuses output it does not understand (a wrong "clean" would lose writes)', () => {
    for (const bad of ['not json', '{}', JSON.stringify([{ offset: -1, length: 1, type: 1 }]), JSON.stringify([{ offset: 0, length: 1 }])]) {
      assert.throws(() => parseDirtyMap(bad), { name: 'HypervisorOutputError' })
    }
  })

  it('rotates in one transaction, tells the chain, merges back on a failed read, restarts the chain when the bitmap is gone', async () => {
    const calls: Array<{ command: string, args?: Record<string, unknown> }> = []
    const tells: Tell[] = []
    let lost = false
    let nbdFails = false
    const tracker = new QemuBitmapTracker({
      clock: new ManualClock(),
      qmp: async (command, args) => {
        calls.push({ command, ...(args !== undefined ? { args } : {}) })
        if (command === 'transaction' && lost) { lost = false; return { error: { class: 'GenericError', desc: "Dirty bitmap 'x' not found" } } }
        return { return: {} }
      },
      told: { tell: (_f, t) => { tells.push({ ...t, ranges: [...t.ranges] }) } },
      run: async () => nbdFails
        ? { code: 1, stdout: '', stderr: 'boom', truncated: false }
        : { code: 0, stdout: JSON.stringify([{ offset: 0, length: 4096, type: 1 }]), stderr: '', truncated: false }
    }, { file: '/vms/a.vhdx', node: 'fmt0', nbdSocket: '/run/nbd.sock' })
    await tracker.start()
    const b1 = tracker.bitmap
    assert.deepEqual(tells[0], { since: null, until: b1, ranges: [], space: 'virtual' })
    await tracker.rotate()
    const b2 = tracker.bitmap
    const tx = calls.find(c => c.command === 'transaction')
    assert.deepEqual(tx?.args, { actions: [
      { type: 'block-dirty-bitmap-add', data: { node: 'fmt0', name: b2, persistent: false } },
      { type: 'block-dirty-bitmap-disable', data: { node: 'fmt0', name: b1 } }
    ] })
    assert.deepEqual(tells[1], { since: b1, until: b2, ranges: [{ offset: 0, length: 4096 }], space: 'virtual' })
    assert.ok(calls.some(c => c.command === 'block-export-del'), 'the export is removed')

    nbdFails = true
    await assert.rejects(tracker.rotate(), { code: 'ERR_HYPERVISOR_COMMAND_FAILED' })
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
