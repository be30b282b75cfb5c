/** A node's status summary as it travels (JSON, one message per frame). */

export type WireMemberState = 'alive' | 'suspect' | 'dead'
export type WireTargetState = 'seeding' | 'in-sync' | 'behind' | 'disconnected' | 'error'

/** One member as the sending node sees it. */
export interface WireMemberView {
  name: string
  state: WireMemberState
  connected: boolean
  /** ms the member has been in `state`, at the sender's `atWallMs`. */
  sinceMs: number
}

export interface WireTargetSummary {
  node: string
  state: WireTargetState
  ackedGeneration: number
  lagMs: number | null
  rpoMs: number | null
  bytesPending: number
  rateBytesPerSec: number | null
  seedProgress: number | null
}

export interface WireVmSummary {
  name: string
  owner: string | null
  epoch: number
  runningHere: boolean
  generation: number
  /** On the VM's source: how its changes are found (null elsewhere). */
  changeSource: 'hash-scan' | 'told' | 'qemu-bitmap' | null
  /** On the VM's source: the RPO the source and scan budget allow, ms (null: unknown or elsewhere). */
  rpoBoundMs: number | null
  /**
   * On the VM's source: its RPO target (`vms[].rpo`), ms. Optional, added after the first
   * 0.4.0 summaries: a sender that leaves it out (or a VM not sourced there) has none.
   */
  rpoTargetMs?: number
  /** Replication targets, on the VM's source. */
  targets: WireTargetSummary[]
  /** The replica of it held here, if any. */
  replica: null | { from: string, appliedGeneration: number, consistentGeneration: number | null, seeding: boolean }
}

export interface StatusSummaryMessage {
  v: 1
  node: string
  role: 'host' | 'witness'
  /** Increases with every summary the sender builds (a receiver keeps the newest). */
  seq: number
  /** Sender's wall clock when it built the summary (display; ages are measured by the receiver). */
  atWallMs: number
  uptimeMs: number
  /** The sender asks for the receiver's summary in return (it just started). */
  want?: boolean
  members: WireMemberView[]
  vms: WireVmSummary[]
}
