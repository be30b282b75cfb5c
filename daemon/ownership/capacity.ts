/**
 * This host's capacity for placement: the configured `node.capacity`, with any dimension it
 * leaves out asked of the hypervisor, minus `reserveMemoryMiB`. Nothing configured and nothing
 * told: not counted (null) — the election places as before.
 */
import { errorMessage } from '../../common/errors.ts'
import type { HypervisorDriver } from '../hypervisor/driver.ts'
import type { Logger } from '../log.ts'
import type { HostCapacity } from './types.ts'

export interface CapacityConfig { memoryMiB?: number, vcpus?: number, reserveMemoryMiB: number }

/** How long the hypervisor may take to say what the host holds. */
const ASK_TIMEOUT_MS = 30_000

export async function resolveCapacity (config: CapacityConfig | undefined, driver: HypervisorDriver | undefined, log: Logger): Promise<HostCapacity | null> {
  let memoryMiB = config?.memoryMiB
  let vcpus = config?.vcpus
  let source = 'config'
  if ((memoryMiB === undefined || vcpus === undefined) && driver?.hostResources !== undefined) {
    try {
      const told = await driver.hostResources({ signal: AbortSignal.timeout(ASK_TIMEOUT_MS) })
      memoryMiB ??= told.memoryMiB
      vcpus ??= told.vcpus
      source = config?.memoryMiB === undefined && config?.vcpus === undefined ? driver.kind : `config + ${driver.kind}`
    } catch (err) {
      log.warn({ error: errorMessage(err) }, 'the hypervisor did not say what this host holds; capacity left out is not counted')
    }
  }
  if (memoryMiB === undefined && vcpus === undefined) return null
  const reserve = config?.reserveMemoryMiB ?? 0
  const cap: HostCapacity = { memoryMiB: memoryMiB === undefined ? Infinity : Math.max(0, memoryMiB - reserve), vcpus: vcpus ?? Infinity }
  log.info({ memoryMiB: cap.memoryMiB, vcpus: cap.vcpus, reserveMemoryMiB: reserve, source }, 'host capacity for VMs')
  return cap
}
