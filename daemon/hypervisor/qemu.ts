/**
 * The `qemu` driver: runs qemu-system-x86_64 directly on the replica files.
 *
 * start: admit the epoch → detect each disk's format from its signature → qemu -daemonize
 * with a pid file, a QMP socket and a serial log in the VM's folder → remember those paths in
 * the state dir (turnOff and isRunning only get the VM's name).
 * turnOff: QMP `quit` if the socket answers (qemu exits at once: a hard off for the guest),
 * else — or if the process lingers — SIGKILL the pid from the pid file.
 * isRunning: the pid is alive and its command line is this VM's qemu.
 * The watchdog's fence action is a plain SIGKILL: no socket, no waiting on qemu. It finds the
 * process by its `-name guest=<vm>` argument (and the pid file once known), because the
 * watchdog is armed before the first start, when the VM's folder is not known yet.
 * Test instances run the same command line under the test name, in the test's own folder,
 * with every network option of `args` dropped and `-nic none` added, and no epoch.
 */
import { access, constants, mkdir, rm } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { createHash } from 'node:crypto'
import type { DriverDeps, HypervisorDriver, OpOptions, TestInstanceOps, VmInventory, VmStartFiles } from './driver.ts'
import { EpochStore } from './epochs.ts'
import { localHostResources, type HostResources } from './capacity.ts'
import { detectDiskFormat } from './disk-format.ts'
import { pidMatches, readPidFile, type FenceAction } from './fence.ts'
import { qmpCommand } from './qmp.ts'
import { escapeQemuOpt, listQemuProcesses, parseQemuOpts } from './qemu-procs.ts'
import { readState, writeState } from './state-file.ts'
import { HypervisorCommandFailedError, HypervisorConfigError, HypervisorStateError, HypervisorTimeoutError, VmAlreadyRunningError, VmFilesError, tail } from './errors.ts'

export interface QemuDriverConfig {
  /** @default 'qemu-system-x86_64' */
  binary?: string
  /** Extra arguments appended to the command line (devices, `-accel kvm`, ...). @default [] */
  args?: string[]
  /** Guest memory. @default 256 */
  memoryMiB?: number
}

export interface QemuDeps extends DriverDeps {
  /** Where running processes are looked up. @default '/proc' */
  procRoot?: string
}

interface Runtime { dir: string, pidFile: string, qmpSocket: string, serialLog: string, disks: string[], files: string[], epoch: number, test?: boolean }

export const QEMU_STATE_FILE = 'qemu-vms.json'
/** sun_path is 108 bytes on Linux; keep a margin. */
const MAX_SOCKET_PATH = 100
const START_TIMEOUT_MS = 60_000
const QUIT_TIMEOUT_MS = 2000
const EXIT_WAIT_MS = 3000
const KILL_WAIT_MS = 5000

export class QemuDriver implements HypervisorDriver, TestInstanceOps {
  readonly kind = 'qemu' as const
  private readonly epochs: EpochStore
  private readonly stateFile: string
  private readonly binary: string
  private readonly memoryMiB: number
  private readonly extraArgs: string[]
  private runtime?: Map<string, Runtime>
  private chain: Promise<unknown> = Promise.resolve()

  constructor (config: QemuDriverConfig, private readonly deps: QemuDeps) {
    this.binary = config.binary ?? 'qemu-system-x86_64'
    this.memoryMiB = config.memoryMiB ?? 256
    this.extraArgs = config.args ?? []
    if (!Number.isInteger(this.memoryMiB) || this.memoryMiB <= 0) throw new HypervisorConfigError('hypervisor.qemu.memoryMiB must be a positive integer')
    this.epochs = new EpochStore(deps.stateDir)
    this.stateFile = join(deps.stateDir, QEMU_STATE_FILE)
  }

