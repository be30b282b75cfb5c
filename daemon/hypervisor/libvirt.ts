/**
 * The `libvirt` driver, through virsh (argv arrays, never a shell):
 *   list     virsh list --all --name, then per VM domblklist --details, domstate, dumpxml --inactive
 *   start    the VM's saved XML (one of its replicated files) with disk and NVRAM paths pointed
 *            at the replicas → <dir>/<vm>.libvirt.xml → virsh define → virsh start
 *   turnOff  virsh destroy (a failure is success when domstate then says "shut off"/"crashed"
 *            or the domain does not exist)
 *   isRunning virsh domstate: anything but "shut off"/"crashed" counts (paused can resume)
 *   startTest the same rewritten XML, renamed to the test name, without UUID and without any
 *            <interface> → <dir>/<test>.libvirt.xml → virsh create (transient: nothing defined)
 *   stopTest  virsh destroy, which also makes the transient domain disappear
 */
import { readFile, writeFile, rename, mkdir } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join } from 'node:path'
import type { DriverDeps, HypervisorDriver, OpOptions, TestInstanceOps, VmInventory, VmStartFiles } from './driver.ts'
import type { RunResult } from './run.ts'
import { EpochStore } from './epochs.ts'
import { parseNodeinfo, type HostResources } from './capacity.ts'
import { executeFence, type FenceAction } from './fence.ts'
import { ReplicaMatcher } from './replica-paths.ts'
import { domainDisks, elementText, inventoryState, isolatedTestXml, OFF_STATES, parseDomblklist, parseDomstate, parseNames, rewriteDomainXml } from './libvirt-parse.ts'
import { HypervisorCommandFailedError, VmAlreadyRunningError, VmFilesError, tail } from './errors.ts'

export interface LibvirtDriverConfig {
  /** @default 'qemu:///system' */
  uri?: string
  /** @default 'virsh' */
  virsh?: string
}

const TIMEOUT_MS = 60_000
const NOT_FOUND = /failed to get domain|[Dd]omain not found|no domain with matching name/
const MAX_XML = 4 * 1024 * 1024

export class LibvirtDriver implements HypervisorDriver, TestInstanceOps {
  readonly kind = 'libvirt' as const
  readonly uri: string
  private readonly virsh: string
  private readonly epochs: EpochStore

  constructor (config: LibvirtDriverConfig, private readonly deps: DriverDeps) {
    this.uri = config.uri ?? 'qemu:///system'
    this.virsh = config.virsh ?? 'virsh'
    this.epochs = new EpochStore(deps.stateDir)
  }

  /** argv for one virsh call. */
  argv (...args: string[]): string[] { return [this.virsh, '-c', this.uri, ...args] }

  private async virshRun (args: string[], opts?: OpOptions): Promise<RunResult> {
    return await this.deps.run(this.argv(...args), { cwd: this.deps.cwd, timeoutMs: TIMEOUT_MS, ...(opts?.signal !== undefined ? { signal: opts.signal } : {}) })
  }

  private async virshOk (args: string[], what: string, opts?: OpOptions): Promise<string> {
    const r = await this.virshRun(args, opts)
    if (r.code !== 0) throw new HypervisorCommandFailedError('virsh', r.code, tail(r.stderr), what)
    return r.stdout
  }

  async hostResources (opts?: OpOptions): Promise<HostResources> {
    return parseNodeinfo(await this.virshOk(['nodeinfo'], 'virsh nodeinfo', opts))
  }

  /** Where libvirt keeps a persistent domain's XML, for the URIs where that is known. */
  private configXmlPath (vm: string): string | undefined {
    if (this.uri === 'qemu:///system') return `/etc/libvirt/qemu/${vm}.xml`
    if (this.uri === 'qemu:///session') return join(homedir(), '.config/libvirt/qemu', `${vm}.xml`)
    return undefined
  }

  async list (opts?: OpOptions): Promise<VmInventory[]> {
    const names = parseNames(await this.virshOk(['list', '--all', '--name'], 'virsh list', opts))
    const out: VmInventory[] = []
    for (const name of names) {
      const blk = parseDomblklist(await this.virshOk(['domblklist', name, '--details'], 'virsh domblklist', opts))
      const state = parseDomstate(await this.virshOk(['domstate', name], 'virsh domstate', opts))
      const xml = await this.virshOk(['dumpxml', name, '--inactive'], 'virsh dumpxml', opts)
      const files: string[] = []
      const cfg = this.configXmlPath(name)
      if (cfg !== undefined) files.push(cfg)
      const nvram = elementText(xml, 'nvram')
      if (nvram !== undefined && nvram !== '') files.push(nvram)
      const vmInv: VmInventory = {
        name,
        disks: blk.filter(b => b.device === 'disk' && b.source !== null).map(b => b.source as string),
        files,
        state: inventoryState(state)
      }
      const uuid = elementText(xml, 'uuid')
      if (uuid !== undefined) vmInv.id = uuid
      out.push(vmInv)
    }
    return out
  }

