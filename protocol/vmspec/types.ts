/** The VM-spec announcement as it travels (JSON, one message per frame). */

export type WireFailoverPolicy = 'auto' | 'manual'

/** One VM's policy, as its home node states it. */
export interface WireVmSpec {
  name: string
  /** The announcing node: a node speaks only for the VMs it is home to. */
  home: string
  /** Replica targets in failover priority order. */
  replicateTo: string[]
  failover: WireFailoverPolicy
  startOrder: number
  priority: number
  /** Added in v2 (0.4): demand counted against a host's capacity, and start order. */
  memoryMiB?: number
  vcpus?: number
  startAfter?: string[]
  startAfterTimeoutMs?: number
}

export interface VmSpecsMessage {
  /** 1, or 2 when a spec carries a v2 field (a v1 node refuses v2: the fields are only sent when used). */
  v: 1 | 2
  /** The sender (just started) asks for the receiver's specs in return. */
  want?: boolean
  specs: WireVmSpec[]
}
