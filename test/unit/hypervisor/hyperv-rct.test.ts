import assert from 'node:assert/strict'
import { join } from 'node:path'
import { HypervDriver } from '../../../daemon/hypervisor/hyperv.ts'
import { mergeRanges, parseBegin, rctAbortScript, rctBeginScript, rctCommitScript } from '../../../daemon/hypervisor/hyperv-rct.ts'
import { ManualClock } from '../../../common/clock.ts'
import { fakeRunner, fakeTransport, fixture, psFail, psOk, type PsReplyLike } from './fake-runner.ts'

const VM = '6f9619ff-8b86-d011-b42d-00cf4fc964ff'
const D1 = '3f2504e0-4f89-11d3-9a0c-0305e82c3301'
const D2 = '7c9e6679-7425-40de-944b-e07fc1f90ae7'
const opOf = (s: string): string => /^# vmesh-op: (\S+)/.exec(s)?.[1] ?? '?'

describe('hypervisor/hyperv RCT change capture (recorded replies)', () => {
  const make = (respond: (script: string) => PsReplyLike): { rct: ReturnType<HypervDriver['rct']>, scripts: string[] } => {
    const { transport, scripts } = fakeTransport(respond)
    const d = new HypervDriver({}, { cwd: '/tmp', stateDir: join('/tmp', 'nonexistent-state'), clock: new ManualClock(), run: fakeRunner(() => { throw new Error('no process') }).run }, transport)
    return { rct: d.rct(), scripts }
  }

  it('first generation: a recovery checkpoint; no reference point → full (one hash scan of the frozen file)', async () => {
    const { rct, scripts } = make(() => psOk(fixture('hyperv/rct-begin-first.json')))
    const g = await rct.begin(VM, 1, {})
    assert.equal(g.snapshotId, 'Microsoft:9E1B4C2A-5D6F-4A7B-8C9D-0E1F2A3B4C5D')
    assert.deepEqual(g.disks, [{ readFrom: 'D:\\Hyper-V\\web 01\\Virtual Hard Disks\\web 01.vhdx', virtualSize: 137438953472, diskId: D1, referencePoint: null, ranges: [], full: true }])
    const s = scripts[0] as string
    assert.equal(opOf(s), 'rct-begin')
    assert.ok(s.includes("$_.Name -eq '6F9619FF-8B86-D011-B42D-00CF4FC964FF'"), 'the VM by its ID, no WQL string building')
    assert.match(s, /-MethodName CreateSnapshot -Arguments @\{ AffectedSystem = \$cs; SnapshotSettings = \$xml; SnapshotType = \[uint16\]32768 \}/)
    assert.ok(s.includes("ElementName = 'vmesh generation 1'"))
    const stale = s.indexOf("-Association Msvm_SnapshotOfVirtualSystem | Where-Object { $_.VirtualSystemType -eq 'Microsoft:Hyper-V:Snapshot:Recovery' -and $_.ElementName -like 'vmesh generation *' }")
    assert.ok(stale > 0 && stale < s.indexOf('-MethodName CreateSnapshot'), 'a checkpoint of ours left behind is merged before a new one is made')
    assert.ok(s.includes('$rps = @{  }'))
  })

  it('next generation: GetVirtualDiskChanges paged over the whole virtual size from each reference point; ranges merged, in virtual-disk offsets; a refused id → full with the reason', async () => {
    const { rct, scripts } = make(() => psOk(fixture('hyperv/rct-begin-changes.json')))
    const g = await rct.begin(VM, 2, { [`{${D1.toUpperCase()}}`]: 'rctX:4abb4c6e:e3b1:4a5d:9f11:2a3c0e1f9b7d:00000001', [D2]: "rct'quote" })
    const s = scripts[0] as string
    assert.ok(s.includes(`'${D1}' = 'rctX:4abb4c6e:e3b1:4a5d:9f11:2a3c0e1f9b7d:00000001'`), 'disk IDs normalised (no braces, lower case)')
    assert.ok(s.includes(`'${D2}' = 'rct''quote'`), 'an id is a quoted literal')
    assert.match(s, /GetVirtualDiskChanges -Arguments @\{ Path = \$path; LimitId = \$d\.ReferencePoint; TargetSnapshotId = ''; ByteOffset = \$off; ByteLength = \(\$d\.VirtualSize - \$off\) \}/)
    const [a, b] = g.disks
    assert.deepEqual(a?.ranges, [{ offset: 4096, length: 8192 }, { offset: 1048576, length: 65536 }, { offset: 137438887936, length: 65536 }])
    assert.equal(a?.full, false)
    assert.equal(a?.referencePoint, 'rctX:4abb4c6e:e3b1:4a5d:9f11:2a3c0e1f9b7d:00000001')
    assert.equal(b?.full, true)
    assert.deepEqual(b?.ranges, [])
    assert.match(b?.lostReason ?? '', /change tracking information is not available/)
  })

  it('commit: ConvertToReferencePoint, the old one destroyed; one capture per disk {referencePoint, ranges, newReferencePoint}', async () => {
    const { rct, scripts } = make((s) => psOk(fixture(opOf(s) === 'rct-begin' ? 'hyperv/rct-begin-changes.json' : 'hyperv/rct-commit.json')))
    const g = await rct.begin(VM, 2, { [D1]: 'x', [D2]: 'y' })
    const c = await rct.commit(g, 'Microsoft:OLD-RP')
    assert.equal(c.referencePointId, 'Microsoft:5C0D8E2F-1A3B-4C5D-8E9F-A0B1C2D3E4F5')
    assert.deepEqual(c.captures.map(x => [x.referencePoint, x.ranges.length, x.newReferencePoint, x.full]), [
      ['rctX:4abb4c6e:e3b1:4a5d:9f11:2a3c0e1f9b7d:00000001', 3, 'rctX:4abb4c6e:e3b1:4a5d:9f11:2a3c0e1f9b7d:00000002', false],
      ['rctX:77aa0f12:0b1c:4d2e:8f3a:5b6c7d8e9f00:00000003', 0, 'rctX:77aa0f12:0b1c:4d2e:8f3a:5b6c7d8e9f00:00000004', true]
    ], 'paired by disk identifier, not by order')
    const s = scripts[1] as string
    assert.ok(s.includes("$_.InstanceID -eq 'Microsoft:1A2B3C4D-5E6F-4A7B-8C9D-0E1F2A3B4C5D'"))
    assert.ok(s.indexOf('ConvertToReferencePoint') < s.indexOf('DestroyReferencePoint'), 'the old reference point goes only after the new one exists')
    assert.ok(s.includes("$_.InstanceID -eq 'Microsoft:OLD-RP'"))
    assert.doesNotMatch(rctCommitScript('Microsoft:X', null), /DestroyReferencePoint/)
  })

  it('abort: DestroySnapshot (merged, no reference point); errors are typed', async () => {
    const { rct, scripts } = make(() => psOk())
    await rct.abort({ snapshotId: 'Microsoft:1A2B' })
    assert.match(scripts[0] as string, /-MethodName DestroySnapshot -Arguments @\{ AffectedSnapshot = \$snap\[0\] \}/)
    await assert.rejects(make(() => psFail(1, 'CreateSnapshot (recovery) failed: return value 32775')).rct.begin(VM, 1, {}), { name: 'HypervisorCmdletError', cmdletMessage: 'CreateSnapshot (recovery) failed: return value 32775' } as object)
    await assert.rejects(make(() => psFail(3)).rct.begin(VM, 1, {}), { name: 'HypervisorCommandFailedError' })
    assert.throws(() => rctBeginScript("x' ; Remove-VM *", 1, {}), { name: 'HypervisorOutputError' }, 'the VM ID must be a GUID')
    assert.match(rctAbortScript("a'b"), /'a''b'/)
  })

  it('odd answers are HypervisorOutputError: non-JSON, missing fields, pages with a gap, offsets/lengths mismatch, ranges outside the disk, commit without ids', async () => {
    const bad = async (out: string): Promise<void> => { await assert.rejects(make(() => psOk(out)).rct.begin(VM, 2, {}), { name: 'HypervisorOutputError' }, out.slice(0, 60)) }
    await bad('not json')
    await bad('{"Disks":[]}')
    await bad(fixture('hyperv/rct-begin-gap.json'))
    const ok = JSON.parse(fixture('hyperv/rct-begin-changes.json')) as { Disks: Array<{ Pages: Array<Record<string, unknown>>, VirtualSize: unknown }> }
    const variant = (f: (o: typeof ok) => void): string => { const o = structuredClone(ok); f(o); return JSON.stringify(o) }
    await bad(variant(o => { o.Disks[0]!.Pages[0]!.Lengths = [1, 2] }))
    await bad(variant(o => { o.Disks[0]!.Pages[1]!.Offsets = [137438953472] }))
    await bad(variant(o => { o.Disks[0]!.Pages[0]!.Offsets = [-1, 0, 0] }))
    await bad(variant(o => { o.Disks[0]!.VirtualSize = 'big' }))
    assert.throws(() => parseBegin(VM, variant(o => { o.Disks[0]!.Pages[0]!.Processed = 0 })), { name: 'HypervisorOutputError' })
    const g = parseBegin(VM, fixture('hyperv/rct-begin-changes.json'))
    const { rct } = make(() => psOk(fixture('hyperv/rct-commit-short.json')))
    await assert.rejects(rct.commit(g, null), { name: 'HypervisorOutputError' })
  })

  it('mergeRanges: sorted, overlapping and touching ranges joined, empty ones dropped', () => {
    assert.deepEqual(mergeRanges([{ offset: 10, length: 5 }, { offset: 0, length: 10 }, { offset: 30, length: 0 }, { offset: 12, length: 1 }, { offset: 40, length: 2 }]), [{ offset: 0, length: 15 }, { offset: 40, length: 2 }])
  })
})
