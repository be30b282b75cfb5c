/**
 * RctSourceRunner's round logic against a scripted RCT (no processes): one checkpoint per VM
 * round shared by its disks, the held checkpoint merged at the next round, the reference
 * points asked from, drives that are not configured disks, the VM not running, a corrupt state
 * file. Raw files stand in for disks (virtual offsets = file offsets).
 */
import assert from 'node:assert/strict'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Level } from 'level'
import type { HypervRct, RctCommit, RctGeneration } from '../../../daemon/hypervisor/hyperv-rct.ts'
import { HypervisorOutputError } from '../../../daemon/hypervisor/errors.ts'
import type { Logger } from '../../../daemon/log.ts'
import { RctSourceRunner } from '../../../daemon/replication/rct-source-runner.ts'
import { HashScanSource } from '../../../storage/changes/hash-scan.ts'
import { Manifest } from '../../../storage/manifest/manifest.ts'
import { binarySublevel } from '../../../storage/manifest/db.ts'
import { aheadClock, blockContent, tempDb, tempDir, writeAt, KiB, type TempDir } from '../changes/helpers.ts'

const VM = '6f9619ff-8b86-d011-b42d-00cf4fc964ff'
const DISK_IDS = ['3f2504e0-4f89-11d3-9a0c-0305e82c3301', '7c9e6679-7425-40de-944b-e07fc1f90ae7', '16fd2706-8baf-433b-82eb-8c7fada847da']

type Call = { op: 'begin', refs: Record<string, string> } | { op: 'commit', snapshot: string, previous: string | null } | { op: 'abort', snapshot: string }

