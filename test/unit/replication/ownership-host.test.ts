import assert from 'node:assert/strict'
import { silentLogger } from '../../../daemon/log.ts'
import { ReplicationOwnershipHost } from '../../../daemon/replication/ownership-host.ts'
import type { ReplicaSeam } from '../../../daemon/replication/seam.ts'
import type { ReplicaSummary } from '../../../daemon/replication/types.ts'
import type { GenerationRef } from '../../../daemon/ownership/types.ts'
import { defaultVmConfig } from '../../../config/load.ts'

/** A seam over an in-memory list of replicas; `change(vm)` is replication's event. */
function fakeSeam (): { seam: ReplicaSeam, replicas: ReplicaSummary[], change: (vm: string) => void, calls: string[] } {
  const replicas: ReplicaSummary[] = []
  const listeners = new Set<(vm: string) => void>()
  const calls: string[] = []
  const seam: ReplicaSeam = {
    replicaSummaries: (vm) => replicas.filter(r => vm === undefined || r.vm === vm),
    onReplicaChange: (fn) => { listeners.add(fn); return () => { listeners.delete(fn) } },
    finalizeForStart: async (vm, o) => { calls.push(`finalize ${vm} ${o.generation ?? '-'} ${o.point ?? '-'}`); return replicas.some(r => r.vm === vm) ? { generation: o.generation ?? 1, rolledBack: 0, fuzzy: false } : null },
    replicaFilesForStart: async (vm) => replicas.some(r => r.vm === vm) ? { disks: ['/r/d.vhdx'], files: [], dir: '/r' } : undefined,
    finalizedFiles: async () => undefined,
    seedFromLocalCopy: async (vm, owner, home) => { calls.push(`seed ${vm} ${owner} ${home?.length ?? 0}`); return undefined },
    removeSupersededReplica: async (vm, source) => {
      calls.push(`remove ${vm} ${source}`)
      const i = replicas.findIndex(r => r.vm === vm && r.source === source)
      if (i < 0 || replicas[i]!.finalized) return false
      replicas.splice(i, 1)
      return true
    },
    shipFinal: async () => 7,
    setSourceVms: async (names) => { calls.push(`source ${JSON.stringify(names)}`) },
    setAdoptedVms: async (vms) => { calls.push(`adopt ${vms.length}`) }
  }
  return { seam, replicas, change: (vm) => { for (const fn of listeners) fn(vm) }, calls }
}

