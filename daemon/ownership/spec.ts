/**
 * A configured VM's ownership policy (VmSpec) and its wire form (protocol/vmspec), in one place:
 * the composition root, reload and the spec announcements all build it here.
 */
import type { VmConfig } from '../../config/load.ts'
import type { WireVmSpec } from '../../protocol/vmspec/types.ts'
import type { VmSpec } from './types.ts'

/** A config written before 0.4 (or a test's) may lack the DR keys: they are optional here. */
type PolicyFields = Pick<VmConfig, 'name' | 'replicateTo' | 'failover' | 'startOrder' | 'priority'> & Partial<Pick<VmConfig, 'memoryMiB' | 'vcpus' | 'startAfter' | 'startAfterTimeoutMs'>>

/** The policy of a VM configured on `home`. */
export function homeVmSpec (v: PolicyFields, home: string): VmSpec {
  return {
    name: v.name,
    home,
    replicateTo: [...v.replicateTo],
    failover: v.failover,
    startOrder: v.startOrder,
    priority: v.priority,
    ...(v.memoryMiB !== undefined ? { memoryMiB: v.memoryMiB } : {}),
    ...(v.vcpus !== undefined ? { vcpus: v.vcpus } : {}),
    ...(v.startAfter !== undefined && v.startAfter.length > 0 ? { startAfter: [...v.startAfter], ...(v.startAfterTimeoutMs !== undefined ? { startAfterTimeoutMs: v.startAfterTimeoutMs } : {}) } : {})
  }
}

/** The announced form: every v1 field set, v2 fields only when used. */
export function wireVmSpec (v: VmSpec): WireVmSpec {
  return {
    name: v.name,
    home: v.home,
    replicateTo: v.replicateTo,
    failover: v.failover ?? 'auto',
    startOrder: v.startOrder ?? 0,
    priority: v.priority ?? 0,
    ...(v.memoryMiB !== undefined && v.memoryMiB > 0 ? { memoryMiB: v.memoryMiB } : {}),
    ...(v.vcpus !== undefined && v.vcpus > 0 ? { vcpus: v.vcpus } : {}),
    ...(v.startAfter !== undefined && v.startAfter.length > 0 ? { startAfter: v.startAfter } : {}),
    ...(v.startAfterTimeoutMs !== undefined && v.startAfter !== undefined && v.startAfter.length > 0 ? { startAfterTimeoutMs: v.startAfterTimeoutMs } : {})
  }
}
