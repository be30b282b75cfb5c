/**
 * The `command` driver: the administrator's own scripts, from the config.
 *
 *   start  "./start-vm.sh {vm} {epoch} {dir} {files}"   exit 0 = started
 *   stop   "./stop-vm.sh {vm}"                          exit 0 = off (turn off now)
 *   status "./vm-status.sh {vm}"                        exit 0 running, 1 not running, else error
 *   list   "./list-vms.sh"  (optional)                  prints [{ name, disks, files, state }]
 *
 * Each template is filled with shell-quoted values and run by `/bin/sh -c` (Windows:
 * `cmd.exe /d /s /c`, values in double quotes; common/platform/shell.ts) in the config's
 * folder. The values are also exported as VMESH_VM, VMESH_EPOCH, VMESH_DIR and VMESH_FILES
 * (newline-separated) for scripts that prefer the environment.
 *
 * Test instances (`vmesh failover --test`) run `testStart`/`testStop`/`testStatus` when set,
 * else `start`/`stop`/`status` with `{vm}` = the test name, `{epoch}` = 0, `{test}` = 1 (and
 * VMESH_TEST=1, VMESH_TEST_OF=<the VM>). Only the script can keep the clone off the network, so
 * a test is refused unless the config shows the script knows about tests: a `testStart`, or
 * `{test}` in `start`.
 */
import { isAbsolute, resolve } from 'node:path'
import type { DriverDeps, HypervisorDriver, OpOptions, TestInstanceOps, VmInventory, VmStartFiles } from './driver.ts'
import { EpochStore } from './epochs.ts'
import { localHostResources, type HostResources } from './capacity.ts'
import { executeFence, type FenceAction } from './fence.ts'
import { fillTemplate as fillWith, placeholdersIn, templateQuote } from './quote.ts'
import { hostOs, shellInvocation, type OsKind } from '../../common/platform/index.ts'
import { HypervisorCommandFailedError, HypervisorConfigError, HypervisorOutputError, HypervisorUnsupportedError, VmAlreadyRunningError, tail } from './errors.ts'

export interface CommandDriverConfig {
  start: string
  stop: string
  status: string
  list?: string
  /** Starts an isolated test instance; placeholders {vm} (the test name) {files} {dir} {test}. @default start, when it uses {test} */
  testStart?: string
  /** Turns a test instance off. @default stop */
  testStop?: string
  /** Exit 0 while a test instance runs, 1 when not. @default status */
  testStatus?: string
  /** Per-command timeout in ms (the config's `timeout`, already converted). @default 60000 */
  timeout?: number
}

type Op = 'start' | 'stop' | 'status' | 'list' | 'testStart' | 'testStop' | 'testStatus'

const ALLOWED: Record<Op, ReadonlySet<string>> = {
  start: new Set(['vm', 'epoch', 'files', 'dir', 'test']),
  stop: new Set(['vm', 'test']),
  status: new Set(['vm', 'test']),
  list: new Set(),
  testStart: new Set(['vm', 'files', 'dir', 'test']),
  testStop: new Set(['vm', 'test']),
  testStatus: new Set(['vm', 'test'])
}

export class CommandDriver implements HypervisorDriver, TestInstanceOps {
  readonly kind = 'command' as const
  private readonly epochs: EpochStore
  private readonly timeoutMs: number
  private readonly os: OsKind
  private readonly fillTemplate: (template: string, values: Parameters<typeof fillWith>[1]) => string

  constructor (private readonly config: CommandDriverConfig, private readonly deps: DriverDeps) {
    for (const op of Object.keys(ALLOWED) as Op[]) {
      const t = config[op]
      if (t === undefined) continue
      if (t.trim() === '') throw new HypervisorConfigError(`hypervisor.command.${op} is empty`)
      for (const p of placeholdersIn(t)) {
        if (!ALLOWED[op].has(p)) throw new HypervisorConfigError(`hypervisor.command.${op}: {${p}} is not available there (only ${[...ALLOWED[op]].map(x => `{${x}}`).join(' ') || 'no placeholders'})`)
      }
    }
    this.timeoutMs = config.timeout ?? 60_000
    this.epochs = new EpochStore(deps.stateDir)
    this.os = deps.os ?? hostOs
    const quote = templateQuote(this.os)
    this.fillTemplate = (template, values) => fillWith(template, values, quote)
  }