  private async load (): Promise<Map<string, Runtime>> {
    if (this.runtime !== undefined) return this.runtime
    const doc = await readState(this.stateFile) as { vms?: Record<string, Runtime> } | undefined
    const map = new Map<string, Runtime>()
    if (doc !== undefined) {
      if (typeof doc.vms !== 'object' || doc.vms === null) throw new HypervisorStateError(this.stateFile, 'expected { "vms": { ... } }')
      for (const [vm, r] of Object.entries(doc.vms)) {
        if (typeof r?.pidFile !== 'string' || typeof r.qmpSocket !== 'string') throw new HypervisorStateError(this.stateFile, `bad entry for "${vm}"`)
        map.set(vm, r)
      }
    }
    this.runtime = map
    return map
  }

  /** Records (or, with undefined, forgets) a VM's runtime paths. */
  private async save (vm: string, r: Runtime | undefined): Promise<void> {
    const run = this.chain.catch(() => {}).then(async () => {
      const map = new Map(await this.load())
      if (r === undefined) map.delete(vm); else map.set(vm, r)
      await writeState(this.stateFile, { version: 1, vms: Object.fromEntries(map) })
      this.runtime = map
    })
    this.chain = run
    await run
  }

  /** The live qemu pid of `vm`, from its pid file or (for VMs started elsewhere) /proc. */
  private async pidOf (vm: string): Promise<number | undefined> {
    const r = (await this.load()).get(vm)
    if (r !== undefined) {
      const pid = await readPidFile(r.pidFile)
      if (pid !== undefined && await pidMatches(pid, guestTag(vm))) return pid
      return undefined
    }
    const p = (await listQemuProcesses(this.deps.procRoot)).find(q => q.name === vm)
    return p?.pid
  }

  /** VMs run on this machine: its /proc/meminfo and CPU count. */
  async hostResources (_opts?: OpOptions): Promise<HostResources> { return await localHostResources() }

  async list (_opts?: OpOptions): Promise<VmInventory[]> {
    const runtime = await this.load()
    const procs = await listQemuProcesses(this.deps.procRoot)
    const out = new Map<string, VmInventory>()
    // test instances are vmesh's own throwaway clones, not VMs to discover or protect
    const tests = new Set([...runtime].filter(([, r]) => r.test === true).map(([vm]) => vm))
    for (const [vm, r] of runtime) {
      if (tests.has(vm)) continue
      out.set(vm, { name: vm, disks: r.disks, files: r.files, state: (await this.pidOf(vm)) !== undefined ? 'running' : 'off' })
    }
    for (const p of procs) {
      const name = p.name ?? `qemu-${p.pid}`
      if (!out.has(name) && !tests.has(name)) out.set(name, { name, disks: p.disks, files: [], state: 'running' })
    }
    return [...out.values()].sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
  }

  private socketPath (dir: string, vm: string): string {
    const p = join(dir, `${vm}.qmp`)
    if (Buffer.byteLength(p) <= MAX_SOCKET_PATH) return p
    // the replica folder is too deep for a unix socket: use a short name in the state dir
    const short = join(this.deps.stateDir, `qmp-${createHash('sha256').update(p).digest('hex').slice(0, 12)}.sock`)
    if (Buffer.byteLength(short) > MAX_SOCKET_PATH) throw new HypervisorConfigError(`cannot place a QMP socket for "${vm}": ${short} is too long for a unix socket`)
    return short
  }

