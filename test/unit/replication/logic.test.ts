import assert from 'node:assert/strict'
import { reconcile, nextGenerationNumber, isConsistentCapture, lagMs, targetStateOf, innerBlocks, type FileCapture } from '../../../daemon/replication/logic.ts'
import type { FileStat } from '../../../storage/changes/file-io.ts'
import { statToRecord } from '../../../storage/changes/file-io.ts'

const st = (mtime: bigint, size = 100): FileStat => ({ size, mtimeNs: mtime, ctimeNs: mtime, ino: 7n, dev: 1n })

describe('replication logic: reconciliation', () => {
  it('acknowledges the in-flight generation the target applied', () => {
    assert.deepEqual(reconcile({ acked: 4, inFlight: 5 }, { appliedGeneration: 5, seeding: null }), { kind: 'ack', generation: 5 })
  })
  it('requeues when the target is at our acknowledged generation', () => {
    assert.deepEqual(reconcile({ acked: 4, inFlight: 5 }, { appliedGeneration: 4, seeding: null }), { kind: 'requeue' })
    assert.deepEqual(reconcile({ acked: 0, inFlight: null }, { appliedGeneration: 0, seeding: null }), { kind: 'requeue' })
  })
  it('resumes our own interrupted seed, and only ours', () => {
    assert.deepEqual(reconcile({ acked: 0, inFlight: 3 }, { appliedGeneration: 0, seeding: { generation: 3 } }), { kind: 'resume-seed', generation: 3 })
    assert.deepEqual(reconcile({ acked: 0, inFlight: 4 }, { appliedGeneration: 0, seeding: { generation: 3 } }), { kind: 'reseed' })
    assert.deepEqual(reconcile({ acked: 2, inFlight: 3 }, { appliedGeneration: 0, seeding: { generation: 3 } }), { kind: 'reseed' })
  })
  it('adopts pre-placed copies for seed: existing (hash-compare every block)', () => {
    assert.deepEqual(reconcile({ acked: 0, inFlight: null }, { appliedGeneration: 0, seeding: { generation: 1 } }, { existing: true }), { kind: 'adopt-seed' })
    assert.deepEqual(reconcile({ acked: 0, inFlight: null }, { appliedGeneration: 0, seeding: { generation: 1 } }), { kind: 'reseed' })
    // a target we acknowledged in an earlier tenure, now seeding from its own pre-placed copy:
    // every block is compared, never a reseed of our non-zero blocks over its data
    assert.deepEqual(reconcile({ acked: 69, inFlight: null }, { appliedGeneration: 0, seeding: { generation: 1 } }, { existing: true }), { kind: 'adopt-seed' })
    assert.deepEqual(reconcile({ acked: 69, inFlight: 1 }, { appliedGeneration: 0, seeding: { generation: 1 } }, { existing: true }), { kind: 'adopt-seed' })
    // our own interrupted seed is still resumed as such
    assert.deepEqual(reconcile({ acked: 0, inFlight: 1 }, { appliedGeneration: 0, seeding: { generation: 1 } }, { existing: true }), { kind: 'resume-seed', generation: 1 })
  })
  it('reseeds a target that lost its replica, rebases one with an unknown history', () => {
    assert.deepEqual(reconcile({ acked: 9, inFlight: null }, { appliedGeneration: 0, seeding: null }), { kind: 'reseed' })
    assert.deepEqual(reconcile({ acked: 9, inFlight: null }, { appliedGeneration: 12, seeding: null }), { kind: 'rebase' })
    assert.deepEqual(reconcile({ acked: 9, inFlight: 10 }, { appliedGeneration: 7, seeding: null }), { kind: 'rebase' })
  })
  it('numbers the next generation above the base and apart from an abandoned seed', () => {
    assert.equal(nextGenerationNumber(5, { kind: 'resume-seed', generation: 3 }, { appliedGeneration: 0, seeding: { generation: 3 } }), 3)
    assert.equal(nextGenerationNumber(5, { kind: 'rebase' }, { appliedGeneration: 12, seeding: null }), 13)
    assert.equal(nextGenerationNumber(3, { kind: 'reseed' }, { appliedGeneration: 0, seeding: { generation: 3 } }), 4)
    assert.equal(nextGenerationNumber(0, { kind: 'requeue' }, { appliedGeneration: 0, seeding: null }), 0)
    // in step with the target: no new number (a restart must not invent a generation)
    assert.equal(nextGenerationNumber(2, { kind: 'requeue' }, { appliedGeneration: 2, seeding: null }), 2)
    assert.equal(nextGenerationNumber(5, { kind: 'ack', generation: 5 }, { appliedGeneration: 5, seeding: null }), 5)
  })
})

