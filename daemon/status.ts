/**
 * The shape of `vmesh status --json` (see shared/interface.md). Built from the services'
 * live views; extended, never renamed.
 */
export interface MemberStatus {
  name: string
  peerId: string
  role: 'host' | 'witness'
  state: 'alive' | 'suspect' | 'dead'
  incarnation: number
  /** Milliseconds since the member entered its current state. */
  sinceMs: number
  everSeen: boolean
  connected: boolean
}

export interface TargetStatus {
  node: string
  state: 'seeding' | 'in-sync' | 'behind' | 'disconnected' | 'error'
  ackedGeneration: number
  lagMs: number | null
  bytesPending: number
  rateBytesPerSec?: number
  seedProgress?: number
  error?: string
}

export interface VmStatus {
  name: string
  owner: string | null
  epoch: number
  runningHere: boolean
  generation: number
  targets: TargetStatus[]
  replica: null | { from: string, appliedGeneration: number, files: Record<string, string> }
}

export interface StatusDocument {
  node: { name: string, peerId: string, role: 'host' | 'witness', incarnation?: number, awareness?: number, uptimeMs: number, profile: string }
  members: MemberStatus[]
  vms: VmStatus[]
}