  /** The qemu command line for a start (exposed for tests). `isolated`: no network at all. */
  async commandLine (vm: string, files: VmStartFiles, opts: { isolated?: boolean } = {}): Promise<{ argv: string[], runtime: Runtime }> {
    if (files.disks.length === 0) throw new VmFilesError(vm, 'the qemu driver needs at least one disk')
    const dir = files.dir
    const runtime: Runtime = {
      dir,
      pidFile: join(dir, `${vm}.pid`),
      qmpSocket: this.socketPath(dir, vm),
      serialLog: join(dir, `${vm}.serial.log`),
      disks: files.disks,
      files: files.files,
      epoch: 0
    }
    for (const p of [runtime.pidFile, runtime.qmpSocket, runtime.serialLog]) {
      if (p.includes(',')) throw new HypervisorConfigError(`qemu cannot take a path with a comma: ${p}`)
    }
    const drives: string[] = []
    for (const d of files.disks) {
      let fmt
      try { fmt = await detectDiskFormat(d) } catch (err) { throw new VmFilesError(vm, `cannot read disk ${d}: ${(err as Error).message}`) }
      drives.push('-drive', `file=${escapeQemuOpt(d)},format=${fmt},if=ide`)
    }
    const extra = opts.isolated === true ? [...withoutNetwork(this.extraArgs), '-nic', 'none'] : this.extraArgs
    const userAccel = this.extraArgs.some(a => a === '-accel' || a === '-enable-kvm' || (a.startsWith('accel=') || a.includes(',accel=')))
    const accel = userAccel ? [] : (await kvmUsable() ? ['-accel', 'kvm', '-accel', 'tcg'] : ['-accel', 'tcg'])
    const argv = [
      this.binary,
      '-name', guestTag(vm),
      '-m', String(this.memoryMiB),
      ...accel,
      '-display', 'none',
      '-monitor', 'none',
      '-serial', `file:${runtime.serialLog}`,
      '-qmp', `unix:${runtime.qmpSocket},server=on,wait=off`,
      '-pidfile', runtime.pidFile,
      '-daemonize',
      ...drives,
      ...extra
    ]
    return { argv, runtime }
  }

  async start (vm: string, files: VmStartFiles, epoch: number, opts?: OpOptions): Promise<void> {
    await this.epochs.admit(vm, epoch)
    if ((await this.pidOf(vm)) !== undefined) throw new VmAlreadyRunningError(vm)
    await mkdir(files.dir, { recursive: true })
    const { argv, runtime } = await this.commandLine(vm, files)
    runtime.epoch = epoch
    await rm(runtime.pidFile, { force: true })
    await rm(runtime.qmpSocket, { force: true })
    // remembered before qemu runs: a daemon crash mid-start must still be able to kill it
    await this.save(vm, runtime)
    const r = await this.deps.run(argv, { cwd: files.dir, timeoutMs: START_TIMEOUT_MS, ...(opts?.signal !== undefined ? { signal: opts.signal } : {}) })
    if (r.code !== 0) throw new HypervisorCommandFailedError(basename(this.binary), r.code, tail(r.stderr), 'qemu start')
    if ((await this.pidOf(vm)) === undefined) throw new HypervisorCommandFailedError(basename(this.binary), r.code, `qemu reported success but ${runtime.pidFile} names no live qemu`, 'qemu start')
  }

  async startTest (vm: string, testName: string, files: VmStartFiles, opts?: OpOptions): Promise<void> {
    if ((await this.pidOf(testName)) !== undefined) throw new VmAlreadyRunningError(testName)
    await mkdir(files.dir, { recursive: true })
    const { argv, runtime } = await this.commandLine(testName, files, { isolated: true })
    runtime.test = true
    await rm(runtime.pidFile, { force: true })
    await rm(runtime.qmpSocket, { force: true })
    await this.save(testName, runtime)
    const r = await this.deps.run(argv, { cwd: files.dir, timeoutMs: START_TIMEOUT_MS, ...(opts?.signal !== undefined ? { signal: opts.signal } : {}) })
    if (r.code !== 0) throw new HypervisorCommandFailedError(basename(this.binary), r.code, tail(r.stderr), `qemu start of a test instance of ${vm}`)
    if ((await this.pidOf(testName)) === undefined) throw new HypervisorCommandFailedError(basename(this.binary), r.code, `qemu reported success but ${runtime.pidFile} names no live qemu`, 'qemu test start')
  }

  async stopTest (testName: string, opts?: OpOptions): Promise<void> {
    await this.turnOff(testName, opts)
    if ((await this.load()).has(testName)) await this.save(testName, undefined)
  }

  async isTestRunning (testName: string, opts?: OpOptions): Promise<boolean> { return await this.isRunning(testName, opts) }

