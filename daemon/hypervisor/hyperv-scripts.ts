/**
 * The PowerShell the Hyper-V driver runs, and the parsing of what it prints. Every value is a
 * single-quoted literal (psQuote); scripts go to powershell.exe as -EncodedCommand (UTF-16LE
 * base64) because Windows command-line quoting of embedded double quotes is not reliable for
 * powershell.exe. VMs are found by exact name with Where-Object: `Get-VM -Name` takes
 * wildcards, so a name with `[` or `*` would match other VMs.
 *
 * Exit codes: 0 ok, 1 error (message on stderr), 3 no such VM, 4 several VMs with that name,
 * 5 already running.
 */
import { psQuote } from './quote.ts'
import { HypervisorOutputError } from './errors.ts'

export const EXIT_NOT_FOUND = 3
export const EXIT_AMBIGUOUS = 4
export const EXIT_ALREADY_RUNNING = 5

const PRELUDE = [
  "$ErrorActionPreference = 'Stop'",
  "$ProgressPreference = 'SilentlyContinue'",
  '[Console]::OutputEncoding = [System.Text.Encoding]::UTF8',
  // Windows PowerShell 5.1 otherwise serializes some arrays as { "value": [...], "Count": n }
  'Remove-TypeData System.Array -ErrorAction SilentlyContinue'
]

function wrap (body: string[]): string {
  return [...PRELUDE, 'try {', ...body.map(l => `  ${l}`), '} catch {', '  [Console]::Error.WriteLine($_.Exception.Message)', '  exit 1', '}', 'exit 0'].join('\n')
}

const findOne = (vm: string): string[] => [
  `$found = @(Get-VM | Where-Object { $_.Name -eq ${psQuote(vm)} })`,
  `if ($found.Count -eq 0) { exit ${EXIT_NOT_FOUND} }`,
  `if ($found.Count -gt 1) { [Console]::Error.WriteLine('more than one VM has this name'); exit ${EXIT_AMBIGUOUS} }`,
  '$vm = $found[0]'
]

/** Every VM with its state, ID, disks and configuration files (.vmcx/.vmrs/.vmgs). */
export function listScript (): string {
  return wrap([
    '@(Get-VM) | ForEach-Object {',
    '  $vm = $_',
    "  $cfgDir = Join-Path $vm.ConfigurationLocation 'Virtual Machines'",
    "  $files = @(Get-ChildItem -LiteralPath $cfgDir -File -ErrorAction SilentlyContinue | Where-Object { $_.BaseName -eq [string]$vm.Id -and @('.vmcx', '.vmrs', '.vmgs') -contains $_.Extension.ToLower() } | ForEach-Object { $_.FullName })",
    '  [pscustomobject]@{',
    '    Name = $vm.Name',
    '    State = $vm.State',
    '    Id = [string]$vm.Id',
    '    Path = $vm.Path',
    '    ConfigurationLocation = $vm.ConfigurationLocation',
    '    Disks = @(Get-VMHardDiskDrive -VM $vm | ForEach-Object { $_.Path })',
    '    Files = $files',
    '  }',
    '} | ConvertTo-Json -Depth 3'
  ])
}

/** `{ "State": n }` for one VM. */
export function stateScript (vm: string): string {
  return wrap([...findOne(vm), '[pscustomobject]@{ State = $vm.State } | ConvertTo-Json'])
}

/**
 * Turns every VM with this name off (fencing must not leave a duplicate running). Off is
 * success; a saved VM has its saved state discarded (it would otherwise resume stale).
 */
export function turnOffScript (vm: string): string {
  return wrap([
    `foreach ($v in @(Get-VM | Where-Object { $_.Name -eq ${psQuote(vm)} })) {`,
    "  if (@('Saved', 'SavedCritical', 'FastSaved', 'FastSavedCritical') -contains [string]$v.State) { Remove-VMSavedState -VM $v }",
    "  elseif ([string]$v.State -ne 'Off' -and [string]$v.State -ne 'OffCritical') { Stop-VM -VM $v -TurnOff -Force -Confirm:$false }",
    "  if (@('Off', 'OffCritical') -notcontains [string](Get-VM -Id $v.Id).State) { throw ('still ' + [string](Get-VM -Id $v.Id).State) }",
    '}'
  ])
}

export interface StartScriptInput {
  vm: string
  vmcx: string
  /** Replica disk paths, in the VM's disk order. */
  disks: string[]
  /** Source → replica, when known. */
  sourceMap?: Record<string, string>
}