  private async sh (command: string, env: Record<string, string>, opts?: OpOptions): Promise<{ code: number | null, stdout: string, stderr: string }> {
    const shell = shellInvocation(command, this.os)
    return await this.deps.run(shell.argv, {
      ...(shell.windowsVerbatimArguments ? { windowsVerbatimArguments: true } : {}),
      cwd: this.deps.cwd,
      timeoutMs: this.timeoutMs,
      env,
      ...(opts?.signal !== undefined ? { signal: opts.signal } : {})
    })
  }

  /** VMs run on this machine: its /proc/meminfo and CPU count. */
  async hostResources (_opts?: OpOptions): Promise<HostResources> { return await localHostResources() }

  async list (opts?: OpOptions): Promise<VmInventory[]> {
    if (this.config.list === undefined) throw new HypervisorUnsupportedError('command', 'list VMs', 'set hypervisor.command.list')
    const r = await this.sh(this.config.list, {}, opts)
    if (r.code !== 0) throw new HypervisorCommandFailedError('list', r.code, tail(r.stderr), 'list command')
    return parseInventoryJson(r.stdout, this.deps.cwd, 'list command')
  }

  async start (vm: string, files: VmStartFiles, epoch: number, opts?: OpOptions): Promise<void> {
    await this.epochs.admit(vm, epoch)
    const all = [...files.disks, ...files.files]
    const cmd = this.fillTemplate(this.config.start, { vm, epoch, files: all, dir: files.dir })
    const r = await this.sh(cmd, { VMESH_VM: vm, VMESH_EPOCH: String(epoch), VMESH_DIR: files.dir, VMESH_FILES: all.join('\n'), VMESH_TEST: '0' }, opts)
    if (r.code !== 0) throw new HypervisorCommandFailedError('start', r.code, tail(r.stderr), 'start command')
  }

  /** No epoch is admitted: a test instance is not a claim on the VM. */
  async startTest (vm: string, testName: string, files: VmStartFiles, opts?: OpOptions): Promise<void> {
    const template = this.config.testStart ?? (placeholdersIn(this.config.start).has('test') ? this.config.start : undefined)
    if (template === undefined) throw new HypervisorUnsupportedError('command', 'start an isolated test instance', 'set hypervisor.command.testStart, or pass {test} to the start script so it can leave the network out')
    if (await this.isTestRunning(testName, opts)) throw new VmAlreadyRunningError(testName)
    const all = [...files.disks, ...files.files]
    const cmd = this.fillTemplate(template, { vm: testName, epoch: 0, files: all, dir: files.dir, test: true })
    const r = await this.sh(cmd, { VMESH_VM: testName, VMESH_EPOCH: '0', VMESH_DIR: files.dir, VMESH_FILES: all.join('\n'), VMESH_TEST: '1', VMESH_TEST_OF: vm }, opts)
    if (r.code !== 0) throw new HypervisorCommandFailedError('testStart', r.code, tail(r.stderr), 'test start command')
  }

  async stopTest (testName: string, opts?: OpOptions): Promise<void> {
    const env = { VMESH_VM: testName, VMESH_TEST: '1' }
    const action: FenceAction = {
      kind: 'command',
      off: { kind: 'shell', command: this.fillTemplate(this.config.testStop ?? this.config.stop, { vm: testName, test: true }), cwd: this.deps.cwd, env },
      timeoutMs: this.timeoutMs,
      verify: { command: { kind: 'shell', command: this.fillTemplate(this.config.testStatus ?? this.config.status, { vm: testName, test: true }), cwd: this.deps.cwd, env }, offWhen: { exitCode: 1 } }
    }
    await executeFence(action, { run: this.deps.run, clock: this.deps.clock, os: this.os, ...(opts?.signal !== undefined ? { signal: opts.signal } : {}) })
  }

