/**
 * The PowerShell the Hyper-V driver runs, and the parsing of what it prints. Every value is a
 * single-quoted literal (psQuote), never interpolated raw. VMs are found by exact name with
 * Where-Object (`Get-VM -Name` takes wildcards, so a name with `[` or `*` would match others)
 * or by ID.
 *
 * Each builder returns a script BODY whose first line names the operation (`# vmesh-op: x`,
 * for logs and the test fake). Bodies run in the driver's long-lived session (ps-session.ts,
 * which catches exceptions and maps `vmeshExit N`), or standalone through `standalone()` as
 * powershell.exe -EncodedCommand (UTF-16LE base64; Windows command-line quoting of embedded
 * double quotes is not reliable for powershell.exe) — the watchdog's fence runs that way, in
 * its own process, without the daemon.
 *
 * Status codes: 0 ok, 1 an exception (message on stderr / in the reply), 3 no such VM,
 * 4 several VMs with that name, 5 already running.
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
  'Remove-TypeData System.Array -ErrorAction SilentlyContinue',
  'function vmeshExit([int]$c) { exit $c }'
]

/** A body as a complete script for its own powershell.exe: exceptions → stderr + exit 1. */
export function standalone (body: string): string {
  return [...PRELUDE, 'try {', ...body.split('\n').map(l => `  ${l}`), '} catch {', '  [Console]::Error.WriteLine($_.Exception.Message)', '  exit 1', '}', 'exit 0'].join('\n')
}

const body = (op: string, lines: string[]): string => [`# vmesh-op: ${op}`, ...lines].join('\n')

const byName = (vm: string): string => `@(Get-VM | Where-Object { $_.Name -eq ${psQuote(vm)} })`

/** The configuration files (.vmcx/.vmrs/.vmgs) of `$vm`, flat or under "Virtual Machines". */
const CONFIG_FILES = "@(@($vm.ConfigurationLocation, (Join-Path $vm.ConfigurationLocation 'Virtual Machines')) | Where-Object { Test-Path -LiteralPath $_ } | ForEach-Object { Get-ChildItem -LiteralPath $_ -File -ErrorAction SilentlyContinue } | Where-Object { $_.BaseName -eq [string]$vm.Id -and @('.vmcx', '.vmrs', '.vmgs') -contains $_.Extension.ToLower() } | ForEach-Object { $_.FullName })"

/**
 * Every file of each virtual hard disk of `$vm`: the attached file, then its parents
 * (Get-VHD ParentPath) down to the base — a VM with checkpoints runs on an .avhdx chain. A
 * missing parent ends its chain instead of failing the whole list.
 */
const DISK_CHAINS = [
  '$disks = [System.Collections.Generic.List[string]]::new()',
  'foreach ($d in @(Get-VMHardDiskDrive -VM $vm)) {',
  '  $p = [string]$d.Path',
  '  $seen = 0',
  "  while ($p -ne '' -and -not $disks.Contains($p) -and $seen -lt 256) {",
  '    $disks.Add($p); $seen++',
  '    $p = [string](Get-VHD -Path $p -ErrorAction SilentlyContinue).ParentPath',
  '  }',
  '}'
]

/** Every VM with its state, ID, start action, disk chains and configuration files. */
export function listScript (): string {
  return body('list', [
    '@(Get-VM) | ForEach-Object {',
    '  $vm = $_',
    ...DISK_CHAINS.map(l => `  ${l}`),
    '  [pscustomobject]@{',
    '    Name = $vm.Name',
    '    State = $vm.State',
    '    Id = [string]$vm.Id',
    '    Path = $vm.Path',
    '    ConfigurationLocation = $vm.ConfigurationLocation',
    '    AutomaticStartAction = [string]$vm.AutomaticStartAction',
    '    Disks = @($disks)',
    `    Files = ${CONFIG_FILES}`,
    '  }',
    '} | ConvertTo-Json -Depth 3'
  ])
}

/** The host's logical processors and memory (bytes), for capacity-aware placement. */
export function hostScript (): string {
  return body('host', ['Get-VMHost | Select-Object LogicalProcessorCount, MemoryCapacity | ConvertTo-Json -Compress'])
}

/** Name, ID and state of every VM, in one call (the status poll's cache). */
export function statusAllScript (): string {
  return body('status', ['ConvertTo-Json -Compress -InputObject @(Get-VM | ForEach-Object { [pscustomobject]@{ Name = $_.Name; Id = [string]$_.Id; State = $_.State } })'])
}

/**
 * The VMs registered here under `vm`'s name or with Hyper-V ID `id`: name, ID, state, start
 * action and, per drive, its disk chain (attached file first, then its parents) joined with
 * `|` — a character no Windows path holds.
 */