/** Points each drive of the compatibility report `$report` at its replica (as startScript). */
const repointDisks = (i: StartScriptInput): string[] => [
  `$replicas = @(${i.disks.map(psQuote).join(', ')})`,
  `$map = @{ ${Object.entries(i.sourceMap ?? {}).map(([s, r]) => `${psQuote(s)} = ${psQuote(r)}`).join('; ')} }`,
  '$used = @{}',
  '$pos = 0',
  'foreach ($d in @(Get-VMHardDiskDrive -VM $report.VM)) {',
  '  $src = [string]$d.Path',
  '  $new = $null',
  '  if ($src -ne \'\' -and $map.ContainsKey($src)) { $new = $map[$src] }',
  '  if ($null -eq $new -and $src -ne \'\') {',
  '    $leaf = [IO.Path]::GetFileName($src)',
  '    $c = @($replicas | Where-Object { -not $used.ContainsKey($_) -and [IO.Path]::GetFileName($_) -eq $leaf })',
  '    if ($c.Count -eq 1) { $new = $c[0] }',
  '  }',
  '  if ($null -eq $new) {',
  '    while ($pos -lt $replicas.Count -and $used.ContainsKey($replicas[$pos])) { $pos++ }',
  '    if ($pos -lt $replicas.Count) { $new = $replicas[$pos]; $pos++ }',
  '  }',
  "  if ($null -eq $new) { throw ('no replica for disk ' + $src) }",
  '  $used[$new] = $true',
  '  Set-VMHardDiskDrive -VMHardDiskDrive $d -Path $new',
  '}'
]

/**
 * Registers the replica's .vmcx in place (Compare-VM -Register), points each virtual hard
 * disk at its replica (source map, then same file name, then same position), disconnects
 * network adapters whose switch does not exist here, re-checks, imports and starts.
 */
export function startScript (i: StartScriptInput): string {
  return wrap([
    `$running = @(Get-VM | Where-Object { $_.Name -eq ${psQuote(i.vm)} -and @('Off', 'OffCritical') -notcontains [string]$_.State })`,
    `if ($running.Count -gt 0) { exit ${EXIT_ALREADY_RUNNING} }`,
    `$report = Compare-VM -Path ${psQuote(i.vmcx)} -Register`,
    ...repointDisks(i),
    'foreach ($x in @($report.Incompatibilities)) {',
    '  if ($x.MessageId -eq 33012) { Disconnect-VMNetworkAdapter -VMNetworkAdapter $x.Source }',
    '}',
    '$report = Compare-VM -CompatibilityReport $report',
    'if (@($report.Incompatibilities).Count -gt 0) {',
    "  throw ('incompatible: ' + ((@($report.Incompatibilities) | ForEach-Object { [string]$_.MessageId + ' ' + $_.Message }) -join '; '))",
    '}',
    '$vm = Import-VM -CompatibilityReport $report',
    'Start-VM -VM $vm',
    '[pscustomobject]@{ Name = $vm.Name; Id = [string]$vm.Id; State = (Get-VM -Id $vm.Id).State } | ConvertTo-Json'
  ])
}

export interface StartTestScriptInput extends StartScriptInput {
  testName: string
  /** The test's own folder: the copy's configuration, paging files and disks go there. */
  dir: string
}

/**
 * A test instance: the restored .vmcx imported as a copy with a new VM ID into the test's
 * folder (its disks copied there from the restored files), every network adapter
 * disconnected — before the import and again, verified, after it — renamed to the test name,
 * started. If anything fails after the import, the copy is removed again. Exit 5 when a VM
 * with the test name exists already.
 */
export function startTestScript (i: StartTestScriptInput): string {
  const dir = psQuote(i.dir)
  return wrap([
    `if (@(Get-VM | Where-Object { $_.Name -eq ${psQuote(i.testName)} }).Count -gt 0) { exit ${EXIT_ALREADY_RUNNING} }`,
    `$report = Compare-VM -Path ${psQuote(i.vmcx)} -Copy -GenerateNewId -VirtualMachinePath ${dir} -SnapshotFilePath ${dir} -SmartPagingFilePath ${dir} -VhdDestinationPath (Join-Path ${dir} 'Virtual Hard Disks')`,
    ...repointDisks(i),
    'Get-VMNetworkAdapter -VM $report.VM | Disconnect-VMNetworkAdapter',
    '$report = Compare-VM -CompatibilityReport $report',
    'if (@($report.Incompatibilities).Count -gt 0) {',
    "  throw ('incompatible: ' + ((@($report.Incompatibilities) | ForEach-Object { [string]$_.MessageId + ' ' + $_.Message }) -join '; '))",
    '}',
    '$vm = Import-VM -CompatibilityReport $report',
    'try {',
    `  Rename-VM -VM $vm -NewName ${psQuote(i.testName)}`,
    '  Get-VMNetworkAdapter -VM $vm | Disconnect-VMNetworkAdapter',
    "  if (@(Get-VMNetworkAdapter -VM $vm | Where-Object { [string]$_.SwitchName -ne '' }).Count -gt 0) { throw 'a network adapter of the test copy is still connected' }",
    '  Start-VM -VM $vm',
    '} catch {',
    '  Stop-VM -VM $vm -TurnOff -Force -Confirm:$false -ErrorAction SilentlyContinue',
    '  Remove-VM -VM $vm -Force -ErrorAction SilentlyContinue',
    '  throw',
    '}',
    '[pscustomobject]@{ Name = $vm.Name; Id = [string]$vm.Id; State = (Get-VM -Id $vm.Id).State } | ConvertTo-Json'
  ])
}