  async isTestRunning (testName: string, opts?: OpOptions): Promise<boolean> {
    return await this.status(this.config.testStatus ?? this.config.status, testName, true, opts)
  }

  async turnOff (vm: string, opts?: OpOptions): Promise<void> {
    await executeFence(await this.fenceAction(vm), { run: this.deps.run, clock: this.deps.clock, os: this.os, ...(opts?.signal !== undefined ? { signal: opts.signal } : {}) })
  }

  async isRunning (vm: string, opts?: OpOptions): Promise<boolean> {
    return await this.status(this.config.status, vm, false, opts)
  }

  private async status (template: string, vm: string, test: boolean, opts?: OpOptions): Promise<boolean> {
    const r = await this.sh(this.fillTemplate(template, { vm, test }), { VMESH_VM: vm, VMESH_TEST: test ? '1' : '0' }, opts)
    if (r.code === 0) return true
    if (r.code === 1) return false
    throw new HypervisorCommandFailedError('status', r.code, tail(r.stderr), 'status command')
  }

  async fenceAction (vm: string): Promise<FenceAction> {
    const env = { VMESH_VM: vm }
    return {
      kind: 'command',
      off: { kind: 'shell', command: this.fillTemplate(this.config.stop, { vm }), cwd: this.deps.cwd, env },
      timeoutMs: this.timeoutMs,
      // a stop script that fails on an already-off VM still counts as off when status says so
      verify: { command: { kind: 'shell', command: this.fillTemplate(this.config.status, { vm }), cwd: this.deps.cwd, env }, offWhen: { exitCode: 1 } }
    }
  }

  /** Highest start epoch recorded for `vm` (0 when none). */
  async highestEpoch (vm: string): Promise<number> { return await this.epochs.highest(vm) }
}

const MAX_VMS = 10_000

/** Parses `[{ name, disks, files, state, id? }]` as printed by a list script. */
export function parseInventoryJson (text: string, cwd: string, what: string): VmInventory[] {
  let data: unknown
  try { data = JSON.parse(text) } catch (err) { throw new HypervisorOutputError(what, 'not JSON', { cause: err }) }
  if (!Array.isArray(data)) throw new HypervisorOutputError(what, 'expected a JSON array')
  if (data.length > MAX_VMS) throw new HypervisorOutputError(what, `more than ${MAX_VMS} VMs`)
  const abs = (p: string): string => isAbsolute(p) ? p : resolve(cwd, p)
  const strings = (v: unknown, key: string, i: number): string[] => {
    if (v === undefined || v === null) return []
    if (!Array.isArray(v) || v.some(x => typeof x !== 'string' || x === '')) throw new HypervisorOutputError(what, `[${i}].${key} must be an array of paths`)
    return (v as string[]).map(abs)
  }
  return data.map((e: unknown, i): VmInventory => {
    if (typeof e !== 'object' || e === null) throw new HypervisorOutputError(what, `[${i}] is not an object`)
    const o = e as Record<string, unknown>
    if (typeof o.name !== 'string' || o.name === '') throw new HypervisorOutputError(what, `[${i}].name must be a non-empty string`)
    const state = o.state === undefined ? 'other' : o.state
    if (state !== 'running' && state !== 'off' && state !== 'other') throw new HypervisorOutputError(what, `[${i}].state must be running, off or other`)
    const out: VmInventory = { name: o.name, disks: strings(o.disks, 'disks', i), files: strings(o.files, 'files', i), state }
    if (o.id !== undefined) {
      if (typeof o.id !== 'string') throw new HypervisorOutputError(what, `[${i}].id must be a string`)
      out.id = o.id
    }
    return out
  })
}