describe('replication logic: consistency', () => {
  const quiet = { seqBefore: 3, seqAfter: 3, busyBefore: false, busyAfter: false }
  const file = (m: FileStat | null, before: FileStat, after?: FileStat): FileCapture => ({ manifestStat: m === null ? null : statToRecord(m), scanning: false, before, ...(after !== undefined ? { after } : {}) })

  it('is consistent when every file still has the stat of the last quiet scan', () => {
    assert.equal(isConsistentCapture([file(st(1n), st(1n), st(1n)), file(st(2n), st(2n), st(2n))], quiet), true)
  })
  it('is fuzzy when any file (sent or not) moved, or had no trusted scan', () => {
    assert.equal(isConsistentCapture([file(st(1n), st(1n), st(1n)), file(st(2n), st(2n), st(3n))], quiet), false)
    assert.equal(isConsistentCapture([file(st(1n), st(2n))], quiet), false)
    assert.equal(isConsistentCapture([file(null, st(2n))], quiet), false)
    assert.equal(isConsistentCapture([{ ...file(st(1n), st(1n)), scanning: true }], quiet), false)
  })
  it('is fuzzy when a scan ran or committed meanwhile', () => {
    const f = [file(st(1n), st(1n), st(1n))]
    assert.equal(isConsistentCapture(f, { ...quiet, busyBefore: true }), false)
    assert.equal(isConsistentCapture(f, { ...quiet, busyAfter: true }), false)
    assert.equal(isConsistentCapture(f, { ...quiet, seqAfter: 4 }), false)
  })
})

describe('replication logic: lag and state', () => {
  it('lag is 0 in sync, else the age of the oldest generation the target lacks', () => {
    const created = new Map([[5, 1000], [6, 1500], [7, 2500]])
    assert.equal(lagMs(3000, 7, 7, g => created.get(g)), 0)
    assert.equal(lagMs(3000, 5, 7, g => created.get(g)), 1500)
    assert.equal(lagMs(3000, 6, 7, g => created.get(g)), 500)
    // metadata of a missing generation: the next known one counts
    assert.equal(lagMs(3000, 4, 7, g => created.get(g)), 2000)
  })
  it('target state follows connection, errors, seeding and acknowledgements', () => {
    const base = { connected: true, acked: 7, current: 7, pendingBytes: 0, seeding: false }
    assert.equal(targetStateOf(base), 'in-sync')
    assert.equal(targetStateOf({ ...base, pendingBytes: 1 }), 'behind')
    // a chunked change set: a chunk's ack makes acked = current for a moment (the crash loop's run 30)
    assert.equal(targetStateOf({ ...base, midChangeSet: true }), 'behind')
    assert.equal(targetStateOf({ ...base, acked: 6 }), 'behind')
    assert.equal(targetStateOf({ ...base, seeding: true, acked: 0 }), 'seeding')
    assert.equal(targetStateOf({ ...base, connected: false }), 'disconnected')
    assert.equal(targetStateOf({ ...base, error: 'nack' }), 'error')
  })
  it('inner blocks of a durable range', () => {
    assert.deepEqual(innerBlocks({ offset: 0, length: 65536 * 3 }, 65536), { first: 0, end: 3 })
    assert.deepEqual(innerBlocks({ offset: 100, length: 65536 * 2 }, 65536), { first: 1, end: 2 })
    assert.deepEqual(innerBlocks({ offset: 100, length: 200 }, 65536), { first: 1, end: 1 })
  })
})