export function lookupScript (vm: string, id: string | undefined): string {
  const idTest = id !== undefined ? ` -or [string]$_.Id -eq ${psQuote(id.toLowerCase())}` : ''
  return body('lookup', [
    `ConvertTo-Json -Depth 3 -Compress -InputObject @(Get-VM | Where-Object { $_.Name -eq ${psQuote(vm)}${idTest} } | ForEach-Object {`,
    '  $chains = @(Get-VMHardDiskDrive -VM $_ | ForEach-Object {',
    '    $c = @(); $p = [string]$_.Path',
    "    while ($p -ne '' -and $c -notcontains $p -and $c.Count -lt 256) { $c += $p; $p = [string](Get-VHD -Path $p -ErrorAction SilentlyContinue).ParentPath }",
    "    $c -join '|'",
    '  })',
    '  [pscustomobject]@{ Name = $_.Name; Id = [string]$_.Id; State = $_.State; AutomaticStartAction = [string]$_.AutomaticStartAction; Drives = $chains }',
    '})'
  ])
}

/** Hyper-V must never start a VM vmesh controls by itself (host boot, "StartIfRunning"). */
export function preventAutoStartScript (vm: string): string {
  return body('prevent-autostart', [
    `foreach ($v in ${byName(vm)}) { if ([string]$v.AutomaticStartAction -ne 'Nothing') { Set-VM -VM $v -AutomaticStartAction Nothing } }`
  ])
}

const TURN_OFF_V = [
  "  if (@('Saved', 'SavedCritical', 'FastSaved', 'FastSavedCritical') -contains [string]$v.State) { Remove-VMSavedState -VM $v }",
  "  elseif ([string]$v.State -ne 'Off' -and [string]$v.State -ne 'OffCritical') { Stop-VM -VM $v -TurnOff -Force -Confirm:$false }"
]

/**
 * Turns every VM with this name off (fencing must not leave a duplicate running). Off is
 * success; a saved VM has its saved state discarded (it would otherwise resume stale).
 */
export function turnOffScript (vm: string): string {
  return body('turn-off', [
    `foreach ($v in ${byName(vm)}) {`,
    ...TURN_OFF_V,
    "  if (@('Off', 'OffCritical') -notcontains [string](Get-VM -Id $v.Id).State) { throw ('still ' + [string](Get-VM -Id $v.Id).State) }",
    '}'
  ])
}

/**
 * This host lost the VM: every VM with its name is turned off and unregistered, its files
 * kept. Remove-VM deletes a VM's configuration files (.vmcx/.vmrs/.vmgs), so they are copied
 * aside first and put back after: they are the replica (or the seed of the one this host now
 * receives), and a later start here imports them again. Prints what it removed.
 */
export function releaseScript (vm: string, id?: string): string {
  const which = id !== undefined ? `@(Get-VM | Where-Object { [string]$_.Id -eq ${psQuote(id)} })` : byName(vm)
  return body('release', [
    `foreach ($v in ${which}) {`,
    ...TURN_OFF_V,
    '  $vm = $v',
    `  $cfg = ${CONFIG_FILES}`,
    "  $keep = Join-Path ([IO.Path]::GetTempPath()) ('vmesh-release-' + [string]$v.Id)",
    '  New-Item -ItemType Directory -Force -Path $keep | Out-Null',
    '  foreach ($f in $cfg) { Copy-Item -LiteralPath $f -Destination $keep -Force }',
    '  Remove-VM -VM $v -Force -Confirm:$false',
    '  foreach ($f in $cfg) { if (-not (Test-Path -LiteralPath $f)) { Copy-Item -LiteralPath (Join-Path $keep ([IO.Path]::GetFileName($f))) -Destination $f -Force } }',
    '  Remove-Item -LiteralPath $keep -Recurse -Force',
    '  [pscustomobject]@{ Name = $v.Name; Id = [string]$v.Id; Files = $cfg } | ConvertTo-Json -Compress',
    '}'
  ])
}

export interface StartScriptInput {
  vm: string
  vmcx: string
  /** Replica disk paths (every file of each chain), in the VM's disk order. */
  disks: string[]
  /** Source → replica, when known. */
  sourceMap?: Record<string, string>
}

/**
 * Points each drive of `$target` at its replica (source map, then same file name, then same
 * position), then re-parents each replica .avhdx chain: a differencing disk records its
 * parent's absolute SOURCE path, which on this host is either missing or another file.
 */
