/**
 * Candidate ranking for an election: freshest applied consistent generation first (its epoch,
 * then its number), then the VM's configured target priority (`replicateTo` order), then the
 * node ID as a stable tie-break. Rank r waits r × electionStaggerMs before asking for votes, so
 * in the common case the best replica asks alone and no votes are split.
 */
import type { GenerationRef } from '../../protocol/election/messages.ts'
import type { VmSpec } from './types.ts'

/** Orders generations: negative when a is older than b. `null` (no replica) is older than any. */
export function compareGeneration (a: GenerationRef | null, b: GenerationRef | null): number {
  if (a === null || b === null) return a === b ? 0 : (a === null ? -1 : 1)
  if (a.epoch !== b.epoch) return a.epoch < b.epoch ? -1 : 1
  if (a.generation !== b.generation) return a.generation < b.generation ? -1 : 1
  return 0
}

/** Position in `replicateTo` (0 = most preferred); nodes not listed come after all listed ones. */
export function targetPriority (spec: VmSpec, id: string): number {
  const i = spec.replicateTo.indexOf(id)
  return i < 0 ? spec.replicateTo.length : i
}

export interface RankEntry { id: string, generation: GenerationRef }

/** Sorts candidates best first. */
export function rankCandidates (spec: VmSpec, entries: RankEntry[]): RankEntry[] {
  return [...entries].sort((a, b) => {
    const g = compareGeneration(b.generation, a.generation)
    if (g !== 0) return g
    const p = targetPriority(spec, a.id) - targetPriority(spec, b.id)
    if (p !== 0) return p
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0
  })
}
