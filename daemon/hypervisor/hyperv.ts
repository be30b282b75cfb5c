/**
 * The `hyperv` driver: Windows PowerShell's Hyper-V module, one powershell.exe per operation
 * (scripts and their parsing in hyperv-scripts.ts).
 *   list      Get-VM + Get-VMHardDiskDrive + the .vmcx/.vmrs/.vmgs under ConfigurationLocation
 *   start     Compare-VM -Register on the replica's .vmcx, disks → replicas, Import-VM, Start-VM
 *   turnOff   Stop-VM -TurnOff -Force (saved state discarded); off or unknown = success
 *   isRunning (Get-VM).State not Off/Saved
 *   startTest Compare-VM -Copy -GenerateNewId into the test folder, disks → restored files,
 *             every network adapter disconnected, Import-VM, Rename-VM to the test name, Start-VM
 *   stopTest  Stop-VM -TurnOff + Remove-VM -Force of every VM with the test name
 */
import type { DriverDeps, HypervisorDriver, OpOptions, TestInstanceOps, VmInventory, VmStartFiles } from './driver.ts'
import type { RunResult } from './run.ts'
import { EpochStore } from './epochs.ts'
import { executeFence, type FenceAction } from './fence.ts'
import {
  EXIT_ALREADY_RUNNING, EXIT_AMBIGUOUS, EXIT_NOT_FOUND, encodeScript, inventoryState, isRunningState, jsonList,
  listScript, removeTestScript, startScript, startTestScript, stateName, stateScript, stringList, turnOffScript
} from './hyperv-scripts.ts'
import { HypervisorCommandFailedError, HypervisorConfigError, HypervisorOutputError, VmAlreadyRunningError, VmFilesError, tail } from './errors.ts'

export interface HypervDriverConfig {
  /** @default 'powershell.exe' */
  powershell?: string
  /** Not used by this driver (replicas are registered in place). */
  replicaDir?: string
}

const TIMEOUT_MS = 120_000
/** CreateProcess limits a command line to 32767 UTF-16 units. */
const MAX_ENCODED = 30_000

export class HypervDriver implements HypervisorDriver, TestInstanceOps {
  readonly kind = 'hyperv' as const
  private readonly powershell: string
  private readonly epochs: EpochStore

  constructor (config: HypervDriverConfig, private readonly deps: DriverDeps) {
    this.powershell = config.powershell ?? 'powershell.exe'
    this.epochs = new EpochStore(deps.stateDir)
  }

  /** argv running `script`. */
  argv (script: string): string[] {
    const enc = encodeScript(script)
    if (enc.length > MAX_ENCODED) throw new HypervisorConfigError(`PowerShell script too long for a command line (${enc.length} characters encoded)`)
    return [this.powershell, '-NoProfile', '-NonInteractive', '-EncodedCommand', enc]
  }

  private async ps (script: string, opts?: OpOptions): Promise<RunResult> {
    return await this.deps.run(this.argv(script), { cwd: this.deps.cwd, timeoutMs: TIMEOUT_MS, ...(opts?.signal !== undefined ? { signal: opts.signal } : {}) })
  }

  async list (opts?: OpOptions): Promise<VmInventory[]> {
    const r = await this.ps(listScript(), opts)
    if (r.code !== 0) throw new HypervisorCommandFailedError('powershell', r.code, tail(r.stderr), 'Get-VM')
    return jsonList(r.stdout, 'Get-VM').map((x, i) => {
      if (typeof x !== 'object' || x === null) throw new HypervisorOutputError('Get-VM', `[${i}] is not an object`)
      const o = x as Record<string, unknown>
      if (typeof o.Name !== 'string' || o.Name === '') throw new HypervisorOutputError('Get-VM', `[${i}].Name missing`)
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

  async start (vm: string, files: VmStartFiles, epoch: number, opts?: OpOptions): Promise<void> {
    await this.epochs.admit(vm, epoch)
    const vmcx = files.files.find(f => f.toLowerCase().endsWith('.vmcx'))
    if (vmcx === undefined) throw new VmFilesError(vm, 'no .vmcx among the replicated files (add the VM\'s configuration files to its files:)')
    const r = await this.ps(startScript({ vm, vmcx, disks: files.disks, ...(files.sourceMap !== undefined ? { sourceMap: files.sourceMap } : {}) }), opts)
    if (r.code === EXIT_ALREADY_RUNNING) throw new VmAlreadyRunningError(vm)
    if (r.code !== 0) throw new HypervisorCommandFailedError('powershell', r.code, tail(r.stderr), 'Import-VM/Start-VM')
  }

  async startTest (vm: string, testName: string, files: VmStartFiles, opts?: OpOptions): Promise<void> {
    const vmcx = files.files.find(f => f.toLowerCase().endsWith('.vmcx'))
    if (vmcx === undefined) throw new VmFilesError(vm, 'no .vmcx among the restored files (add the VM\'s configuration files to its files:)')
    const r = await this.ps(startTestScript({ vm, testName, vmcx, disks: files.disks, dir: files.dir, ...(files.sourceMap !== undefined ? { sourceMap: files.sourceMap } : {}) }), opts)
    if (r.code === EXIT_ALREADY_RUNNING) throw new VmAlreadyRunningError(testName)
    if (r.code !== 0) throw new HypervisorCommandFailedError('powershell', r.code, tail(r.stderr), 'Import-VM -Copy/Start-VM (test)')
  }

  async stopTest (testName: string, opts?: OpOptions): Promise<void> {
    const r = await this.ps(removeTestScript(testName), opts)
    if (r.code !== 0) throw new HypervisorCommandFailedError('powershell', r.code, tail(r.stderr), 'Stop-VM/Remove-VM (test)')
  }

  async isTestRunning (testName: string, opts?: OpOptions): Promise<boolean> { return await this.isRunning(testName, opts) }

  async turnOff (vm: string, opts?: OpOptions): Promise<void> {
    await executeFence(await this.fenceAction(vm), { run: this.deps.run, clock: this.deps.clock, ...(opts?.signal !== undefined ? { signal: opts.signal } : {}) })
  }

  async isRunning (vm: string, opts?: OpOptions): Promise<boolean> {
    const r = await this.ps(stateScript(vm), opts)
    if (r.code === EXIT_NOT_FOUND) return false
    if (r.code === EXIT_AMBIGUOUS) throw new HypervisorCommandFailedError('powershell', r.code, 'more than one VM has this name', '(Get-VM).State')
    if (r.code !== 0) throw new HypervisorCommandFailedError('powershell', r.code, tail(r.stderr), '(Get-VM).State')
    const [o] = jsonList(r.stdout, '(Get-VM).State')
    if (typeof o !== 'object' || o === null || !('State' in o)) throw new HypervisorOutputError('(Get-VM).State', 'no State')
    return isRunningState(stateName((o as { State: unknown }).State))
  }

  async fenceAction (vm: string): Promise<FenceAction> {
    return { kind: 'command', off: { kind: 'exec', argv: this.argv(turnOffScript(vm)), cwd: this.deps.cwd }, timeoutMs: TIMEOUT_MS }
  }
}