/** Turns off and unregisters every VM named `testName` (its files stay on disk). */
export function removeTestScript (testName: string): string {
  return wrap([
    `foreach ($v in @(Get-VM | Where-Object { $_.Name -eq ${psQuote(testName)} })) {`,
    "  if (@('Saved', 'SavedCritical', 'FastSaved', 'FastSavedCritical') -contains [string]$v.State) { Remove-VMSavedState -VM $v }",
    "  elseif ([string]$v.State -ne 'Off' -and [string]$v.State -ne 'OffCritical') { Stop-VM -VM $v -TurnOff -Force -Confirm:$false }",
    '  Remove-VM -VM $v -Force',
    '}'
  ])
}

/** powershell.exe's -EncodedCommand argument: base64 of the UTF-16LE script. */
export function encodeScript (script: string): string {
  return Buffer.from(script, 'utf16le').toString('base64')
}

export function decodeScript (b64: string): string {
  return Buffer.from(b64, 'base64').toString('utf16le')
}

/** Hyper-V's VMState enum as ConvertTo-Json prints it (a number) or by name (PS 7 -EnumsAsStrings). */
const STATE_NAMES: Record<number, string> = {
  1: 'Other', 2: 'Running', 3: 'Off', 4: 'Stopping', 6: 'Saved', 9: 'Paused', 10: 'Starting', 11: 'Reset',
  32773: 'Saving', 32776: 'Pausing', 32777: 'Resuming', 32779: 'FastSaved', 32780: 'FastSaving',
  32781: 'ForceShutdown', 32782: 'ForceReboot', 32783: 'Hibernated', 32784: 'ComponentServicing',
  32785: 'RunningCritical', 32786: 'OffCritical', 32787: 'StoppingCritical', 32788: 'SavedCritical',
  32789: 'PausedCritical', 32790: 'StartingCritical', 32791: 'ResetCritical', 32792: 'SavingCritical',
  32793: 'PausingCritical', 32794: 'ResumingCritical', 32795: 'FastSavedCritical', 32796: 'FastSavingCritical'
}

export function stateName (v: unknown): string {
  if (typeof v === 'number') return STATE_NAMES[v] ?? `Unknown(${v})`
  if (typeof v === 'string') return v
  return 'Unknown'
}

/** States in which the VM is not executing and cannot write to its disks. */
const NOT_RUNNING = new Set(['Off', 'OffCritical', 'Saved', 'SavedCritical', 'FastSaved', 'FastSavedCritical', 'Hibernated'])

export function isRunningState (name: string): boolean { return !NOT_RUNNING.has(name) }

export function inventoryState (name: string): 'running' | 'off' | 'other' {
  if (name === 'Running' || name === 'RunningCritical') return 'running'
  if (name === 'Off' || name === 'OffCritical') return 'off'
  return 'other'
}

/**
 * ConvertTo-Json's output as a list: nothing for no objects, a bare object for one, an array
 * for several.
 */
export function jsonList (text: string, what: string): unknown[] {
  const t = text.replace(/^\uFEFF/, '').trim()
  if (t === '') return []
  let v: unknown
  try { v = JSON.parse(t) } catch (err) { throw new HypervisorOutputError(what, 'not JSON', { cause: err }) }
  if (Array.isArray(v)) return v
  if (typeof v === 'object' && v !== null) return [v]
  throw new HypervisorOutputError(what, 'expected a JSON object or array')
}

/**
 * A property that ConvertTo-Json may print as null, one string, an array of strings, or (5.1's
 * ETS quirk) `{ "value": [...], "Count": n }`.
 */
export function stringList (prop: unknown, what: string): string[] {
  let v = prop
  if (v === null || v === undefined || v === '') return []
  if (typeof v === 'object' && !Array.isArray(v) && 'value' in v) v = (v as { value: unknown }).value
  if (typeof v === 'string') return [v]
  if (Array.isArray(v) && v.every(x => typeof x === 'string')) return (v as string[]).filter(x => x !== '')
  throw new HypervisorOutputError(what, 'expected a path or a list of paths')
}
