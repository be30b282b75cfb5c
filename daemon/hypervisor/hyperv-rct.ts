/**
 * Hyper-V change capture through Resilient Change Tracking (RCT, Windows Server 2016+), the
 * way backup products do it — the scripts and their parsing; the change-source plumbing
 * (storage/changes, told ranges) is not here.
 *
 * One generation, three calls in the driver's PowerShell session (WMI root\virtualization\v2):
 *   begin   (first merges any recovery checkpoint of ours left behind: a crash, an unread reply)
 *           Msvm_VirtualSystemSnapshotService.CreateSnapshot(SnapshotType 32768 = recovery):
 *           the VM now writes into new .avhdx files and each disk's previous file is frozen
 *           (`readFrom`). For each disk with a reference point from the last generation,
 *           Msvm_ImageManagementService.GetVirtualDiskChanges(readFrom, LimitId = that RCT id)
 *           pages through the whole virtual size: the ranges changed since then, in
 *           VIRTUAL-DISK offsets. A disk without one, or whose RCT id Hyper-V no longer knows
 *           (reset, VM moved, tracking off) is `full`: the caller does one full hash scan.
 *   (the caller reads the ranges from `readFrom`, read-only while the checkpoint exists)
 *   commit  ConvertToReferencePoint(snapshot): the checkpoint is merged and becomes a
 *           reference point whose ResilientChangeTrackingIdentifiers are the next
 *           generation's `referencePoint`s (paired with disks by their VHDX DiskIdentifier);
 *           the previous reference point is destroyed.
 *   abort   DestroySnapshot(snapshot): merged without a reference point (the read failed); the
 *           next generation asks again from the old reference point, a superset.
 * Per disk the result is { referencePoint, ranges: [{offset,length}] in virtual-disk offsets,
 * newReferencePoint } (RctCapture).
 */
import type { PsReply } from './ps-session.ts'
import { psQuote } from './quote.ts'
import { jsonList } from './hyperv-scripts.ts'
import { HypervisorCmdletError, HypervisorCommandFailedError, HypervisorOutputError } from './errors.ts'
import { mergeRanges } from '../../common/ranges.ts'

/** Our recovery checkpoints are named this + the generation (stale ones are found by it). */
const STALE_PREFIX = 'vmesh generation '

/** The VM does not exist (by ID). */
export const EXIT_NO_VM = 3

export interface Range { offset: number, length: number }

export interface RctDisk {
  /** The file the VM's drive was attached to when the checkpoint was taken, now frozen: read from here. */
  readFrom: string
  /** Virtual size in bytes. */
  virtualSize: number
  /** The VHDX's virtual disk identifier (pairs the reference point's RCT ids with disks). */
  diskId: string
  /** The reference point the ranges are relative to; null: none, `full`. */
  referencePoint: string | null
  /** Changed ranges in virtual-disk offsets: sorted, merged, inside the virtual size. */
  ranges: Range[]
  /** No usable reference point: one full hash scan of `readFrom`. */
  full: boolean
  /** Why `full` when a reference point was given (Hyper-V's message). */
  lostReason?: string
}

export interface RctGeneration {
  vmId: string
  /** The recovery checkpoint's InstanceID (Msvm_VirtualSystemSettingData). */
  snapshotId: string
  disks: RctDisk[]
}

export interface RctCapture { readFrom: string, referencePoint: string | null, ranges: Range[], newReferencePoint: string, full: boolean }