describe('replication/RctSourceRunner (scripted RCT)', function () {
  this.timeout(20_000)
  let dir: TempDir
  let db: Level<Uint8Array, Uint8Array>
  beforeEach(async () => { dir = await tempDir(); db = await tempDb(dir.path) })
  afterEach(async () => { await db.close(); await dir.cleanup() })

  /** A scripted Hyper-V: `changed[disk]` is what the next begin reports for a disk with a reference point. */
  function scripted (paths: string[]): { rct: Pick<HypervRct, 'begin' | 'commit' | 'abort'>, calls: Call[], changed: Map<string, Array<{ offset: number, length: number }>>, fail: { begin?: Error, commit?: Error } } {
    const calls: Call[] = []
    const changed = new Map<string, Array<{ offset: number, length: number }>>()
    const fail: { begin?: Error, commit?: Error } = {}
    let n = 0
    const rct = {
      begin: async (vmId: string, _g: number, refs: Record<string, string>): Promise<RctGeneration> => {
        calls.push({ op: 'begin', refs: { ...refs } })
        if (fail.begin !== undefined) { const e = fail.begin; delete fail.begin; throw e }
        n++
        return {
          vmId,
          snapshotId: `snap-${n}`,
          disks: paths.map((p, i) => {
            const id = DISK_IDS[i] as string
            const rp = refs[id] ?? null
            return { readFrom: p, virtualSize: 256 * KiB, diskId: id, referencePoint: rp, ranges: rp !== null ? changed.get(p) ?? [] : [], full: rp === null }
          })
        }
      },
      commit: async (gen: RctGeneration, previous: string | null): Promise<RctCommit> => {
        calls.push({ op: 'commit', snapshot: gen.snapshotId, previous })
        if (fail.commit !== undefined) { const e = fail.commit; delete fail.commit; throw e }
        return { referencePointId: `rp-${gen.snapshotId}`, captures: gen.disks.map(d => ({ readFrom: d.readFrom, referencePoint: d.referencePoint, ranges: d.ranges, newReferencePoint: `rct-${d.diskId.slice(0, 4)}-${gen.snapshotId}`, full: d.full })) }
      },
      abort: async (gen: Pick<RctGeneration, 'snapshotId'>): Promise<void> => { calls.push({ op: 'abort', snapshot: gen.snapshotId }) }
    }
    return { rct, calls, changed, fail }
  }

  const logs: string[] = []
  const log = { info: () => {}, debug: () => {}, error: () => {}, warn: (_o: unknown, msg: string) => { logs.push(msg) } } as unknown as Logger

  function make (disks: string[], rct: Pick<HypervRct, 'begin' | 'commit' | 'abort'>, vmId: () => Promise<string | undefined>, stateFile = join(dir.path, 'rct.json')): RctSourceRunner {
    const clock = aheadClock()
    const hashScan = new HashScanSource({ manifest: new Manifest(binarySublevel(db, 'manifest')), clock }, { blockSizeBytes: 4 * KiB })
    return new RctSourceRunner({ clock, log, hashScan, rct, vmId }, { vm: 'web01', disks, blockSizeBytes: 4 * KiB, stateFile })
  }

  it('one checkpoint per VM round for all its disks; the held one merged at the next round; RCT ids asked from there', async () => {
    const a = join(dir.path, 'a.raw')
    const b = join(dir.path, 'b.raw')
    const other = join(dir.path, 'not-configured.raw')
    for (const p of [a, b, other]) await writeFile(p, blockContent(256 * KiB, 1))
    const s = scripted([a, b, other])
    const r = make([a, b], s.rct, async () => VM)

    const ta = await r.source.changes(a, null)
    const tb = await r.source.changes(b, null)
    assert.deepEqual(s.calls.map(c => c.op), ['begin'], 'disk b was answered from the checkpoint disk a\'s round took')
    assert.deepEqual((s.calls[0] as { refs: unknown }).refs, {})
    assert.equal(r.lastAnswer(a), 'gap-scan')
    assert.equal(r.lastAnswer(b), 'gap-scan')
    assert.equal(r.heldCheckpoint, 'snap-1')

    await writeAt(a, 8 * KiB, blockContent(4 * KiB, 7))
    s.changed.set(a, [{ offset: 8 * KiB, length: 4 * KiB }])
    const ta2 = await r.source.changes(a, ta.token)
    assert.deepEqual(s.calls.slice(1), [
      { op: 'commit', snapshot: 'snap-1', previous: null },
      { op: 'begin', refs: { [DISK_IDS[0] as string]: 'rct-3f25-snap-1', [DISK_IDS[1] as string]: 'rct-7c9e-snap-1', [DISK_IDS[2] as string]: 'rct-16fd-snap-1' } }
    ])
    assert.equal(r.lastAnswer(a), 'told')
    assert.deepEqual(ta2.ranges, [{ offset: 8 * KiB, length: 4 * KiB }])
    const tb2 = await r.source.changes(b, tb.token)
    assert.equal(r.lastAnswer(b), 'told')
    assert.deepEqual(tb2.ranges, [])
    assert.equal(s.calls.length, 3)

    // the persisted state names the held checkpoint and the reference point
    const st = JSON.parse(await readFile(join(dir.path, 'rct.json'), 'utf8'))
    assert.equal(st.held.snapshotId, 'snap-2')
    assert.equal(st.referencePointId, 'rp-snap-1')
    assert.equal(st.vmId, VM)

    // the next commit destroys the previous reference point
    await r.source.changes(a, ta2.token)
    assert.deepEqual(s.calls[3], { op: 'commit', snapshot: 'snap-2', previous: 'rp-snap-1' })
    // a drive that is not one of the configured disks is never told, and other files go to the hash scan
    const callsBefore = s.calls.length
    assert.equal((await r.source.changes(other, null)).full, true)
    assert.equal(r.lastAnswer(other), undefined)
    assert.equal(s.calls.length, callsBefore, 'no RCT round for a file that is not a configured disk')
    await r.stop()
    assert.deepEqual(s.calls.at(-1), { op: 'commit', snapshot: 'snap-3', previous: 'rp-snap-2' })
    assert.equal(r.heldCheckpoint, null)
  })

  it('a failed commit merges the checkpoint without a reference point and the round falls to the hash scan; the next asks from the older reference point', async () => {
    const a = join(dir.path, 'a.raw')
    await writeFile(a, blockContent(256 * KiB, 1))
    const s = scripted([a])
    const r = make([a], s.rct, async () => VM)
    let t = (await r.source.changes(a, null)).token
    t = (await r.source.changes(a, t)).token // snap-1 → rp-snap-1, snap-2 held
    s.fail.commit = new HypervisorOutputError('RCT commit', 'ReferencePointId missing')
    await writeAt(a, 0, blockContent(4 * KiB, 9))
    const set = await r.source.changes(a, t)
    assert.equal(r.lastAnswer(a), 'idle-scan')
    assert.deepEqual(set.ranges, [{ offset: 0, length: 4 * KiB }], 'the hash scan found the write')
    assert.deepEqual(s.calls.slice(-2), [{ op: 'commit', snapshot: 'snap-2', previous: 'rp-snap-1' }, { op: 'abort', snapshot: 'snap-2' }])
    assert.equal(r.status().failedRounds, 1)
    await r.source.changes(a, set.token)
    assert.equal(r.lastAnswer(a), 'told', 'no second scan: the chain goes on')
    assert.deepEqual(s.calls.at(-1), { op: 'begin', refs: { [DISK_IDS[0] as string]: 'rct-3f25-snap-1' } }, 'asked from the older reference point: a superset')
    await r.stop()
  })

  it('the VM not running here: a held checkpoint is merged and the hash scan answers; a corrupt state file starts a new chain', async () => {
    const a = join(dir.path, 'a.raw')
    await writeFile(a, blockContent(256 * KiB, 1))
    const s = scripted([a])
    let id: string | undefined = VM
    const r = make([a], s.rct, async () => id)
    const t = (await r.source.changes(a, null)).token
    id = undefined
    await r.source.changes(a, t)
    assert.equal(r.lastAnswer(a), 'idle-scan')
    assert.deepEqual(s.calls.map(c => c.op), ['begin', 'commit'])
    assert.equal(r.status().live, false)

    const bad = join(dir.path, 'bad.json')
    await writeFile(bad, '{"v": 2}')
    const s2 = scripted([a])
    const r2 = make([a], s2.rct, async () => VM, bad)
    await r2.source.changes(a, null)
    assert.equal(r2.lastAnswer(a), 'gap-scan')
    assert.ok(logs.some(m => /RCT state unreadable/.test(m)))
    assert.equal(JSON.parse(await readFile(bad, 'utf8')).v, 1, 'replaced by a valid document')
    await r2.stop()
  })
})
