/**
 * SWIM/Lifeguard messages. Every message carries the sender's view of itself (`incarnation`) and
 * a bounded list of piggybacked membership updates (gossip). `target` on ping/ack is the sender's
 * claim about the *recipient* (Lifeguard's buddy system, and how a restarted member learns the
 * incarnation its peers remember so it can refute it).
 */

export type MemberState = 'alive' | 'suspect' | 'dead'

/** Wire values of update kinds and claim states. Append-only: never renumber or reuse. */
export const UPDATE_KIND_WIRE = { alive: 1, suspect: 2, dead: 3 } as const satisfies Record<MemberState, number>

/** Wire values of message types. Append-only: never renumber or reuse. */
export const MESSAGE_TYPE_WIRE = { ping: 1, ack: 2, pingReq: 3, nack: 4, gossip: 5 } as const

/** Codec format version carried in the first byte. */
export const MEMBERSHIP_WIRE_VERSION = 1

/** Largest encoded message accepted or produced. */
export const MAX_MESSAGE_BYTES = 64 * 1024
/** Most piggybacked updates in one message. */
export const MAX_UPDATES = 64
/** Longest member ID, in UTF-8 bytes (libp2p peer IDs are ~52 characters). */
export const MAX_ID_BYTES = 128

/** A membership update gossiped between members. */
export interface Update {
  kind: MemberState
  id: string
  incarnation: number
  /** Who originated a suspect/dead verdict (counts as an independent confirmation). */
  from?: string
}

/** What the sender believes about the member it addresses. */
export interface Claim {
  state: MemberState
  incarnation: number
}

export interface Ping {
  type: 'ping'
  seq: number
  /** Sender's own incarnation: a ping is direct proof that the sender is alive. */
  incarnation: number
  /** Sender's view of the recipient. */
  target?: Claim
  piggyback: Update[]
}

export interface Ack {
  type: 'ack'
  seq: number
  /** Incarnation of the probed member (relayed unchanged by an intermediary). */
  incarnation: number
  /** Sender's view of the recipient, when it disagrees with what the recipient told it. */
  target?: Claim
  piggyback: Update[]
}

export interface PingReq {
  type: 'pingReq'
  seq: number
  /** Sender's own incarnation. */
  incarnation: number
  /** The member to probe on the sender's behalf. */
  target: string
  /** The requester's view of `target`, forwarded in the relayed ping when it is newer. */
  claim?: Claim
  /** How long the requester will wait; the intermediary nacks after 80 % of it. */
  timeoutMs: number
  piggyback: Update[]
}

export interface Nack {
  type: 'nack'
  seq: number
  /** Sender's own incarnation. */
  incarnation: number
  piggyback: Update[]
}

/**
 * Pushes urgent updates (a new suspicion, a death, a refutation) to a few members at once
 * instead of waiting for the next ping to carry them. Needs no answer.
 */
export interface Gossip {
  type: 'gossip'
  /** Unused; always 0 (kept so every message has the same header). */
  seq: number
  /** Sender's own incarnation. */
  incarnation: number
  piggyback: Update[]
}

export type SwimMessage = Ping | Ack | PingReq | Nack | Gossip
