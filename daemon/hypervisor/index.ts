/**
 * Builds the driver the config's `hypervisor:` section names. `driver: none` (a witness, or a
 * host that only holds replicas) gives undefined.
 */
import type { Clock } from '../../common/clock.ts'
import type { RawConfig } from '../../config/schema.ts'
import type { HypervisorDriver } from './driver.ts'
import { createRunner, type CommandRunner } from './run.ts'
import { CommandDriver } from './command.ts'
import { QemuDriver } from './qemu.ts'
import { LibvirtDriver } from './libvirt.ts'
import { HypervDriver } from './hyperv.ts'
import { HypervisorConfigError } from './errors.ts'

export type HypervisorConfig = RawConfig['hypervisor']

export interface CreateDriverOptions {
  /** The config file's folder: commands run there and relative paths resolve against it. */
  cwd: string
  /** Where drivers keep their state (highest epochs, qemu runtime paths), e.g. <dataDir>/hypervisor. */
  stateDir: string
  clock: Clock
  /** @default the real runner on `clock` */
  run?: CommandRunner
}

export function createDriver (config: Pick<HypervisorConfig, 'driver' | 'command' | 'qemu' | 'libvirt' | 'hyperv'>, o: CreateDriverOptions): HypervisorDriver | undefined {
  const deps = { cwd: o.cwd, stateDir: o.stateDir, clock: o.clock, run: o.run ?? createRunner(o.clock) }
  switch (config.driver) {
    case 'none': return undefined
    case 'command':
      if (config.command === undefined) throw new HypervisorConfigError('driver "command" needs hypervisor.command.start/stop/status')
      return new CommandDriver(config.command, deps)
    case 'qemu': return new QemuDriver(config.qemu ?? {}, deps)
    case 'libvirt': return new LibvirtDriver(config.libvirt ?? {}, deps)
    case 'hyperv': return new HypervDriver(config.hyperv ?? {}, deps)
  }
}

export type { HypervisorDriver, TestInstanceOps, VmInventory, VmStartFiles, DriverKind, DriverDeps } from './driver.ts'
export { supportsTestInstances } from './driver.ts'
export type { FenceAction } from './fence.ts'
export type { CommandRunner, RunOptions, RunResult } from './run.ts'
export { CommandDriver } from './command.ts'
export { QemuDriver } from './qemu.ts'
export { LibvirtDriver } from './libvirt.ts'
export { HypervDriver } from './hyperv.ts'
