/**
 * What a host can hold for VMs, as its hypervisor tells it: memory in MiB and logical CPUs.
 * Parsers for each source (Linux /proc/meminfo, `virsh nodeinfo`, Hyper-V `Get-VMHost` JSON)
 * are pure and refuse odd answers with HypervisorOutputError; the daemon subtracts the
 * configured reserve and lets config override either dimension (daemon/ownership/capacity.ts).
 */
import { readFile } from 'node:fs/promises'
import { availableParallelism, totalmem } from 'node:os'
import { HypervisorOutputError } from './errors.ts'

/** A host's total memory (MiB) and logical CPUs, before any reserve. */
export interface HostResources {
  memoryMiB: number
  vcpus: number
}

const MAX_MIB = 0xffff_fffe

function checked (r: HostResources, what: string): HostResources {
  if (!Number.isSafeInteger(r.memoryMiB) || r.memoryMiB <= 0 || r.memoryMiB > MAX_MIB) throw new HypervisorOutputError(what, `memory ${String(r.memoryMiB)} MiB is not a plausible size`)
  if (!Number.isSafeInteger(r.vcpus) || r.vcpus <= 0 || r.vcpus > 65_536) throw new HypervisorOutputError(what, `${String(r.vcpus)} CPUs is not a plausible count`)
  return r
}

/** `MemTotal:  16318480 kB` from /proc/meminfo → MiB (the kernel's "kB" is KiB). */
export function parseMeminfo (text: string): number {
  const m = /^MemTotal:\s+(\d+)\s+kB\s*$/m.exec(text)
  if (m === null) throw new HypervisorOutputError('/proc/meminfo', 'no MemTotal line')
  return Math.floor(Number(m[1]) / 1024)
}

/** `virsh nodeinfo`: "CPU(s):  8" and "Memory size:  16318480 KiB". */
export function parseNodeinfo (text: string): HostResources {
  const cpus = /^CPU\(s\):\s+(\d+)\s*$/m.exec(text)
  const mem = /^Memory size:\s+(\d+)\s+KiB\s*$/m.exec(text)
  if (cpus === null) throw new HypervisorOutputError('virsh nodeinfo', 'no "CPU(s):" line')
  if (mem === null) throw new HypervisorOutputError('virsh nodeinfo', 'no "Memory size: N KiB" line')
  return checked({ memoryMiB: Math.floor(Number(mem[1]) / 1024), vcpus: Number(cpus[1]) }, 'virsh nodeinfo')
}

/** `Get-VMHost | Select LogicalProcessorCount, MemoryCapacity | ConvertTo-Json` (MemoryCapacity in bytes). */
export function parseVmHost (text: string): HostResources {
  let o: unknown
  try { o = JSON.parse(text.trim()) } catch { throw new HypervisorOutputError('Get-VMHost', 'not JSON') }
  if (Array.isArray(o)) o = o[0]
  if (typeof o !== 'object' || o === null) throw new HypervisorOutputError('Get-VMHost', 'not an object')
  const r = o as Record<string, unknown>
  const bytes = r.MemoryCapacity
  const cpus = r.LogicalProcessorCount
  if (typeof bytes !== 'number' || typeof cpus !== 'number') throw new HypervisorOutputError('Get-VMHost', 'MemoryCapacity or LogicalProcessorCount missing')
  return checked({ memoryMiB: Math.floor(bytes / (1024 * 1024)), vcpus: cpus }, 'Get-VMHost')
}

/** This machine (qemu and command drivers run VMs here): /proc/meminfo where there is one, else the OS's total. */
export async function localHostResources (meminfoPath = '/proc/meminfo'): Promise<HostResources> {
  let memoryMiB: number
  try {
    memoryMiB = parseMeminfo(await readFile(meminfoPath, 'utf8'))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    memoryMiB = Math.floor(totalmem() / (1024 * 1024))
  }
  return checked({ memoryMiB, vcpus: availableParallelism() }, meminfoPath)
}
