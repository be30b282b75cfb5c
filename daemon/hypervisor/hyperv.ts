/**
 * The `hyperv` driver: Windows PowerShell's Hyper-V module through ONE long-lived
 * powershell.exe (ps-session.ts; scripts and their parsing in hyperv-scripts.ts).
 *   list      Get-VM + every file of each disk chain (Get-VMHardDiskDrive, Get-VHD ParentPath)
 *             + the .vmcx/.vmrs/.vmgs
 *   start     restart-safe: the VMs registered here under the name or the replica's ID decide —
 *               this VM registered on these files  → AutomaticStartAction Nothing, Start-VM
 *               this VM registered on OTHER files (a stale registration: failback, second
 *               failover to a former owner)        → Remove-VM (files kept), then import
 *               nothing registered                  → Compare-VM -Register, disks → replicas,
 *                                                     Import-VM, AutomaticStartAction Nothing, Start-VM
 *               another VM with the name            → VmNameConflictError, nothing touched
 *   release   this host lost the VM: turned off, Remove-VM, configuration files put back
 *   turnOff   Stop-VM -TurnOff -Force (saved state discarded) in its own powershell.exe, as the
 *             watchdog's fence does; off or unknown = success
 *   isRunning one Get-VM for all VMs, cached for statusCacheMs (the monitor asks per VM)
 *   startTest Compare-VM -Copy -GenerateNewId into the test folder (see hyperv-scripts.ts)
 *   stopTest  Stop-VM -TurnOff + Remove-VM -Force of every VM with the test name
 * The fence action stays a standalone powershell.exe command: the watchdog runs it in its own
 * process, without the daemon or its session.
 */
import { basename } from 'node:path'
import type { DriverDeps, HypervisorDriver, OpOptions, TestInstanceOps, VmInventory, VmStartFiles } from './driver.ts'
import { EpochStore } from './epochs.ts'
import { parseVmHost, type HostResources } from './capacity.ts'
import { executeFence, type FenceAction } from './fence.ts'
import {
  EXIT_ALREADY_RUNNING, EXIT_AMBIGUOUS, encodeScript, hostScript, importScript, inventoryState, isRunningState, jsonList,
  listScript, lookupScript, preventAutoStartScript, releaseScript, removeTestScript, standalone, startRegisteredScript,
  startTestScript, stateName, statusAllScript, stringList, turnOffScript
} from './hyperv-scripts.ts'
import { PowerShellSession, type PsReply } from './ps-session.ts'
import { HypervRct } from './hyperv-rct.ts'
import {
  HypervisorCmdletError, HypervisorCommandFailedError, HypervisorConfigError, HypervisorOutputError,
  VmAlreadyRunningError, VmFilesError, VmNameConflictError
} from './errors.ts'

export interface HypervDriverConfig {
  /** The PowerShell executable; tests point it at a scripted fake. @default 'powershell.exe' */
  powershell?: string
  /** Not used by this driver (replicas are registered in place). */
  replicaDir?: string
  /** How long one Get-VM answers isRunning for every VM. @default 1000 */
  statusCacheMs?: number
}

/** Runs one script body and returns the reply (the session, or a recorded transcript in tests). */
export type PsTransport = (script: string, opts: { timeoutMs: number, signal?: AbortSignal }) => Promise<PsReply>

const TIMEOUT_MS = 120_000
/** CreateProcess limits a command line to 32767 UTF-16 units. */
const MAX_ENCODED = 30_000
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

interface StatusEntry { name: string, id: string, state: string }
/** `drives`: per drive its chain, attached file first, joined with `|`. */
interface Registered { name: string, id: string, state: string, drives: string[] }

/** The Hyper-V ID a .vmcx is named after (`<GUID>.vmcx`), if it is. */
export function vmcxId (path: string): string | undefined {
  const base = basename(path.replace(/\\/g, '/')).replace(/\.vmcx$/i, '')
  return GUID.test(base) ? base.toLowerCase() : undefined
}

const samePath = (a: string, b: string): boolean => a.toLowerCase() === b.toLowerCase()

export class HypervDriver implements HypervisorDriver, TestInstanceOps {
  readonly kind = 'hyperv' as const
  private readonly powershell: string
  private readonly epochs: EpochStore
  private readonly transport: PsTransport
  /** The session when this driver owns one (not when a transport was injected). */
  readonly session: PowerShellSession | undefined
  private status: { at: number, entries: Promise<StatusEntry[]> } | undefined

  constructor (private readonly config: HypervDriverConfig, private readonly deps: DriverDeps, transport?: PsTransport) {
    this.powershell = config.powershell ?? 'powershell.exe'
    this.epochs = new EpochStore(deps.stateDir)
    if (transport !== undefined) this.transport = transport
    else {
      const session = new PowerShellSession({ clock: deps.clock }, { executable: this.powershell, cwd: deps.cwd })
      this.session = session
      this.transport = async (script, opts) => await session.run(script, opts)
    }
  }

  /** RCT change capture (recovery checkpoints, changed ranges) through this driver's session. */
  rct (): HypervRct { return new HypervRct({ transport: this.transport }) }

