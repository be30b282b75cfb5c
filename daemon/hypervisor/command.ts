/**
 * The `command` driver: the administrator's own scripts, from the config.
 *
 *   start  "./start-vm.sh {vm} {epoch} {dir} {files}"   exit 0 = started
 *   stop   "./stop-vm.sh {vm}"                          exit 0 = off (turn off now)
 *   status "./vm-status.sh {vm}"                        exit 0 running, 1 not running, else error
 *   list   "./list-vms.sh"  (optional)                  prints [{ name, disks, files, state }]
 *
 * Each template is filled with shell-quoted values and run by `/bin/sh -c` in the config's
 * folder. The values are also exported as VMESH_VM, VMESH_EPOCH, VMESH_DIR and VMESH_FILES
 * (newline-separated) for scripts that prefer the environment.
 */
import { isAbsolute, resolve } from 'node:path'
import type { DriverDeps, HypervisorDriver, OpOptions, VmInventory, VmStartFiles } from './driver.ts'
import { EpochStore } from './epochs.ts'
import { executeFence, type FenceAction } from './fence.ts'
import { fillTemplate, placeholdersIn } from './quote.ts'
import { HypervisorCommandFailedError, HypervisorConfigError, HypervisorOutputError, HypervisorUnsupportedError, tail } from './errors.ts'

export interface CommandDriverConfig {
  start: string
  stop: string
  status: string
  list?: string
  /** Per-command timeout in ms (the config's `timeout`, already converted). @default 60000 */
  timeout?: number
}

const ALLOWED: Record<'start' | 'stop' | 'status' | 'list', ReadonlySet<string>> = {
  start: new Set(['vm', 'epoch', 'files', 'dir']),
  stop: new Set(['vm']),
  status: new Set(['vm']),
  list: new Set()
}

export class CommandDriver implements HypervisorDriver {
  readonly kind = 'command' as const
  private readonly epochs: EpochStore
  private readonly timeoutMs: number

  constructor (private readonly config: CommandDriverConfig, private readonly deps: DriverDeps) {
    for (const op of ['start', 'stop', 'status', 'list'] as const) {
      const t = config[op]
      if (t === undefined) continue
      if (t.trim() === '') throw new HypervisorConfigError(`hypervisor.command.${op} is empty`)
      for (const p of placeholdersIn(t)) {
        if (!ALLOWED[op].has(p)) throw new HypervisorConfigError(`hypervisor.command.${op}: {${p}} is not available there (only ${[...ALLOWED[op]].map(x => `{${x}}`).join(' ') || 'no placeholders'})`)
      }
    }
    this.timeoutMs = config.timeout ?? 60_000
    this.epochs = new EpochStore(deps.stateDir)
  }

  private async sh (command: string, env: Record<string, string>, opts?: OpOptions): Promise<{ code: number | null, stdout: string, stderr: string }> {
    return await this.deps.run(['/bin/sh', '-c', command], {
      cwd: this.deps.cwd,
      timeoutMs: this.timeoutMs,
      env,
      ...(opts?.signal !== undefined ? { signal: opts.signal } : {})
    })
  }

  async list (opts?: OpOptions): Promise<VmInventory[]> {
    if (this.config.list === undefined) throw new HypervisorUnsupportedError('command', 'list VMs', 'set hypervisor.command.list')
    const r = await this.sh(this.config.list, {}, opts)
    if (r.code !== 0) throw new HypervisorCommandFailedError('list', r.code, tail(r.stderr), 'list command')
    return parseInventoryJson(r.stdout, this.deps.cwd, 'list command')
  }

  async start (vm: string, files: VmStartFiles, epoch: number, opts?: OpOptions): Promise<void> {
    await this.epochs.admit(vm, epoch)
    const all = [...files.disks, ...files.files]
    const cmd = fillTemplate(this.config.start, { vm, epoch, files: all, dir: files.dir })
    const r = await this.sh(cmd, { VMESH_VM: vm, VMESH_EPOCH: String(epoch), VMESH_DIR: files.dir, VMESH_FILES: all.join('\n') }, opts)
    if (r.code !== 0) throw new HypervisorCommandFailedError('start', r.code, tail(r.stderr), 'start command')
  }

  async turnOff (vm: string, opts?: OpOptions): Promise<void> {
    await executeFence(await this.fenceAction(vm), { run: this.deps.run, clock: this.deps.clock, ...(opts?.signal !== undefined ? { signal: opts.signal } : {}) })
  }

  async isRunning (vm: string, opts?: OpOptions): Promise<boolean> {
    const r = await this.sh(fillTemplate(this.config.status, { vm }), { VMESH_VM: vm }, opts)
    if (r.code === 0) return true
    if (r.code === 1) return false
    throw new HypervisorCommandFailedError('status', r.code, tail(r.stderr), 'status command')
  }

  async fenceAction (vm: string): Promise<FenceAction> {
    const env = { VMESH_VM: vm }
    return {
      kind: 'command',
      off: { kind: 'shell', command: fillTemplate(this.config.stop, { vm }), cwd: this.deps.cwd, env },
      timeoutMs: this.timeoutMs,
      // a stop script that fails on an already-off VM still counts as off when status says so
      verify: { command: { kind: 'shell', command: fillTemplate(this.config.status, { vm }), cwd: this.deps.cwd, env }, offWhen: { exitCode: 1 } }
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