export interface RctCommit {
  /** The new reference point's InstanceID (destroyed when the next one is made). */
  referencePointId: string
  captures: RctCapture[]
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

const NS = "$ns = 'root\\virtualization\\v2'"

/** Waits for a WMI method's job; throws with the job's own error text. */
const WAIT_JOB = [
  'function vmeshWait($r, [string]$what) {',
  '  if ($r.ReturnValue -eq 4096) {',
  '    $job = Get-CimInstance -InputObject $r.Job',
  '    while (@(2, 3, 4, 5, 6) -contains [int]$job.JobState) { Start-Sleep -Milliseconds 100; $job = Get-CimInstance -InputObject $job }',
  "    if ([int]$job.JobState -ne 7) { throw ($what + ' failed: ' + [string]$job.ErrorDescription + ' (job error ' + [string]$job.ErrorCode + ')') }",
  '    return $job',
  '  }',
  "  if ($r.ReturnValue -ne 0) { throw ($what + ' failed: return value ' + [string]$r.ReturnValue) }",
  '  return $null',
  '}'
]

const vmSystem = (vmId: string): string[] => [
  NS,
  `$cs = @(Get-CimInstance -Namespace $ns -ClassName Msvm_ComputerSystem | Where-Object { $_.Name -eq ${psQuote(vmId.toUpperCase())} })`,
  `if ($cs.Count -eq 0) { vmeshExit ${EXIT_NO_VM} }`,
  '$cs = $cs[0]'
]

function checkVmId (vmId: string): void {
  if (!GUID.test(vmId)) throw new HypervisorOutputError('RCT', `not a Hyper-V VM ID: ${JSON.stringify(vmId)}`)
}

/**
 * The recovery checkpoint, then per disk: the frozen file, its virtual size and disk ID, and
 * — given `referencePoints` (frozen-file-independent: keyed by the disk ID) — the changed
 * ranges since then, one JSON line per GetVirtualDiskChanges page.
 */
export function rctBeginScript (vmId: string, generation: number, referencePoints: Record<string, string>): string {
  checkVmId(vmId)
  const rps = Object.entries(referencePoints).map(([disk, rct]) => `${psQuote(normalizeDiskId(disk))} = ${psQuote(rct)}`).join('; ')
  return [
    '# vmesh-op: rct-begin',
    ...WAIT_JOB,
    ...vmSystem(vmId),
    '$svc = Get-CimInstance -Namespace $ns -ClassName Msvm_VirtualSystemSnapshotService',
    // a checkpoint of ours left behind (a crash, or a reply we could not read) is merged first:
    // never a stack of them, and the next query from the old reference point is a superset
    `foreach ($old in @(Get-CimAssociatedInstance -InputObject $cs -Association Msvm_SnapshotOfVirtualSystem | Where-Object { $_.VirtualSystemType -eq 'Microsoft:Hyper-V:Snapshot:Recovery' -and $_.ElementName -like ${psQuote(`${STALE_PREFIX}*`)} })) {`,
    "  $null = vmeshWait (Invoke-CimMethod -InputObject $svc -MethodName DestroySnapshot -Arguments @{ AffectedSnapshot = $old }) 'DestroySnapshot (stale)'",
    '}',
    '$cls = Get-CimClass -Namespace $ns -ClassName Msvm_VirtualSystemSnapshotSettingData',
    `$ssd = New-CimInstance -CimClass $cls -ClientOnly -Property @{ ConsistencyLevel = [uint16]2; IgnoreNonSnapshottableDisks = $true; ElementName = ${psQuote(`${STALE_PREFIX}${generation}`)} }`,
    '$ser = [Microsoft.Management.Infrastructure.Serialization.CimSerializer]::Create()',
    '$xml = [Text.Encoding]::Unicode.GetString($ser.Serialize($ssd, [Microsoft.Management.Infrastructure.Serialization.InstanceSerializationOptions]::None))',
    '$r = Invoke-CimMethod -InputObject $svc -MethodName CreateSnapshot -Arguments @{ AffectedSystem = $cs; SnapshotSettings = $xml; SnapshotType = [uint16]32768 }',
    "$job = vmeshWait $r 'CreateSnapshot (recovery)'",
    '$snap = $r.ResultingSnapshot',
    'if ($null -eq $snap -and $null -ne $job) { $snap = @(Get-CimAssociatedInstance -InputObject $job -ResultClassName Msvm_VirtualSystemSettingData)[0] }',
    "if ($null -eq $snap) { throw 'CreateSnapshot returned no snapshot' }",
    '$snap = Get-CimInstance -InputObject $snap',
    `$rps = @{ ${rps} }`,
    '$ims = Get-CimInstance -Namespace $ns -ClassName Msvm_ImageManagementService',
    '$disks = @()',
    'foreach ($sasd in @(Get-CimAssociatedInstance -InputObject $snap -ResultClassName Msvm_StorageAllocationSettingData | Where-Object { [int]$_.ResourceType -eq 31 })) {',
    '  $path = [string]@($sasd.HostResource)[0]',
    '  $vhd = Get-VHD -Path $path',
    "  $id = ([string]$vhd.DiskIdentifier).Trim('{}').ToLower()",
    '  $d = [ordered]@{ ReadFrom = $path; VirtualSize = [uint64]$vhd.Size; DiskId = $id; ReferencePoint = $null; Pages = @(); Lost = $null }',
    '  if ($rps.ContainsKey($id)) {',
    '    $d.ReferencePoint = $rps[$id]',
    '    $off = [uint64]0',
    '    while ($off -lt $d.VirtualSize) {',
    '      $q = Invoke-CimMethod -InputObject $ims -MethodName GetVirtualDiskChanges -Arguments @{ Path = $path; LimitId = $d.ReferencePoint; TargetSnapshotId = \'\'; ByteOffset = $off; ByteLength = ($d.VirtualSize - $off) }',
    '      try { $null = vmeshWait $q \'GetVirtualDiskChanges\' } catch { $d.Lost = $_.Exception.Message; break }',
    '      $n = [uint64]$q.ProcessedByteLength',
    "      if ($n -eq 0) { $d.Lost = 'GetVirtualDiskChanges made no progress'; break }",
    '      $d.Pages += [pscustomobject]@{ Offset = $off; Processed = $n; Offsets = @($q.ChangedByteOffsets); Lengths = @($q.ChangedByteLengths) }',
    '      $off += $n',
    '    }',
    '  }',
    '  $disks += [pscustomobject]$d',
    '}',
    '[pscustomobject]@{ SnapshotId = [string]$snap.InstanceID; Disks = @($disks) } | ConvertTo-Json -Depth 5 -Compress'
  ].join('\n')
}

/** Merges the checkpoint into a reference point; destroys `previousReferencePointId` after. */
export function rctCommitScript (snapshotId: string, previousReferencePointId: string | null): string {
  return [
    '# vmesh-op: rct-commit',
    ...WAIT_JOB,
    NS,
    `$snap = @(Get-CimInstance -Namespace $ns -ClassName Msvm_VirtualSystemSettingData | Where-Object { $_.InstanceID -eq ${psQuote(snapshotId)} })`,
    "if ($snap.Count -ne 1) { throw ('recovery checkpoint not found: ' + " + psQuote(snapshotId) + ') }',
    '$svc = Get-CimInstance -Namespace $ns -ClassName Msvm_VirtualSystemSnapshotService',
    "$r = Invoke-CimMethod -InputObject $svc -MethodName ConvertToReferencePoint -Arguments @{ AffectedSnapshot = $snap[0]; ReferencePointSettings = '' }",
    "$job = vmeshWait $r 'ConvertToReferencePoint'",
    '$rp = $r.ResultingReferencePoint',
    'if ($null -eq $rp -and $null -ne $job) { $rp = @(Get-CimAssociatedInstance -InputObject $job -ResultClassName Msvm_VirtualSystemReferencePoint)[0] }',
    "if ($null -eq $rp) { throw 'ConvertToReferencePoint returned no reference point' }",
    '$rp = Get-CimInstance -InputObject $rp',
    ...(previousReferencePointId !== null
      ? [
          `$old = @(Get-CimInstance -Namespace $ns -ClassName Msvm_VirtualSystemReferencePoint | Where-Object { $_.InstanceID -eq ${psQuote(previousReferencePointId)} })`,
          'if ($old.Count -eq 1) {',
          '  $rps = Get-CimInstance -Namespace $ns -ClassName Msvm_VirtualSystemReferencePointService',
          "  $null = vmeshWait (Invoke-CimMethod -InputObject $rps -MethodName DestroyReferencePoint -Arguments @{ AffectedReferencePoint = $old[0] }) 'DestroyReferencePoint'",
          '}'
        ]
      : []),
    '[pscustomobject]@{ ReferencePointId = [string]$rp.InstanceID; VirtualDiskIdentifiers = @($rp.VirtualDiskIdentifiers); ResilientChangeTrackingIdentifiers = @($rp.ResilientChangeTrackingIdentifiers) } | ConvertTo-Json -Compress'
  ].join('\n')
}

/** Merges the checkpoint without a reference point (the generation failed). Idempotent. */
export function rctAbortScript (snapshotId: string): string {
  return [
    '# vmesh-op: rct-abort',
    ...WAIT_JOB,
    NS,
    `$snap = @(Get-CimInstance -Namespace $ns -ClassName Msvm_VirtualSystemSettingData | Where-Object { $_.InstanceID -eq ${psQuote(snapshotId)} })`,
    'if ($snap.Count -eq 1) {',
    '  $svc = Get-CimInstance -Namespace $ns -ClassName Msvm_VirtualSystemSnapshotService',
    "  $null = vmeshWait (Invoke-CimMethod -InputObject $svc -MethodName DestroySnapshot -Arguments @{ AffectedSnapshot = $snap[0] }) 'DestroySnapshot'",
    '}'
  ].join('\n')
}

export const normalizeDiskId = (s: string): string => s.replace(/[{}]/g, '').toLowerCase()

const num = (v: unknown, what: string): number => {
  if (typeof v === 'string' && /^\d+$/.test(v)) v = Number(v) // uint64 as a string (PS 7 large values)
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new HypervisorOutputError('RCT', `${what}: not a byte count: ${JSON.stringify(v)}`)
  return v
}
const list = (v: unknown): unknown[] => v === null || v === undefined ? [] : Array.isArray(v) ? v : (typeof v === 'object' && 'value' in v) ? list((v as { value: unknown }).value) : [v]

/** Sorted and merged (common/ranges.ts); re-exported for the RCT callers. */
export { mergeRanges }

/** Parses rctBeginScript's reply. */
export function parseBegin (vmId: string, out: string): RctGeneration {
  const [o, ...extra] = jsonList(out, 'RCT begin')
  if (o === undefined || extra.length > 0 || typeof o !== 'object' || o === null) throw new HypervisorOutputError('RCT begin', 'expected one object')
  const r = o as Record<string, unknown>
  if (typeof r.SnapshotId !== 'string' || r.SnapshotId === '') throw new HypervisorOutputError('RCT begin', 'SnapshotId missing')
  const disks = list(r.Disks).map((x, i): RctDisk => {
    if (typeof x !== 'object' || x === null) throw new HypervisorOutputError('RCT begin', `Disks[${i}] is not an object`)
    const d = x as Record<string, unknown>
    if (typeof d.ReadFrom !== 'string' || d.ReadFrom === '') throw new HypervisorOutputError('RCT begin', `Disks[${i}].ReadFrom missing`)
    if (typeof d.DiskId !== 'string' || !GUID.test(normalizeDiskId(d.DiskId))) throw new HypervisorOutputError('RCT begin', `Disks[${i}].DiskId missing`)
    const size = num(d.VirtualSize, `Disks[${i}].VirtualSize`)
    const rp = typeof d.ReferencePoint === 'string' && d.ReferencePoint !== '' ? d.ReferencePoint : null
    const base: RctDisk = { readFrom: d.ReadFrom, virtualSize: size, diskId: normalizeDiskId(d.DiskId), referencePoint: rp, ranges: [], full: true }
    if (rp === null) return base
    if (typeof d.Lost === 'string' && d.Lost !== '') return { ...base, lostReason: d.Lost }
    // the pages must tile [0, size) in order; every range inside its page
    let at = 0
    const ranges: Range[] = []
    for (const [j, p] of list(d.Pages).entries()) {
      if (typeof p !== 'object' || p === null) throw new HypervisorOutputError('RCT begin', `Disks[${i}].Pages[${j}] is not an object`)
      const pg = p as Record<string, unknown>
      const off = num(pg.Offset, `Pages[${j}].Offset`)
      const processed = num(pg.Processed, `Pages[${j}].Processed`)
      if (off !== at || processed === 0 || off + processed > size) throw new HypervisorOutputError('RCT begin', `Disks[${i}].Pages[${j}] covers ${off}+${processed}, expected to start at ${at} inside ${size}`)
      const offs = list(pg.Offsets).map((v, k) => num(v, `Offsets[${k}]`))
      const lens = list(pg.Lengths).map((v, k) => num(v, `Lengths[${k}]`))
      if (offs.length !== lens.length) throw new HypervisorOutputError('RCT begin', `Disks[${i}].Pages[${j}]: ${offs.length} offsets but ${lens.length} lengths`)
      for (let k = 0; k < offs.length; k++) {
        const r0 = { offset: offs[k] as number, length: lens[k] as number }
        if (r0.offset < off || r0.offset + r0.length > size) throw new HypervisorOutputError('RCT begin', `Disks[${i}]: range ${r0.offset}+${r0.length} outside the disk or its page`)
        ranges.push(r0)
      }
      at = off + processed
    }
    if (at !== size) throw new HypervisorOutputError('RCT begin', `Disks[${i}]: changes cover ${at} of ${size} bytes`)
    return { ...base, ranges: mergeRanges(ranges), full: false }
  })
  return { vmId, snapshotId: r.SnapshotId, disks }
}

/** Parses rctCommitScript's reply into one capture per disk of `gen`. */
export function parseCommit (gen: RctGeneration, out: string): RctCommit {
  const [o, ...extra] = jsonList(out, 'RCT commit')
  if (o === undefined || extra.length > 0 || typeof o !== 'object' || o === null) throw new HypervisorOutputError('RCT commit', 'expected one object')
  const r = o as Record<string, unknown>
  if (typeof r.ReferencePointId !== 'string' || r.ReferencePointId === '') throw new HypervisorOutputError('RCT commit', 'ReferencePointId missing')
  const ids = list(r.VirtualDiskIdentifiers)
  const rcts = list(r.ResilientChangeTrackingIdentifiers)
  if (ids.length !== rcts.length || !ids.every(x => typeof x === 'string') || !rcts.every(x => typeof x === 'string' && x !== '')) {
    throw new HypervisorOutputError('RCT commit', `${ids.length} disk identifiers but ${rcts.length} RCT identifiers`)
  }
  const byDisk = new Map(ids.map((id, k) => [normalizeDiskId(id as string), rcts[k] as string]))
  const captures = gen.disks.map(d => {
    const rct = byDisk.get(d.diskId) ?? (gen.disks.length === 1 && rcts.length === 1 ? rcts[0] as string : undefined)
    if (rct === undefined) throw new HypervisorOutputError('RCT commit', `no RCT identifier for disk ${d.diskId} (${d.readFrom})`)
    return { readFrom: d.readFrom, referencePoint: d.referencePoint, ranges: d.ranges, newReferencePoint: rct, full: d.full }
  })
  return { referencePointId: r.ReferencePointId, captures }
}

/** Runs one script body (the Hyper-V driver's session). */
export type RctTransport = (script: string, opts: { timeoutMs: number, signal?: AbortSignal }) => Promise<PsReply>

const TIMEOUT_MS = 10 * 60_000

/** The three calls of one RCT generation, with typed errors. */
export class HypervRct {
  constructor (private readonly components: { transport: RctTransport }) {}

