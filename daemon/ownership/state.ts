/**
 * What the ownership machine keeps per VM, and how it is built from (and saved to) a durable
 * record. Persisted fields come first; everything else is rebuilt after a restart.
 */
import type { GenerationRef, Vote } from '../../protocol/election/messages.ts'
import { ANY_HOLDER } from './voter.ts'
import type { RunState, VmRecord, VmSpec } from './types.ts'

export interface Round { sendTime: number, acks: Set<string>, done: boolean }

export interface Candidacy {
  epoch: number
  seq: number
  sendTime: number
  deadline: number
  grants: Set<string>
  /** readyAt: when a voter that refused for its promise will be free (our clock, conservative). */
  refused: Map<string, { reason: Vote['reason'], readyAt: number | null }>
}

/** Why a node runs an election: owner dead, operator request, planned release, or the owner winning back a blocked epoch. */
export type Trigger = 'auto' | 'operator' | 'planned' | 'reclaim'

/** The generation an owner stands with when it reclaims: its own disk is the source of its epoch. */
export function sourceGeneration (epoch: number): GenerationRef { return { epoch, generation: Number.MAX_SAFE_INTEGER } }

export interface VmState {
  spec: VmSpec
  // persisted
  epoch: number
  owner: string
  votedEpoch: number
  votedFor: string | null
  released: VmRecord['released']
  forced: boolean
  // voter (volatile)
  promises: Map<string, number>
  reports: Map<string, GenerationRef>
  releasedSeenAt: number | null
  // local replica
  applied: GenerationRef | null
  reportDirty: boolean
  lastReportAt: number
  // owner
  leaseUntil: number
  fenceUntil: number
  rounds: Map<number, Round>
  nextRenewAt: number
  /** A round not acked by a majority within renewMs/4 is repeated once, so one lost message does not cost a period. */
  renewRetryAt: number | null
  /** Highest epoch a voter refused our renewals for because it granted it to a candidate. */
  higherVote: number
  handoff: { to: string, phase: 'stopping' | 'shipping' } | null
  run: RunState
  queuedAt: number
  startRetryAt: number
  // candidate
  electionAt: number | null
  candidacy: Candidacy | null
  nextEpoch: number | null
  operatorUntil: number | null
  forceWanted: boolean
  forceAt: number | null
  // capacity and start order (volatile; see machine.ts `place`)
  /** Room is reserved here: the VM runs, starts, stops or stands for election here (sticky while it does). */
  placed: boolean
  /** This reconcile: the VM wants room here and got it (a soft reservation while it waits its turn to stand). */
  roomOk: boolean
  /** It would fit in the room left here (what the room reports say). */
  fits: boolean
  /** It wants room here and none is left (shown in status; noRoom/roomFound on change). */
  noRoom: boolean
  /** What this node last told the voters about `fits` (null: nothing yet), and when. */
  fitsReported: boolean | null
  lastRoomAt: number
  /** Periodic reports still to carry a changed `fits` (it may be lost once). */
  roomRepeats: number
  /** Voter side: holders that said they have no room for the VM (they do not stand). */
  noRoomHolders: Set<string>
  /** The owner's last runState (others' startAfter waits on it). */
  remoteRun: { owner: string, epoch: number, running: boolean, at: number } | null
  /** Owner side: run state to announce (changed), and when it last was. */
  runDirty: boolean
  lastRunReportAt: number
  /** startAfter VMs not running yet, as of the last dispatch. */
  waitingFor: string[]
}

/** The spec of a VM known only from peers' messages or our own records: no replica, manual policy. */
export function learnedSpec (name: string, owner: string): VmSpec {
  return { name, home: owner, replicateTo: [], failover: 'manual' }
}

/** A VM's state after construction: from its record if there is one, else owned by its home at epoch 0. */
export function newVmState (spec: VmSpec, r: VmRecord | undefined, now: number, quietUntil: number): VmState {
  return {
    spec,
    epoch: r?.epoch ?? 0,
    owner: r?.owner ?? spec.home,
    votedEpoch: r?.votedEpoch ?? 0,
    votedFor: r?.votedFor ?? null,
    released: r?.released ?? null,
    forced: r?.forced ?? false,
    // Acks given before a restart are forgotten: grant nothing to anyone for a full promise.
    promises: new Map([[ANY_HOLDER, quietUntil]]),
    reports: new Map(),
    releasedSeenAt: r?.released != null ? now : null,
    applied: null,
    reportDirty: false,
    lastReportAt: -Infinity,
    leaseUntil: -Infinity,
    fenceUntil: -Infinity,
    rounds: new Map(),
    nextRenewAt: now,
    renewRetryAt: null,
    higherVote: 0,
    handoff: null,
    run: 'off',
    queuedAt: -Infinity,
    startRetryAt: -Infinity,
    electionAt: null,
    candidacy: null,
    nextEpoch: null,
    operatorUntil: null,
    forceWanted: false,
    forceAt: null,
    placed: false,
    roomOk: false,
    fits: true,
    noRoom: false,
    fitsReported: null,
    lastRoomAt: -Infinity,
    roomRepeats: 0,
    noRoomHolders: new Set(),
    remoteRun: null,
    runDirty: false,
    lastRunReportAt: -Infinity,
    waitingFor: []
  }
}

/** The durable part of a VM's state. */
export function toRecord (v: VmState): VmRecord {
  return {
    kind: 'vm',
    vm: v.spec.name,
    epoch: v.epoch,
    owner: v.owner,
    votedEpoch: v.votedEpoch,
    votedFor: v.votedFor,
    released: v.released === null ? null : { ...v.released, generation: { ...v.released.generation } },
    forced: v.forced,
    spec: { ...v.spec, replicateTo: [...v.spec.replicateTo], ...(v.spec.startAfter !== undefined ? { startAfter: [...v.spec.startAfter] } : {}) }
  }
}

/** Room order: higher priority first, then name (stable across nodes). */
export function comparePriority (a: VmState, b: VmState): number {
  return (b.spec.priority ?? 0) - (a.spec.priority ?? 0) ||
    (a.spec.name < b.spec.name ? -1 : a.spec.name > b.spec.name ? 1 : 0)
}

/** Start order: lower startOrder first, then higher priority, then name. */
export function compareStartOrder (a: VmState, b: VmState): number {
  return (a.spec.startOrder ?? 0) - (b.spec.startOrder ?? 0) ||
    (b.spec.priority ?? 0) - (a.spec.priority ?? 0) ||
    (a.spec.name < b.spec.name ? -1 : a.spec.name > b.spec.name ? 1 : 0)
}

/** The spec a persisted record carries (announced by the home node), else a placeholder. */
export function restoredSpec (r: VmRecord, isHost: (name: string) => boolean): VmSpec {
  const s = r.spec
  if (s !== undefined && s.name === r.vm && isHost(s.home) && Array.isArray(s.replicateTo)) return s
  return learnedSpec(r.vm, r.owner)
}