describe('replication/ownership-host (the seam, seen from ownership)', () => {
  const make = (f: ReturnType<typeof fakeSeam>, reported: Array<[string, GenerationRef | null]>): ReplicationOwnershipHost => new ReplicationOwnershipHost({
    log: silentLogger(),
    replication: f.seam,
    ownership: { replicaApplied: (vm, g) => { reported.push([vm, g]) }, specOf: () => undefined }
  }, { node: 'b', runDir: '/run', vms: [{ ...defaultVmConfig('home1'), disks: ['/v/home1.vhdx'], replicateTo: ['a'] }], hostPeers: ['a'] })

  it('reports replica generations on replication events (no polling), only when they change, tagged with the owner epoch', async () => {
    const f = fakeSeam()
    const reported: Array<[string, GenerationRef | null]> = []
    f.replicas.push({ vm: 'vm1', source: 'a', appliedGeneration: 3, appliedConsistentGeneration: 2, seeding: false, finalized: false })
    const h = make(f, reported)
    h.start()
    assert.deepEqual(reported, [['vm1', { epoch: 0, generation: 2 }]])
    f.change('vm1')
    assert.equal(reported.length, 1, 'same generation: not reported again')
    f.replicas[0] = { ...f.replicas[0]!, appliedGeneration: 5, appliedConsistentGeneration: 5 }
    f.change('vm1')
    assert.deepEqual(reported[1], ['vm1', { epoch: 0, generation: 5 }])
    h.ownerChanged('vm1', 'a', 4)
    assert.deepEqual(reported[2], ['vm1', { epoch: 4, generation: 5 }])
    h.stop()
    f.replicas[0] = { ...f.replicas[0]!, appliedConsistentGeneration: 6 }
    f.change('vm1')
    assert.equal(reported.length, 3, 'no reports after stop')
  })

  it('a seeding replica counts as none; a VM without replicas is not reported', () => {
    const f = fakeSeam()
    const reported: Array<[string, GenerationRef | null]> = []
    f.replicas.push({ vm: 'vm2', source: 'a', appliedGeneration: 0, appliedConsistentGeneration: 0, seeding: true, finalized: false })
    make(f, reported).start()
    assert.deepEqual(reported, [['vm2', null]])
  })

  it('starts a home VM from its files, another from the replica; no replica is NoReplicaError', async () => {
    const f = fakeSeam()
    const h = make(f, [])
    assert.deepEqual(await h.filesForStart('home1'), { disks: ['/v/home1.vhdx'], files: [], dir: '/run/home1' })
    await assert.rejects(h.filesForStart('vm9'), { name: 'NoReplicaError', code: 'ERR_NO_REPLICA' })
    f.replicas.push({ vm: 'vm9', source: 'a', appliedGeneration: 1, appliedConsistentGeneration: 1, seeding: false, finalized: false })
    assert.equal((await h.filesForStart('vm9')).dir, '/r')
  })

  it('finalize goes through the seam; no replica of a foreign VM is NoReplicaError, of a home VM nothing', async () => {
    const f = fakeSeam()
    const h = make(f, [])
    await h.finalize('home1', null)
    await assert.rejects(h.finalize('vm9', { epoch: 1, generation: 4 }), { name: 'NoReplicaError' })
    f.replicas.push({ vm: 'vm9', source: 'a', appliedGeneration: 4, appliedConsistentGeneration: 4, seeding: false, finalized: false })
    await h.finalize('vm9', { epoch: 1, generation: 4 }, '3')
    await h.settled()
    assert.deepEqual(f.calls.filter(c => c.startsWith('finalize')), ['finalize home1 - -', 'finalize vm9 4 -', 'finalize vm9 4 3'])
  })

  it('a move to another owner seeds from the home copy, then re-derives what this node sources', async () => {
    const f = fakeSeam()
    const h = make(f, [])
    h.ownerChanged('home1', 'a', 2)
    await h.settled()
    assert.deepEqual(f.calls, ['seed home1 a 1', 'adopt 0', 'source []'])
  })

  it('a former owner\'s replica goes once the current owner\'s replica here is whole; never before, never a finalized one, never while this node owns the VM', async () => {
    const f = fakeSeam()
    const reported: Array<[string, GenerationRef | null]> = []
    const h = make(f, reported)
    h.start()
    // replicas of vm1 from a (its first owner) and c (a finalized leftover: a VM may run from it)
    f.replicas.push({ vm: 'vm1', source: 'a', appliedGeneration: 40, appliedConsistentGeneration: 40, seeding: false, finalized: false })
    f.replicas.push({ vm: 'vm1', source: 'c', appliedGeneration: 9, appliedConsistentGeneration: 9, seeding: false, finalized: true })
    h.ownerChanged('vm1', 'x', 5)
    await h.settled()
    // x's replica is still seeding: a's is the only usable copy here
    f.replicas.push({ vm: 'vm1', source: 'x', appliedGeneration: 0, appliedConsistentGeneration: 0, seeding: true, finalized: false })
    f.change('vm1')
    await h.settled()
    assert.equal(f.calls.filter(c => c.startsWith('remove')).length, 0)
    assert.equal(f.replicas.length, 3)
    // x's seed completes: a's replica is superseded
    f.replicas[2] = { ...f.replicas[2]!, appliedGeneration: 1, appliedConsistentGeneration: 1, seeding: false }
    f.change('vm1')
    await h.settled()
    assert.deepEqual(f.calls.filter(c => c.startsWith('remove')), ['remove vm1 a'])
    assert.deepEqual(f.replicas.map(r => r.source).sort(), ['c', 'x'])
    assert.deepEqual(reported[reported.length - 1], ['vm1', { epoch: 5, generation: 1 }])
    // this node owning the VM: nothing is removed
    f.replicas.push({ vm: 'vm1', source: 'y', appliedGeneration: 3, appliedConsistentGeneration: 3, seeding: false, finalized: false })
    h.ownerChanged('vm1', 'b', 6)
    f.change('vm1')
    await h.settled()
    assert.deepEqual(f.calls.filter(c => c.startsWith('remove')), ['remove vm1 a'])
  })

  it('owner A → B → A: the replica kept from A\'s earlier tenure does not supersede B\'s until A\'s first generation lands', async () => {
    const f = fakeSeam()
    const h = make(f, [])
    h.start()
    f.replicas.push({ vm: 'vm1', source: 'a', appliedGeneration: 40, appliedConsistentGeneration: 40, seeding: false, finalized: false })
    h.ownerChanged('vm1', 'a', 1)
    h.ownerChanged('vm1', 'x', 2)
    f.replicas.push({ vm: 'vm1', source: 'x', appliedGeneration: 0, appliedConsistentGeneration: 0, seeding: true, finalized: false })
    f.change('vm1')
    await h.settled()
    // x's replica becomes whole just as a owns the VM again
    f.replicas[1] = { ...f.replicas[1]!, appliedGeneration: 12, appliedConsistentGeneration: 12, seeding: false }
    h.ownerChanged('vm1', 'a', 3)
    f.change('vm1')
    await h.settled()
    // a's replica here still holds what a sent before x took over; x's holds the newer data
    assert.deepEqual(f.calls.filter(c => c.startsWith('remove')), [])
    // a's first generation since it took the VM back: now x's replica is superseded
    f.replicas[0] = { ...f.replicas[0]!, appliedGeneration: 41, appliedConsistentGeneration: 41 }
    f.change('vm1')
    await h.settled()
    assert.deepEqual(f.calls.filter(c => c.startsWith('remove')), ['remove vm1 x'])
  })
})
