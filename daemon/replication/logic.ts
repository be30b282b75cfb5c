/**
 * The pure decisions of the replication engine, kept apart from I/O so they can be tested in
 * virtual time: how a sender reconciles with what a target reports, whether a generation is
 * consistent, lag, and the target state shown in status.
 */
import { sameStat, statFromRecord, type FileStat, type StatRecord } from '../../storage/changes/file-io.ts'
import type { TargetStatus } from '../status.ts'

/** What the source remembers about one target. */
export interface TargetBook {
  /** Newest generation the target acknowledged (0: none). */
  acked: number
  /** A generation sent and not (yet) acknowledged, if any. */
  inFlight: number | null
}

/** What the target says about its replica (the targetState message). */
export interface TargetReport {
  appliedGeneration: number
  seeding: { generation: number } | null
}

export type Reconciliation =
  /** The generation we had in flight was applied: acknowledge it. */
  | { kind: 'ack', generation: number }
  /** The target is where our books say: unacknowledged work goes back to dirty. */
  | { kind: 'requeue' }
  /** The target holds part of our interrupted seed: requeue and resend it under the same number, skipping blocks it already has. */
  | { kind: 'resume-seed', generation: number }
  /** seed: existing — the target pre-loaded copies it already held as a seed: every block is compared by hash, only differences are sent. */
  | { kind: 'adopt-seed' }
  /** The target's replica is empty (or an unknown seed): start over as a new target (non-zero blocks, base 0). */
  | { kind: 'reseed' }
  /** The target holds generations our books do not know: resend everything on top of what it has. */
  | { kind: 'rebase' }

export function reconcile (book: TargetBook, report: TargetReport, opts: { existing?: boolean } = {}): Reconciliation {
  if (report.seeding !== null) {
    if (book.acked === 0 && book.inFlight === report.seeding.generation) return { kind: 'resume-seed', generation: report.seeding.generation }
    // seed: existing — the target pre-loaded files it already had: compare every block, send the
    // rest. Whatever our books remember: a target we replicated to in an earlier tenure (acked > 0)
    // that since lost or removed that replica and had its own copy placed as the seed holds data
    // where we may hold zeros; a reseed would send only our non-zero blocks over it (the soak,
    // seed 2091301006: h3's replica of vm1 from h2 kept one page h3 wrote as owner).
    if (opts.existing === true) return { kind: 'adopt-seed' }
    return { kind: 'reseed' }
  }
  const applied = report.appliedGeneration
  if (book.inFlight !== null && applied === book.inFlight && applied > book.acked) return { kind: 'ack', generation: applied }
  if (applied === book.acked) return { kind: 'requeue' }
  if (applied === 0) return { kind: 'reseed' }
  return { kind: 'rebase' }
}

/** Number for the next generation to a target after reconciliation (must exceed its base). */
export function nextGenerationNumber (current: number, r: Reconciliation, report: TargetReport): number {
  if (r.kind === 'resume-seed') return r.generation
  // the target is where our books say: nothing to renumber
  if (r.kind === 'ack' || r.kind === 'requeue') return current
  let g = Math.max(current, report.appliedGeneration + 1, 1)
  // a different number than an abandoned seed's, or the store would resume it
  if (r.kind === 'reseed' && report.seeding !== null && g === report.seeding.generation) g++
  return g
}

export interface FileCapture {
  /** The manifest's stat of the last consistent, non-racy scan (null: none trusted). */
  manifestStat: StatRecord | null
  /** A scan of the file was interrupted or is running. */
  scanning: boolean
  /** Stat right before and right after the blocks were read. */
  before: FileStat
  after?: FileStat
  /**
   * Read from a consistent point (a fleecing point whose changes are exactly the recorded ones,
   * point-gate.ts): the live file's stat says nothing about it.
   */
  point?: boolean
}

/**
 * A generation is consistent when every file of the VM is exactly what the last quiet scan saw,
 * before and after the reads, no scan was between its commit and its dirty-map update (busy),
 * and no scan committed meanwhile (`seq`: the sum of the files' manifest generations): the
 * replica after applying it equals the source at that scan. A file read from a consistent point
 * (`point`) is that point whatever its live stat says.
 */
export function isConsistentCapture (files: FileCapture[], scans: { seqBefore: number, seqAfter: number, busyBefore: boolean, busyAfter: boolean }): boolean {
  if (scans.busyBefore || scans.busyAfter || scans.seqBefore !== scans.seqAfter) return false
  for (const f of files) {
    if (f.point === true) continue
    if (f.manifestStat === null || f.scanning) return false
    const m = statFromRecord(f.manifestStat)
    if (!sameStat(m, f.before)) return false
    if (f.after !== undefined && !sameStat(m, f.after)) return false
  }
  return true
}

/** now − capture time of the oldest generation the target lacks; 0 when it has them all. */
export function lagMs (wallNow: number, acked: number, current: number, createdAtOf: (generation: number) => number | undefined): number {
  if (acked >= current) return 0
  for (let g = acked + 1; g <= current && g <= acked + 1_000_000; g++) {
    const t = createdAtOf(g)
    if (t !== undefined) return Math.max(0, Math.round(wallNow - t))
  }
  return 0
}

/**
 * The honest RPO: age of the newest capture point durable on the target, i.e. now − the time
 * the capture of its acknowledged generation *began* (writes before that instant are on the
 * target; writes after it are at risk). In sync, the newest capture is the live one
 * (`liveCaptureStartMs`: later scans found nothing new). Null when nothing is durable yet or
 * the capture time is unknown (generation made by an older daemon).
 */
export function rpoMs (wallNow: number, acked: number, current: number, captureStartOf: (generation: number) => number | undefined, liveCaptureStartMs: number | undefined): number | null {
  if (acked <= 0) return null
  const t = acked >= current ? liveCaptureStartMs ?? captureStartOf(acked) : captureStartOf(acked)
  if (t === undefined) return null
  return Math.max(0, Math.round(wallNow - t))
}

/**
 * The RPO a hash scan can promise when it reads at most `shareBytesPerSec`: a write landing just
 * behind the reader waits for the rest of that scan, the gap before the next one (at most the
 * scan interval) and the next scan up to its block — at most two whole scans plus the interval.
 * Null when the scan is not bounded by a budget (its speed is the disk's, not a promise).
 */
export function scanRpoBoundMs (scanBytes: number, shareBytesPerSec: number, scanIntervalMs: number): number | null {
  if (!Number.isFinite(shareBytesPerSec) || shareBytesPerSec <= 0) return null
  return Math.round(scanIntervalMs + 2 * scanBytes * 1000 / shareBytesPerSec)
}

export function targetStateOf (s: { connected: boolean, error?: string | undefined, acked: number, current: number, pendingBytes: number, seeding: boolean, midChangeSet?: boolean }): TargetStatus['state'] {
  if (s.error !== undefined) return 'error'
  if (!s.connected) return 'disconnected'
  if (s.seeding) return 'seeding'
  // a change set sent in chunks is not in sync until its last chunk is acked: between a chunk's
  // ack and the generation number of the rest, acked equals current for a moment
  if (s.acked >= s.current && s.pendingBytes === 0 && s.midChangeSet !== true) return 'in-sync'
  return 'behind'
}

/** Block-aligned byte ranges that lie wholly inside `r` (for hash comparison of durable data). */
export function innerBlocks (r: { offset: number, length: number }, blockSize: number): { first: number, end: number } {
  const first = Math.ceil(r.offset / blockSize)
  const end = Math.floor((r.offset + r.length) / blockSize)
  return { first, end: Math.max(first, end) }
}