  /** Ends the PowerShell session (a later call starts a new one). */
  async close (): Promise<void> { await this.session?.close() }

  /** argv running `body` in its own powershell.exe (the fence's way). */
  argv (body: string): string[] {
    const enc = encodeScript(standalone(body))
    if (enc.length > MAX_ENCODED) throw new HypervisorConfigError(`PowerShell script too long for a command line (${enc.length} characters encoded)`)
    return [this.powershell, '-NoProfile', '-NonInteractive', '-EncodedCommand', enc]
  }

  /** Runs `script`; status 1 (an exception) becomes HypervisorCmdletError, others are returned. */
  private async ps (script: string, what: string, opts?: OpOptions, accept: number[] = []): Promise<PsReply> {
    const r = await this.transport(script, { timeoutMs: TIMEOUT_MS, ...(opts?.signal !== undefined ? { signal: opts.signal } : {}) })
    if (r.code === 0 || accept.includes(r.code)) return r
    if (r.code === 1) throw new HypervisorCmdletError(what, r.err !== '' ? r.err : 'PowerShell reported an error without a message', r.errorId)
    throw new HypervisorCommandFailedError(this.powershell, r.code, r.err, what)
  }

  private invalidate (): void { this.status = undefined }

  async list (opts?: OpOptions): Promise<VmInventory[]> {
    const r = await this.ps(listScript(), 'Get-VM', opts)
    return jsonList(r.out, 'Get-VM').map((x, i) => {
      if (typeof x !== 'object' || x === null) throw new HypervisorOutputError('Get-VM', `[${i}] is not an object`)
      const o = x as Record<string, unknown>
      if (typeof o.Name !== 'string' || o.Name === '') throw new HypervisorOutputError('Get-VM', `[${i}].Name missing`)
      if (!('State' in o)) throw new HypervisorOutputError('Get-VM', `[${i}].State missing`)
      const inv: VmInventory = {
        name: o.Name,
        disks: stringList(o.Disks, `Get-VM ${o.Name} Disks`),
        files: stringList(o.Files, `Get-VM ${o.Name} Files`),
        state: inventoryState(stateName(o.State))
      }
      if (typeof o.Id === 'string' && o.Id !== '') inv.id = o.Id
      return inv
    })
  }

  async hostResources (opts?: OpOptions): Promise<HostResources> {
    const r = await this.ps(hostScript(), 'Get-VMHost', opts)
    return parseVmHost(r.out)
  }

  /** Name, ID and state of every VM, one Get-VM per statusCacheMs however many VMs are asked about. */
  private async statusAll (opts?: OpOptions): Promise<StatusEntry[]> {
    const now = this.deps.clock.now()
    const ttl = this.config.statusCacheMs ?? 1000
    if (this.status !== undefined && now - this.status.at < ttl) return await this.status.entries
    const entries = (async () => {
      const r = await this.ps(statusAllScript(), 'Get-VM (status)', opts)
      return jsonList(r.out, 'Get-VM (status)').map((x, i) => {
        if (typeof x !== 'object' || x === null) throw new HypervisorOutputError('Get-VM (status)', `[${i}] is not an object`)
        const o = x as Record<string, unknown>
        if (typeof o.Name !== 'string' || !('State' in o)) throw new HypervisorOutputError('Get-VM (status)', `[${i}] has no Name or State`)
        return { name: o.Name, id: typeof o.Id === 'string' ? o.Id : '', state: stateName(o.State) }
      })
    })()
    const slot = { at: now, entries }
    this.status = slot
    entries.catch(() => { if (this.status === slot) this.status = undefined })
    return await entries
  }

  async isRunning (vm: string, opts?: OpOptions): Promise<boolean> {
    const found = (await this.statusAll(opts)).filter(e => e.name === vm)
    if (found.length === 0) return false
    if (found.length > 1) throw new HypervisorCommandFailedError(this.powershell, EXIT_AMBIGUOUS, 'more than one VM has this name', '(Get-VM).State')
    return isRunningState((found[0] as StatusEntry).state)
  }

  async isTestRunning (testName: string, opts?: OpOptions): Promise<boolean> { return await this.isRunning(testName, opts) }

  /** The Hyper-V ID of `vm` while it runs here (RCT change capture); undefined when it does not. */
  async runningId (vm: string, opts?: OpOptions): Promise<string | undefined> {
    if (!await this.isRunning(vm, opts)) return undefined
    const id = (await this.statusAll(opts)).find(e => e.name === vm)?.id ?? ''
    return GUID.test(id) ? id.toLowerCase() : undefined
  }

  /** The VMs registered here under `vm`'s name or with `id`. */
  private async lookup (vm: string, id: string | undefined, opts?: OpOptions): Promise<Registered[]> {
    const r = await this.ps(lookupScript(vm, id), 'Get-VM (lookup)', opts)
    return jsonList(r.out, 'Get-VM (lookup)').map((x, i) => {
      if (typeof x !== 'object' || x === null) throw new HypervisorOutputError('Get-VM (lookup)', `[${i}] is not an object`)
      const o = x as Record<string, unknown>
      if (typeof o.Name !== 'string' || typeof o.Id !== 'string' || o.Id === '' || !('State' in o)) throw new HypervisorOutputError('Get-VM (lookup)', `[${i}] has no Name, Id or State`)
      return { name: o.Name, id: o.Id.toLowerCase(), state: stateName(o.State), drives: stringList(o.Drives, `Get-VM ${o.Name} Drives`) }
    })
  }

