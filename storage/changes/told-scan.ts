/**
 * A told source (ToldRangesSource) that keeps the hash scan's manifest true, and falls back to
 * the hash scan when the told chain has a gap.
 *
 * Flow of changes(file, since):
 *   since = `ts1|<hash-scan token>|<told token>` (ours) or anything else (treated as none)
 *   producer.beforeAnswer(file)  ─ e.g. rotate the QEMU dirty bitmap: tells what was written
 *   producer says "not live" (the VM is not running under it) ─▶ hash scan from the hs token
 *   told.changes(told token)
 *     incremental ─▶ hashScan.hashRanges(file, answer's ranges): the told blocks are rehashed
 *                    into the manifest *before* the change is recorded (returned), then the
 *                    answer with the new hs token
 *     full (no chain, chain gap: bitmap lost, QEMU or daemon restarted) ─▶ one hash scan from
 *                    the hs token: incremental against the manifest when it is ours, so a gap
 *                    costs one read of the disk and sends only what differs (not every block)
 *
 * Why the manifest must stay true (and not "disable the manifest users for told sources"):
 * three things read it — seeding a new target (`nonZeroRanges`), resuming a seed (blocks whose
 * manifest hash equals the target's are skipped: a stale hash would skip a changed block, and
 * its dirty bit is cleared by the ack: a lost write) and the gap fallback above. Rehashing only
 * the told ranges reads ≤ what is sent anyway, and every block written after the hash read was
 * written after the rotation, so the next told answer covers it: for every block either the
 * manifest holds its current hash, or it is (or will be) marked dirty after any skip decision.
 * The manifest's stat token is dropped by that pass, so a told-source generation is never
 * taken for a quiet scan (`consistent` stays false unless the producer froze the read).
 */
import { parseHashScanToken, type HashScanSource } from './hash-scan.ts'
import type { ToldRangesSource } from './told.ts'
import type { ByteReader } from '../formats/reader.ts'
import type { ChangeOptions, ChangeSet, ChangeSource, ChangeToken } from './source.ts'

/** What drives the told source for one file (a QEMU bitmap tracker, an RCT poller). */
export interface ToldProducer {
  /**
   * Tells the told source everything written up to now. False: the producer cannot see the file
   * being written (the VM is not running under it): the hash scan answers this round.
   */
  beforeAnswer: (file: string, signal?: AbortSignal) => Promise<boolean>
  /**
   * The file as it was at the point just told (a QEMU fleecing point), when the producer froze
   * one: the told answer's layout and metadata are read from it, so they are of that instant.
   */
  view?: (file: string) => ByteReader | undefined
}

/** Which source answered the last call for a file, and why (logs, status, tests). */
export type AnswerKind = 'told' | 'gap-scan' | 'idle-scan'

const PREFIX = 'ts1'

export function formatToldScanToken (hs: ChangeToken | null, told: ChangeToken | null): ChangeToken {
  return `${PREFIX}|${hs ?? ''}|${told ?? ''}`
}

/**
 * Our token's parts. A plain hash-scan token (the VM used the hash scan before) is taken as
 * the hs part: switching a VM to a told source then costs one incremental scan, not a resend.
 */
export function parseToldScanToken (t: ChangeToken | null): { hs: ChangeToken | null, told: ChangeToken | null } {
  if (t != null && parseHashScanToken(t) !== null) return { hs: t, told: null }
  const parts = t?.split('|') ?? []
  if (parts.length !== 3 || parts[0] !== PREFIX) return { hs: null, told: null }
  return { hs: parts[1] === '' ? null : parts[1] as string, told: parts[2] === '' ? null : parts[2] as string }
}

export class ToldScanSource implements ChangeSource {
  private readonly last = new Map<string, AnswerKind>()

  constructor (private readonly components: { told: ToldRangesSource, hashScan: HashScanSource, producer: ToldProducer }) {}

  /** How the last answer for `file` was made. */
  lastAnswer (file: string): AnswerKind | undefined { return this.last.get(file) }

  /** Why the last answer for `file` was a gap scan (the told chain's full reason, with its detail). */
  gapReason (file: string): string | undefined {
    if (this.last.get(file) !== 'gap-scan') return undefined
    const reason = this.components.told.lastFullReason(file) ?? undefined
    const detail = reason === 'unmappable' ? this.components.told.unmappableDetail(file) : null
    return detail !== null && reason !== undefined ? `${reason}: ${detail}` : reason
  }

  async changes (file: string, since: ChangeToken | null, opts: ChangeOptions = {}): Promise<ChangeSet> {
    const { told, hashScan, producer } = this.components
    const tok = parseToldScanToken(since)
    const live = await producer.beforeAnswer(file, opts.signal)
    if (!live) {
      const set = await hashScan.changes(file, tok.hs, opts)
      this.last.set(file, 'idle-scan')
      // the told chain is left as it was: a told answer after this one covers only what was
      // told since, so the scan's changes must not be lost — they are recorded by this answer
      return { ...set, token: formatToldScanToken(set.token, tok.told) }
    }
    const view = producer.view?.(file)
    const set = await told.changes(file, tok.told, { ...(opts.signal !== undefined ? { signal: opts.signal } : {}), ...(view !== undefined ? { view } : {}) })
    if (set.full) {
      const scan = await hashScan.changes(file, tok.hs, opts)
      this.last.set(file, 'gap-scan')
      return { ...scan, token: formatToldScanToken(scan.token, set.token), consistent: false }
    }
    const { token: hs, scannedBytes } = await hashScan.hashRanges(file, set.ranges, opts.signal !== undefined ? { signal: opts.signal } : {})
    this.last.set(file, 'told')
    // No manifest to keep true (never scanned in this layout): the next answer scans.
    return { ...set, token: formatToldScanToken(hs, hs === null ? null : set.token), scannedBytes: set.scannedBytes + scannedBytes }
  }
}
