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
}

export interface VmSpecsMessage {
  v: 1
  /** The sender (just started) asks for the receiver's specs in return. */
  want?: boolean
  specs: WireVmSpec[]
}
