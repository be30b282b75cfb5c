/**
 * qemu-stale.ts: what an earlier daemon process left in QEMU is removed — jobs, then exports,
 * then nodes, then bitmaps (a held fleecing point hides the image from query-block, and a bitmap
 * under an export is busy) — and nothing of the caller's epoch or of anyone else's naming.
 */
import assert from 'node:assert/strict'
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { QmpReply } from '../../../daemon/hypervisor/qmp.ts'
import { removeStaleBitmaps, removeStaleJobsAndNodes, removedAny } from '../../../daemon/hypervisor/qemu-stale.ts'

/** A QEMU with some of our old things, some of the live epoch's, and an operator's. */
function fakeQemu (): { qmp: (c: string, a?: Record<string, unknown>) => Promise<QmpReply>, calls: string[], state: { jobs: string[], exports: string[], nodes: string[], bitmaps: string[] } } {
  const state = {
    jobs: ['vmesh-fl-old1-3', 'vmesh-fl-live-7', 'backup-by-operator'],
    exports: ['vmesh-fl-old1-3', 'vmesh-map-old1-2', 'vmesh-fl-live-7', 'operator-export'],
    nodes: ['vmesh-fl-old1-3', 'vmesh-fl-live-7', 'fmt0', 'file0'],
    bitmaps: ['vmesh-old1-5', 'vmesh-p-old1-4', 'vmesh-p-live-8', 'operator-bitmap']
  }
  const calls: string[] = []
  const drop = (list: string[], x: unknown): void => { const i = list.indexOf(x as string); if (i >= 0) list.splice(i, 1) }
  const qmp = async (c: string, a: Record<string, unknown> = {}): Promise<QmpReply> => {
    switch (c) {
      case 'query-block-jobs': return { return: state.jobs.map(device => ({ device })) }
      case 'query-block-exports': return { return: state.exports.map(id => ({ id })) }
      case 'query-named-block-nodes': return { return: state.nodes.map(n => ({ 'node-name': n, ...(n === 'fmt0' ? { 'dirty-bitmaps': state.bitmaps.map(name => ({ name })) } : {}) })) }
      case 'block-job-cancel': calls.push(`cancel ${String(a.device)}`); drop(state.jobs, a.device); return { return: {} }
      case 'block-export-del':
        calls.push(`export-del ${String(a.id)}`)
        if (state.jobs.includes(a.id as string)) return { error: { class: 'GenericError', desc: 'node busy' } }
        drop(state.exports, a.id); return { return: {} }
      case 'blockdev-del':
        calls.push(`del ${String(a['node-name'])}`)
        if (state.exports.includes(a['node-name'] as string)) return { error: { class: 'GenericError', desc: 'node in use' } }
        drop(state.nodes, a['node-name']); return { return: {} }
      case 'block-dirty-bitmap-remove': calls.push(`bitmap ${String(a.name)}`); drop(state.bitmaps, a.name); return { return: {} }
    }
    return { error: { class: 'CommandNotFound', desc: c } }
  }
  return { qmp, calls, state }
}

describe('hypervisor/qemu-stale', () => {
  it('removes an earlier epoch\'s jobs, exports, nodes, scratch files and bitmaps, in that order; keeps the live epoch\'s and others\'', async () => {
    const q = fakeQemu()
    const dir = await mkdtemp(join(tmpdir(), 'vmesh-stale-'))
    try {
      for (const f of ['vmesh-fl-old1-3.qcow2', 'vmesh-empty-old1-100.qcow2', 'vmesh-fl-live-7.qcow2', 'notes.txt']) await writeFile(join(dir, f), 'x')
      const r = await removeStaleJobsAndNodes(q.qmp, { prefix: 'vmesh', keepEpoch: 'live', scratchDir: dir }, async () => {})
      await removeStaleBitmaps(q.qmp, { prefix: 'vmesh', keepEpoch: 'live', formatNode: 'fmt0' }, r)
      assert.deepEqual(q.state, {
        jobs: ['vmesh-fl-live-7', 'backup-by-operator'],
        exports: ['vmesh-fl-live-7', 'operator-export'],
        nodes: ['vmesh-fl-live-7', 'fmt0', 'file0'],
        bitmaps: ['vmesh-p-live-8', 'operator-bitmap']
      })
      assert.deepEqual(q.calls, ['cancel vmesh-fl-old1-3', 'export-del vmesh-fl-old1-3', 'export-del vmesh-map-old1-2', 'del vmesh-fl-old1-3', 'bitmap vmesh-old1-5', 'bitmap vmesh-p-old1-4'])
      assert.deepEqual((await readdir(dir)).sort(), ['notes.txt', 'vmesh-fl-live-7.qcow2'])
      assert.deepEqual(r.files.sort(), ['vmesh-empty-old1-100.qcow2', 'vmesh-fl-old1-3.qcow2'])
      assert.equal(removedAny(r), true)
    } finally { await rm(dir, { recursive: true, force: true }) }
  })

  it('without a live epoch (a new bitmap tracker: nothing of ours outlives a round) every one of ours goes; a clean QEMU costs three queries', async () => {
    const q = fakeQemu()
    const r = await removeStaleJobsAndNodes(q.qmp, { prefix: 'vmesh' }, async () => {})
    assert.deepEqual(r.jobs.sort(), ['vmesh-fl-live-7', 'vmesh-fl-old1-3'])
    assert.deepEqual(q.state.nodes, ['fmt0', 'file0'])
    const again = await removeStaleJobsAndNodes(q.qmp, { prefix: 'vmesh' }, async () => {})
    assert.equal(removedAny(again), false)
  })
})