const repointDisks = (i: StartScriptInput, target: string): string[] => [
  `$replicas = @(${i.disks.map(psQuote).join(', ')})`,
  `$map = @{ ${Object.entries(i.sourceMap ?? {}).map(([s, r]) => `${psQuote(s)} = ${psQuote(r)}`).join('; ')} }`,
  '$used = @{}',
  '$pos = 0',
  `foreach ($d in @(Get-VMHardDiskDrive -VM ${target})) {`,
  '  $src = [string]$d.Path',
  '  $new = $null',
  "  if ($src -ne '' -and $map.ContainsKey($src)) { $new = $map[$src] }",
  "  if ($null -eq $new -and $src -ne '') {",
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
  '  if ($new -ne $src) { Set-VMHardDiskDrive -VMHardDiskDrive $d -Path $new }',
  '  $child = $new',
  '  for ($n = 0; $n -lt 256; $n++) {',
  '    $parent = [string](Get-VHD -Path $child).ParentPath',
  "    if ($parent -eq '') { break }",
  '    $to = $parent',
  '    if ($map.ContainsKey($parent)) { $to = $map[$parent] }',
  '    else { $c = @($replicas | Where-Object { [IO.Path]::GetFileName($_) -eq [IO.Path]::GetFileName($parent) }); if ($c.Count -eq 1) { $to = $c[0] } }',
  '    if ($to -ne $parent) { Set-VHD -Path $child -ParentPath $to }',
  '    $used[$to] = $true',
  '    $child = $to',
  '  }',
  '}'
]

/**
 * The registered VM `id` (this host's own, not running) started, after making sure of its
 * start action. A saved state is discarded: the disks may have moved on since it was saved
 * (the VM ran elsewhere), and resuming memory over them would corrupt the guest.
 */
export function startRegisteredScript (id: string): string {
  return body('start-registered', [
    `$vm = Get-VM -Id ${psQuote(id)}`,
    "if (@('Saved', 'SavedCritical', 'FastSaved', 'FastSavedCritical') -contains [string]$vm.State) { Remove-VMSavedState -VM $vm }",
    "if ([string]$vm.AutomaticStartAction -ne 'Nothing') { Set-VM -VM $vm -AutomaticStartAction Nothing }",
    'Start-VM -VM $vm',
    '[pscustomobject]@{ Name = $vm.Name; Id = [string]$vm.Id; State = (Get-VM -Id $vm.Id).State } | ConvertTo-Json'
  ])
}

/**
 * Registers the replica's .vmcx in place (Compare-VM -Register), points each virtual hard
 * disk at its replica, disconnects network adapters whose switch does not exist here,
 * re-checks, imports, sets AutomaticStartAction Nothing before anything runs, starts.
 */
export function importScript (i: StartScriptInput): string {
  return body('import', [
    `$report = Compare-VM -Path ${psQuote(i.vmcx)} -Register`,
    ...repointDisks(i, '$report.VM'),
    'foreach ($x in @($report.Incompatibilities)) {',
    '  if ($x.MessageId -eq 33012) { Disconnect-VMNetworkAdapter -VMNetworkAdapter $x.Source }',
    '}',
    '$report = Compare-VM -CompatibilityReport $report',
    'if (@($report.Incompatibilities).Count -gt 0) {',
    "  throw ('incompatible: ' + ((@($report.Incompatibilities) | ForEach-Object { [string]$_.MessageId + ' ' + $_.Message }) -join '; '))",
    '}',
    '$vm = Import-VM -CompatibilityReport $report',
    'Set-VM -VM $vm -AutomaticStartAction Nothing',
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
 * started. If anything fails after the import, the copy is removed again. Status 5 when a VM
 * with the test name exists already.
 */
export function startTestScript (i: StartTestScriptInput): string {
  const dir = psQuote(i.dir)
  return body('start-test', [
    `if (${byName(i.testName)}.Count -gt 0) { vmeshExit ${EXIT_ALREADY_RUNNING} }`,
    `$report = Compare-VM -Path ${psQuote(i.vmcx)} -Copy -GenerateNewId -VirtualMachinePath ${dir} -SnapshotFilePath ${dir} -SmartPagingFilePath ${dir} -VhdDestinationPath (Join-Path ${dir} 'Virtual Hard Disks')`,
    ...repointDisks(i, '$report.VM'),
    'Get-VMNetworkAdapter -VM $report.VM | Disconnect-VMNetworkAdapter',
    '$report = Compare-VM -CompatibilityReport $report',
    'if (@($report.Incompatibilities).Count -gt 0) {',
    "  throw ('incompatible: ' + ((@($report.Incompatibilities) | ForEach-Object { [string]$_.MessageId + ' ' + $_.Message }) -join '; '))",
    '}',
    '$vm = Import-VM -CompatibilityReport $report',
    'try {',
    `  Rename-VM -VM $vm -NewName ${psQuote(i.testName)}`,
    '  Set-VM -VM $vm -AutomaticStartAction Nothing',
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

/** Turns off and unregisters every VM named `testName` (its disks stay on disk). */
export function removeTestScript (testName: string): string {
  return body('remove-test', [
    `foreach ($v in ${byName(testName)}) {`,
    ...TURN_OFF_V,
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
