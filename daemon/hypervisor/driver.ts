/**
 * What the rest of vmesh needs from a hypervisor: list the VMs here, start one on replica
 * files at an epoch, turn one off hard, ask whether one runs — plus a serializable "fence
 * action" the watchdog process can execute on its own to turn a VM off without the daemon —
 * and, optionally, isolated test instances for `vmesh failover --test`.
 */
import type { OsKind } from '../../common/platform/index.ts'
import type { Clock } from '../../common/clock.ts'
import type { FenceAction } from './fence.ts'
import type { CommandRunner } from './run.ts'
import type { HostResources } from './capacity.ts'

export type VmRunState = 'running' | 'off' | 'other'

export interface VmInventory {
  name: string
  /** Virtual disk paths (VHD/VHDX/...), absolute. */
  disks: string[]
  /** Other files replicated whole: configuration, NVRAM, saved state. */
  files: string[]
  state: VmRunState
  /** The hypervisor's own ID (Hyper-V GUID, libvirt UUID) when it has one. */
  id?: string
}

export interface VmStartFiles {
  /** Replica disk paths. */
  disks: string[]
  /** Replica paths of the other files (the VM's XML / .vmcx / NVRAM ...). */
  files: string[]
  /** The folder holding the replica; drivers put their runtime files (logs, sockets) here. */
  dir: string
  /**
   * Source path → replica path, when known (the replica's `files` map). Drivers that rewrite a
   * VM definition use it to point each disk at its replica; without it they match by file
   * name, then by order.
   */
  sourceMap?: Record<string, string>
}

export interface OpOptions { signal?: AbortSignal }

export type DriverKind = 'command' | 'qemu' | 'libvirt' | 'hyperv'

/**
 * Test failover: a clone of a VM booted from a restored recovery point under its own name
 * (`testName`), cut off from the network, in its own runtime folder (`files.dir`). It is not
 * ownership: no epoch is admitted or recorded, the watchdog never fences it, and stopping it
 * never touches the VM of the same source.
 */
export interface TestInstanceOps {
  /**
   * Boots the clone. Refuses with VmAlreadyRunningError when something named `testName` runs
   * (or, for drivers that register VMs, exists) already.
   */
  startTest: (vm: string, testName: string, files: VmStartFiles, opts?: OpOptions) => Promise<void>
  /** Turns the clone off hard and unregisters it; its files stay. Idempotent. */
  stopTest: (testName: string, opts?: OpOptions) => Promise<void>
  isTestRunning: (testName: string, opts?: OpOptions) => Promise<boolean>
}

export interface HypervisorDriver extends Partial<TestInstanceOps> {
  readonly kind: DriverKind
  /** VMs on this host with their disks and files. */
  list: (opts?: OpOptions) => Promise<VmInventory[]>
  /**
   * Starts `vm` on the given (replica) files. Refuses with StaleEpochError when `epoch` is
   * below the highest seen for the VM; the epoch is recorded durably before anything runs.
   */
  start: (vm: string, files: VmStartFiles, epoch: number, opts?: OpOptions) => Promise<void>
  /** Hard power-off, now. Idempotent: a VM that is off (or unknown here) is success. */
  turnOff: (vm: string, opts?: OpOptions) => Promise<void>
  /** True while the VM exists and is not off (paused and saving count as running). */
  isRunning: (vm: string, opts?: OpOptions) => Promise<boolean>
  /** How the watchdog process turns `vm` off by itself (plain data, sent over its pipe). */
  fenceAction: (vm: string) => Promise<FenceAction>
  /**
   * This host lost `vm` (demotion): drivers that register VMs unregister it here, files kept,
   * so a later start on this host registers it afresh. Turns it off first if it still runs.
   * Idempotent; optional (drivers without a registry have nothing to release).
   */
  release?: (vm: string, opts?: OpOptions) => Promise<void>
  /** vmesh takes `vm` over (protect): the hypervisor must never start it on its own. Optional. */
  preventAutoStart?: (vm: string, opts?: OpOptions) => Promise<void>
  /** Ends long-lived helpers (a PowerShell session). Optional, idempotent. */
  close?: () => Promise<void>
  /** The host's memory and logical CPUs as the hypervisor tells them (capacity.ts). Optional. */
  hostResources?: (opts?: OpOptions) => Promise<HostResources>
}

/** What every driver is built with. */
export interface DriverDeps {
  /** Folder commands run in and relative paths resolve against (the config's folder). */
  cwd: string
  /** Folder for the driver's own state (highest epochs, runtime paths). */
  stateDir: string
  clock: Clock
  /** Runs external commands; tests pass one that replays recorded output. */
  run: CommandRunner
  /** Whose shell and quoting command templates use (common/platform). @default hostOs */
  os?: OsKind
}

/** True when `d` can run isolated test instances. */
export function supportsTestInstances (d: HypervisorDriver): d is HypervisorDriver & TestInstanceOps {
  return d.startTest !== undefined && d.stopTest !== undefined && d.isTestRunning !== undefined
}