  async turnOff (vm: string, opts?: OpOptions): Promise<void> {
    const pid = await this.pidOf(vm)
    if (pid === undefined) return
    const r = (await this.load()).get(vm)
    const clock = this.deps.clock
    const gone = async (withinMs: number): Promise<boolean> => {
      const t0 = clock.now()
      for (let i = 0; i < 100_000 && clock.now() - t0 < withinMs; i++) {
        if (!(await pidMatches(pid, guestTag(vm)))) return true
        await clock.sleep(10, opts?.signal)
      }
      return !(await pidMatches(pid, guestTag(vm)))
    }
    if (r !== undefined) {
      try {
        await qmpCommand(r.qmpSocket, 'quit', undefined, { clock, timeoutMs: QUIT_TIMEOUT_MS, ...(opts?.signal !== undefined ? { signal: opts.signal } : {}) })
        if (await gone(EXIT_WAIT_MS)) return
      } catch (err) {
        if (opts?.signal?.aborted === true) throw err
        // the monitor is hung or gone: fall through to the kill
      }
    }
    try { process.kill(pid, 'SIGKILL') } catch (err) { if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err }
    if (!(await gone(KILL_WAIT_MS))) throw new HypervisorTimeoutError(`kill ${pid}`, KILL_WAIT_MS)
  }

  async isRunning (vm: string, _opts?: OpOptions): Promise<boolean> {
    return (await this.pidOf(vm)) !== undefined
  }

  async fenceAction (vm: string): Promise<FenceAction> {
    const r = (await this.load()).get(vm)
    return { kind: 'kill', match: guestTag(vm), program: basename(this.binary), ...(r !== undefined ? { pidFile: r.pidFile } : {}), timeoutMs: KILL_WAIT_MS }
  }

  /** Highest start epoch recorded for `vm` (0 when none). */
  async highestEpoch (vm: string): Promise<number> { return await this.epochs.highest(vm) }
}

/** Options that give a guest a network: dropped from a test instance's command line. */
const NET_OPTS = new Set(['-nic', '-net', '-netdev'])
const NIC_MODEL = /^(virtio-net|e1000|rtl8139|ne2k|pcnet|i8255|vmxnet|usb-net|igb|tulip|sungem|spapr-vlan)/

/**
 * `args` without -nic/-net/-netdev and without -device entries that are network cards (by
 * model, or by a `netdev=` backend), so the user's extra args cannot re-attach a clone to a LAN.
 */
export function withoutNetwork (args: string[]): string[] {
  const out: string[] = []
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string
    const opt = a.replace(/^--/, '-')
    const v = args[i + 1]
    if (NET_OPTS.has(opt)) { i++; continue }
    if (opt === '-device' && v !== undefined) {
      const o = parseQemuOpts(v)
      const model = o.get('driver') ?? o.get('') ?? ''
      if (NIC_MODEL.test(model) || o.has('netdev')) { i++; continue }
    }
    out.push(a)
  }
  return out
}

async function kvmUsable (): Promise<boolean> {
  try { await access('/dev/kvm', constants.R_OK | constants.W_OK); return true } catch { return false }
}

/** The `-name` argument, which also identifies the VM's process in /proc. */
function guestTag (vm: string): string { return `guest=${escapeQemuOpt(vm)}` }

/**
 * The QMP socket of `vm` as this driver recorded it when it started the VM (its state file in
 * `stateDir`), or undefined when the driver has not started it. Read-only: for the change
 * capture (dirty bitmaps), which runs beside the driver and must not own its state.
 */
export async function qemuQmpSocketOf (stateDir: string, vm: string): Promise<string | undefined> {
  const doc = await readState(join(stateDir, QEMU_STATE_FILE)) as { vms?: Record<string, Partial<Runtime>> } | undefined
  const r = doc?.vms?.[vm]
  return typeof r?.qmpSocket === 'string' && r.test !== true ? r.qmpSocket : undefined
}
