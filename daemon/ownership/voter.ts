/**
 * A voter's decision on one vote request, as a pure function. A grant is safe only if every
 * rule holds; the order decides which refusal is reported (the most useful to the candidate
 * first). The caller persists the grant before answering and records it as a lease promise to
 * the candidate (a grant is the winner's first lease).
 */
import { compareGeneration } from './rank.ts'
import type { GenerationRef, MemberState, VoteDecision } from './types.ts'

/** Promise key meaning "anyone": the quiet period after a restart, when acks given before it are forgotten. */
export const ANY_HOLDER = '*'

export interface VoterState {
  /** Highest epoch with a known owner, and that owner. */
  epoch: number
  owner: string
  /** This voter's latest grant. */
  votedEpoch: number
  votedFor: string | null
  released: { epoch: number, to: string } | null
  /** Lease promises still possibly in force: holder → end (local monotonic). */
  promises: ReadonlyMap<string, number>
}

export interface VoteContext {
  now: number
  /** The voter's failure-detector view of the known owner ('alive' when the voter is the owner). */
  ownerState: MemberState | 'unknown'
  /** The candidate is a configured host (witnesses never hold VMs). */
  candidateIsHost: boolean
  /** Freshest generation of any replica the voter knows, other than the candidate's and held by a non-dead node. */
  freshest: GenerationRef | null
}

export interface VoteRequest {
  epoch: number
  candidate: string
  generation: GenerationRef
}

export function decideVote (s: VoterState, req: VoteRequest, ctx: VoteContext): VoteDecision {
  if (!ctx.candidateIsHost) return refuse('notEligible')
  if (req.epoch <= s.epoch) return refuse('staleEpoch')
  if (s.votedEpoch > req.epoch || (s.votedEpoch === req.epoch && s.votedFor !== req.candidate)) return refuse('alreadyVoted')
  // The same grant again (a retry, a duplicate): it was decided and persisted already.
  if (s.votedEpoch === req.epoch) return { granted: true }
  // A planned release: the owner stopped the VM and dropped its claim on this epoch.
  const released = s.released !== null && s.released.epoch === s.epoch
  if (!released && s.owner !== req.candidate && ctx.ownerState === 'alive') return refuse('ownerAlive')
  let until = -Infinity
  let quiet = false
  for (const [holder, end] of s.promises) {
    if (end <= ctx.now || holder === req.candidate) continue
    // The release waives the owner's promise of the released epoch, not the one a later grant
    // to the same node (it reclaimed the VM) carries.
    if (released && holder === s.owner && !(s.votedEpoch > s.epoch && s.votedFor === holder)) continue
    if (end > until) until = end
    if (holder === ANY_HOLDER) quiet = true
  }
  if (until > ctx.now) return refuse(quiet ? 'recovering' : 'promised', until - ctx.now)
  if (compareGeneration(req.generation, ctx.freshest) < 0) return refuse('staleGeneration')
  return { granted: true }
}

function refuse (reason: Exclude<VoteDecision & { granted: false }, never>['reason'], retryAfterMs = 0): VoteDecision {
  return { granted: false, reason, retryAfterMs: Math.min(0xffff_ffff, Math.max(0, Math.ceil(retryAfterMs))) }
}