  /** The replica XML among `files.files`: a `.xml` file holding a `<domain`. */
  private async findXml (vm: string, files: VmStartFiles): Promise<{ path: string, xml: string }> {
    for (const f of files.files.filter(p => p.toLowerCase().endsWith('.xml'))) {
      let xml: string
      try { xml = await readFile(f, 'utf8') } catch { continue }
      if (xml.length <= MAX_XML && /<domain[\s>]/.test(xml)) return { path: f, xml }
    }
    throw new VmFilesError(vm, 'no libvirt domain XML among the replicated files (add the VM\'s XML to its files:)')
  }

  /** The XML a start would define (exposed for tests). */
  async replicaXml (vm: string, files: VmStartFiles): Promise<string> {
    const { xml } = await this.findXml(vm, files)
    const name = elementText(xml, 'name')
    if (name !== vm) throw new VmFilesError(vm, `the saved XML defines domain "${name ?? '?'}"`)
    const disks = new ReplicaMatcher(files.disks, files.sourceMap)
    const others = new ReplicaMatcher(files.files, files.sourceMap)
    const { xml: out, unmapped } = rewriteDomainXml(xml, s => disks.match(s, true), p => others.match(p, false))
    if (unmapped.length > 0) throw new VmFilesError(vm, `no replica for disk ${unmapped.join(', ')}`)
    const left = domainDisks(out).filter(d => d.device === 'disk' && d.source !== null && !files.disks.includes(d.source))
    if (left.length > 0) throw new VmFilesError(vm, `disk ${left.map(d => d.source).join(', ')} is not a replica`)
    return out
  }

  async start (vm: string, files: VmStartFiles, epoch: number, opts?: OpOptions): Promise<void> {
    await this.epochs.admit(vm, epoch)
    const xml = await this.replicaXml(vm, files)
    if (await this.isRunning(vm, opts)) throw new VmAlreadyRunningError(vm)
    await mkdir(files.dir, { recursive: true })
    const path = join(files.dir, `${vm}.libvirt.xml`)
    await writeFile(`${path}.tmp`, xml)
    await rename(`${path}.tmp`, path)
    await this.virshOk(['define', path], 'virsh define', opts)
    await this.virshOk(['start', vm], 'virsh start', opts)
  }

  /** The XML a test start would create (exposed for tests). */
  async testXml (vm: string, testName: string, files: VmStartFiles): Promise<string> {
    const xml = await this.replicaXml(vm, files)
    // a clone must not boot on (and write to) the VM's own NVRAM store
    const nvram = elementText(xml, 'nvram')
    if (nvram !== undefined && nvram !== '' && !files.files.includes(nvram)) throw new VmFilesError(vm, `the NVRAM file ${nvram} is not among the restored files (add it to the VM's files:)`)
    return isolatedTestXml(xml, testName)
  }

  async startTest (vm: string, testName: string, files: VmStartFiles, opts?: OpOptions): Promise<void> {
    const xml = await this.testXml(vm, testName, files)
    if (await this.isRunning(testName, opts)) throw new VmAlreadyRunningError(testName)
    await mkdir(files.dir, { recursive: true })
    const path = join(files.dir, `${testName}.libvirt.xml`)
    await writeFile(`${path}.tmp`, xml)
    await rename(`${path}.tmp`, path)
    await this.virshOk(['create', path], 'virsh create', opts)
  }

  async stopTest (testName: string, opts?: OpOptions): Promise<void> { await this.turnOff(testName, opts) }

  async isTestRunning (testName: string, opts?: OpOptions): Promise<boolean> { return await this.isRunning(testName, opts) }

  async turnOff (vm: string, opts?: OpOptions): Promise<void> {
    await executeFence(await this.fenceAction(vm), { run: this.deps.run, clock: this.deps.clock, ...(opts?.signal !== undefined ? { signal: opts.signal } : {}) })
  }

  async isRunning (vm: string, opts?: OpOptions): Promise<boolean> {
    const r = await this.virshRun(['domstate', vm], opts)
    if (r.code !== 0) {
      if (NOT_FOUND.test(r.stderr)) return false
      throw new HypervisorCommandFailedError('virsh', r.code, tail(r.stderr), 'virsh domstate')
    }
    return !OFF_STATES.has(parseDomstate(r.stdout))
  }

  async fenceAction (vm: string): Promise<FenceAction> {
    return {
      kind: 'command',
      off: { kind: 'exec', argv: this.argv('destroy', vm), cwd: this.deps.cwd },
      timeoutMs: TIMEOUT_MS,
      verify: {
        command: { kind: 'exec', argv: this.argv('domstate', vm), cwd: this.deps.cwd },
        offWhen: { stdout: `^\\s*(${[...OFF_STATES].join('|')})\\s*$`, stderr: NOT_FOUND.source }
      }
    }
  }
}