  async start (vm: string, files: VmStartFiles, epoch: number, opts?: OpOptions): Promise<void> {
    await this.epochs.admit(vm, epoch)
    const vmcx = files.files.find(f => f.toLowerCase().endsWith('.vmcx'))
    if (vmcx === undefined) throw new VmFilesError(vm, 'no .vmcx among the replicated files (add the VM\'s configuration files to its files:)')
    this.invalidate()
    try {
      const id = vmcxId(vmcx)
      const regs = await this.lookup(vm, id, opts)
      if (regs.some(r => isRunningState(r.state))) throw new VmAlreadyRunningError(vm)
      const other = regs.find(r => r.name === vm && (id !== undefined ? r.id !== id : !onFiles(r, files)))
      if (other !== undefined) throw new VmNameConflictError(vm, other.id, id ?? '(unknown: the .vmcx is not named by its ID)')
      const mine = regs.find(r => id === undefined || r.id === id)
      if (mine !== undefined && mine.name === vm && onFiles(mine, files)) {
        const r = await this.ps(startRegisteredScript(mine.id), 'Start-VM', opts, [EXIT_ALREADY_RUNNING])
        if (r.code === EXIT_ALREADY_RUNNING) throw new VmAlreadyRunningError(vm)
        return
      }
      // registered on other files (or under another name): unregister it, keep its files
      if (mine !== undefined) await this.ps(releaseScript(mine.name, mine.id), 'Remove-VM (stale registration)', opts)
      await this.ps(importScript({ vm, vmcx, disks: files.disks, ...(files.sourceMap !== undefined ? { sourceMap: files.sourceMap } : {}) }), 'Import-VM/Start-VM', opts)
    } finally { this.invalidate() }
  }

  /**
   * This host lost `vm` (demotion): turned off if it still runs, unregistered with Remove-VM,
   * its files kept — so a later start here (failback, another failover) imports it again
   * without a duplicate-ID failure, and a reboot here cannot start it. Idempotent.
   */
  async release (vm: string, opts?: OpOptions): Promise<void> {
    this.invalidate()
    try { await this.ps(releaseScript(vm), 'Remove-VM', opts) } finally { this.invalidate() }
  }

  /** AutomaticStartAction Nothing on every VM named `vm` (called when vmesh takes it over). */
  async preventAutoStart (vm: string, opts?: OpOptions): Promise<void> {
    await this.ps(preventAutoStartScript(vm), 'Set-VM -AutomaticStartAction', opts)
  }

  async startTest (vm: string, testName: string, files: VmStartFiles, opts?: OpOptions): Promise<void> {
    const vmcx = files.files.find(f => f.toLowerCase().endsWith('.vmcx'))
    if (vmcx === undefined) throw new VmFilesError(vm, 'no .vmcx among the restored files (add the VM\'s configuration files to its files:)')
    this.invalidate()
    const r = await this.ps(startTestScript({ vm, testName, vmcx, disks: files.disks, dir: files.dir, ...(files.sourceMap !== undefined ? { sourceMap: files.sourceMap } : {}) }), 'Import-VM -Copy/Start-VM (test)', opts, [EXIT_ALREADY_RUNNING])
    this.invalidate()
    if (r.code === EXIT_ALREADY_RUNNING) throw new VmAlreadyRunningError(testName)
  }

  async stopTest (testName: string, opts?: OpOptions): Promise<void> {
    this.invalidate()
    try { await this.ps(removeTestScript(testName), 'Stop-VM/Remove-VM (test)', opts) } finally { this.invalidate() }
  }

  /**
   * Hard power-off in its own powershell.exe, the watchdog's way: a turn-off must not wait in
   * the session's queue behind a slow or hung call (an import can take minutes).
   */
  async turnOff (vm: string, opts?: OpOptions): Promise<void> {
    this.invalidate()
    try {
      await executeFence(await this.fenceAction(vm), { run: this.deps.run, clock: this.deps.clock, ...(opts?.signal !== undefined ? { signal: opts.signal } : {}) })
    } finally { this.invalidate() }
  }

  async fenceAction (vm: string): Promise<FenceAction> {
    return { kind: 'command', off: { kind: 'exec', argv: this.argv(turnOffScript(vm)), cwd: this.deps.cwd }, timeoutMs: TIMEOUT_MS }
  }
}

/**
 * Every drive of the registered VM runs on the files vmesh starts it from: its attached file
 * or one of that file's parents is among them (a config written before checkpoints were taken
 * lists the base .vhdx while the VM runs on an .avhdx above it).
 */
function onFiles (r: Registered, files: VmStartFiles): boolean {
  const mine = [...files.disks, ...Object.values(files.sourceMap ?? {})]
  return r.drives.every(chain => chain.split('|').some(d => d !== '' && mine.some(f => samePath(f, d))))
}