  private async run (script: string, what: string, signal?: AbortSignal): Promise<PsReply> {
    const r = await this.components.transport(script, { timeoutMs: TIMEOUT_MS, ...(signal !== undefined ? { signal } : {}) })
    if (r.code === 0) return r
    if (r.code === 1) throw new HypervisorCmdletError(what, r.err !== '' ? r.err : 'PowerShell reported an error without a message', r.errorId)
    throw new HypervisorCommandFailedError('powershell', r.code, r.code === EXIT_NO_VM ? 'no VM with this ID' : r.err, what)
  }

  /**
   * Takes the recovery checkpoint and the changes since `referencePoints` (disk ID → RCT id).
   * Disks whose reference point Hyper-V refused come back `full` with `lostReason`.
   */
  async begin (vmId: string, generation: number, referencePoints: Record<string, string>, signal?: AbortSignal): Promise<RctGeneration> {
    const r = await this.run(rctBeginScript(vmId, generation, referencePoints), 'CreateSnapshot/GetVirtualDiskChanges', signal)
    return parseBegin(vmId, r.out)
  }

  /** The checkpoint becomes the next reference point (merged); returns one capture per disk. */
  async commit (gen: RctGeneration, previousReferencePointId: string | null, signal?: AbortSignal): Promise<RctCommit> {
    const r = await this.run(rctCommitScript(gen.snapshotId, previousReferencePointId), 'ConvertToReferencePoint', signal)
    return parseCommit(gen, r.out)
  }

  /** The checkpoint merged without a new reference point. */
  async abort (gen: Pick<RctGeneration, 'snapshotId'>, signal?: AbortSignal): Promise<void> {
    await this.run(rctAbortScript(gen.snapshotId), 'DestroySnapshot', signal)
  }
}
