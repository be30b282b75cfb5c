/**
 * Ownership and election messages (see daemon/ownership/machine.ts for who sends what when).
 * Every message names one VM; epochs are u64 on the wire and safe integers in memory. `seq`
 * identifies one renewal or vote round of the sender, so a late answer is always matched to the
 * round (and so to the send time) it answers — the lease arithmetic depends on that.
 */

/** Wire values of message types. Append-only: never renumber or reuse. */
export const MESSAGE_TYPE_WIRE = {
  renew: 1,
  renewAck: 2,
  renewNack: 3,
  requestVote: 4,
  vote: 5,
  owner: 6,
  release: 7,
  replicaReport: 8,
  takeover: 9,
  room: 10,
  runState: 11
} as const

export type ElectionMessageType = keyof typeof MESSAGE_TYPE_WIRE

/** Why a vote was granted or refused. Append-only wire values. */
export const VOTE_REASON_WIRE = {
  granted: 0,
  /** The voter granted this epoch to another candidate, or a higher epoch to anyone. */
  alreadyVoted: 1,
  /** The voter's lease promise to another node has not expired (retryAfterMs says how long). */
  promised: 2,
  /** The requested epoch is not above the highest epoch the voter knows an owner for. */
  staleEpoch: 3,
  /** The voter knows of a live replica fresher than the candidate's. */
  staleGeneration: 4,
  /** The current owner is alive in the voter's view. */
  ownerAlive: 5,
  /** The voter does not know this VM. */
  unknownVm: 6,
  /** The candidate cannot hold the VM (not a configured host). */
  notEligible: 7,
  /** The voter restarted recently and may have made promises it no longer remembers. */
  recovering: 8
} as const

export type VoteReason = keyof typeof VOTE_REASON_WIRE

/** Why a renewal was refused. Append-only wire values. */
export const NACK_REASON_WIRE = {
  /** A higher epoch has a known owner (currentEpoch/owner say which). */
  staleEpoch: 1,
  /** The voter granted a higher epoch to a candidate. */
  votedHigher: 2,
  /** The voter knows another owner at this same epoch. */
  notOwner: 3,
  /** The voter does not know this VM. */
  unknownVm: 4
} as const

export type NackReason = keyof typeof NACK_REASON_WIRE

/** Codec format version carried in the first byte. */
export const ELECTION_WIRE_VERSION = 1
/** Largest encoded message accepted or produced. */
export const MAX_MESSAGE_BYTES = 1024
/** Longest VM name or node ID, in UTF-8 bytes. */
export const MAX_NAME_BYTES = 128

/** A replica's applied generation: the ownership epoch whose data it is, then the generation. */
export interface GenerationRef {
  epoch: number
  generation: number
}

/** Owner → every voter, every renewMs: "I still own `vm` at `epoch`". */
export interface Renew { type: 'renew', vm: string, epoch: number, seq: number }

/** Voter → owner: promise given (not to grant `vm` to anyone else for leaseMs·(1+drift)). */
export interface RenewAck { type: 'renewAck', vm: string, epoch: number, seq: number }

/** Voter → owner: refused; what the voter knows instead. `owner` is '' when unknown. */
export interface RenewNack {
  type: 'renewNack'
  vm: string
  epoch: number
  seq: number
  reason: NackReason
  currentEpoch: number
  owner: string
}

/** Candidate → every voter. */
export interface RequestVote {
  type: 'requestVote'
  vm: string
  epoch: number
  seq: number
  candidate: string
  /** The candidate's applied consistent generation. */
  generation: GenerationRef
}

/** Voter → candidate. `owner` is '' when unknown; retryAfterMs only for promised/recovering. */
export interface Vote {
  type: 'vote'
  vm: string
  epoch: number
  seq: number
  candidate: string
  granted: boolean
  reason: VoteReason
  currentEpoch: number
  owner: string
  retryAfterMs: number
}

/** Winner → everyone: `owner` holds `vm` from `epoch` on. */
export interface OwnerAnnouncement { type: 'owner', vm: string, epoch: number, owner: string }

/** Owner → every voter on a planned failover: VM stopped, final generation shipped to `to`. */
export interface Release { type: 'release', vm: string, epoch: number, to: string, generation: GenerationRef }

/** Replica holder → every voter: its applied consistent generation (null: it holds none now). */
export interface ReplicaReport { type: 'replicaReport', vm: string, generation: GenerationRef | null }

/** Operator's node → target node: run a failover for `vm` here (force: without a majority). */
export interface Takeover { type: 'takeover', vm: string, force: boolean }

/**
 * Replica holder → every voter, with each replicaReport and whenever it changes: whether the
 * holder has room to run `vm` now (its free capacity counts what it runs, starts and stands
 * for), and the host's capacity and free room (UNLIMITED when not counted). Voters rank holders
 * without room last; a holder without room never stands. Added in 0.4 (wire type 10): an older
 * node drops it as an unknown type and ranks as before.
 */
export interface Room {
  type: 'room'
  vm: string
  fits: boolean
  capacity: { memoryMiB: number, vcpus: number }
  free: { memoryMiB: number, vcpus: number }
}

/** Capacity value meaning "not counted" on the wire (u32 max). */
export const UNLIMITED = 0xffff_ffff

/**
 * Owner → every voter, when the VM starts or stops running and every reportIntervalMs while it
 * runs: others' `startAfter` waits on it. Added in 0.4 (wire type 11).
 */
export interface RunState { type: 'runState', vm: string, epoch: number, running: boolean }

export type ElectionMessage =
  | Renew | RenewAck | RenewNack | RequestVote | Vote | OwnerAnnouncement | Release | ReplicaReport | Takeover | Room | RunState
