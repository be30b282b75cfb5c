/**
 * The Hyper-V RCT change source of one VM (`changeSource: rct`): recovery checkpoints and
 * Resilient Change Tracking (daemon/hypervisor/hyperv-rct.ts) driven from the change tracker's
 * rounds, feeding a ToldScanSource (storage/changes/told-scan.ts) that keeps the hash scan's
 * manifest true and falls back to the hash scan on a gap. The sibling of told-source-runner.ts
 * (QEMU bitmaps).
 *
 * One VM round (the first disk asking after the previous round's answers were all taken):
 *   1. the checkpoint held since the last round is merged into a reference point
 *      (ConvertToReferencePoint): its RCT ids are the next query's LimitIds
 *   2. a new recovery checkpoint: each disk's base .vhdx is frozen (read-only, readable: a running
 *      VM's disk is otherwise held open by the worker process) and the changes since the
 *      reference point come back in virtual-disk offsets (GetVirtualDiskChanges)
 *   3. told to the ToldRangesSource: it maps them to file ranges of the frozen .vhdx (payload,
 *      BAT, headers, log, metadata: storage/formats/layout.ts), the hash scan rehashes them
 * The checkpoint is HELD until the next round (or stop()), so the senders read the dirty blocks
 * from the frozen base file: one point in time per round, and a file Hyper-V lets us open.
 *
 * Gaps: no reference point yet, or Hyper-V no longer knows its RCT id (reset, tracking off, VM
 * moved) → the disk is told with `since: null`: one full answer = one hash scan of the frozen
 * file (incremental against the manifest), then RCT again. A round that fails (an odd answer, an
 * error) → the hash scan answers that round, the told chain is kept, and the next round asks from
 * the last reference point that exists: a superset, so nothing is lost. A checkpoint whose reply
 * could not be read is merged by the next begin (it is named `vmesh generation N`).
 *
 * Restart: the told source's state is in memory, so a restarted daemon answers each disk in full
 * once (one hash scan), then RCT again. The state file keeps the held checkpoint and the reference
 * point so the new process merges and destroys what the old one left, not stacks more.
 */
import { resolve } from 'node:path'
import type { Clock } from '../../common/clock.ts'
import { errorMessage } from '../../common/errors.ts'
import { HashScanSource, ToldRangesSource, type ChangeSource } from '../../storage/changes/index.ts'
import { ToldScanSource, type AnswerKind } from '../../storage/changes/told-scan.ts'
import { EXIT_NO_VM, normalizeDiskId, type HypervRct, type RctGeneration } from '../hypervisor/hyperv-rct.ts'
import { HypervisorCommandFailedError, HypervisorStateError } from '../hypervisor/errors.ts'
import { readState, writeState } from '../hypervisor/state-file.ts'
import type { Logger } from '../log.ts'
import { routedSource, type ToldRunnerStatus } from './told-source-runner.ts'

export interface RctRunnerComponents {
  clock: Clock
  log: Logger
  hashScan: HashScanSource
  /** The three RCT calls (the Hyper-V driver's session). */
  rct: Pick<HypervRct, 'begin' | 'commit' | 'abort'>
  /** The VM's Hyper-V ID while it runs here; undefined: the hash scan answers. */
  vmId: () => Promise<string | undefined>
}

export interface RctRunnerInit {
  vm: string
  /** The VM's disk images (absolute), as the drives name them. */
  disks: string[]
  blockSizeBytes: number
  /** Where the held checkpoint and reference point are kept across restarts. */
  stateFile: string
}

/** What survives a restart (version 1). */
interface Persisted {
  v: 1
  vmId: string | null
  /** The checkpoint held since the last round (merged at the next). */
  held: RctGeneration | null
  /** The newest reference point (destroyed when the next one is made). */
  referencePointId: string | null
  /** Disk ID → its RCT id at that reference point. */
  rct: Record<string, string>
}

const EMPTY: Persisted = { v: 1, vmId: null, held: null, referencePointId: null, rct: {} }

/** Windows paths compare without case and with either slash. */
const pathKey = (p: string): string => p.replace(/\\/g, '/').toLowerCase()

export class RctSourceRunner {
  readonly kind = 'rct' as const
  readonly source: ChangeSource
  private readonly scan: ToldScanSource
  private readonly told: ToldRangesSource
  /** Configured disk → its key (pathKey of the absolute path). */
  private readonly disks = new Map<string, string>()
  /** Per disk: the checkpoint its last tell reached (the told chain's point). */
  private readonly chain = new Map<string, string>()
  /** Disks told by the current round whose answer has not been taken yet. */
  private pending = new Set<string>()
  private state: Persisted | null = null
  private generation = 0
  private queue: Promise<unknown> = Promise.resolve()
  private live = false
  private scanAnswers = 0
  private toldAnswers = 0
  private failedRounds = 0

  constructor (private readonly components: RctRunnerComponents, private readonly init: RctRunnerInit) {
    for (const d of init.disks) this.disks.set(resolve(d), pathKey(resolve(d)))
    this.told = new ToldRangesSource({}, { blockSizeBytes: init.blockSizeBytes })
    this.scan = new ToldScanSource({ told: this.told, hashScan: components.hashScan, producer: { beforeAnswer: async (file, signal) => await this.serial(async () => await this.beforeAnswer(resolve(file), signal)) } })
    this.source = routedSource(this.disks, this.scan, components.hashScan, (kind) => { if (kind === 'told') this.toldAnswers++; else this.scanAnswers++ })
  }

  lastAnswer (file: string): AnswerKind | undefined { return this.scan.lastAnswer(resolve(file)) }

  /** Why the last answer for `file` was a gap scan (logs). */
  gapReason (file: string): string | undefined { return this.scan.gapReason(resolve(file)) }

  status (): ToldRunnerStatus & { failedRounds: number } {
    return { live: this.live, scanAnswers: this.scanAnswers, toldAnswers: this.toldAnswers, failedRounds: this.failedRounds }
  }

  /** The checkpoint held now (tests, status). */
  get heldCheckpoint (): string | null { return this.state?.held?.snapshotId ?? null }

  /** Merges the held checkpoint into a reference point: the VM does not run on a .avhdx while we are away. */
  async stop (): Promise<void> {
    await this.serial(async () => {
      const st = await this.load()
      if (st.held !== null) await this.mergeHeld(st).catch((err: unknown) => { this.components.log.warn({ vm: this.init.vm, err: errorMessage(err) }, 'could not merge the RCT checkpoint at stop; the next start merges it') })
      this.pending.clear()
    })
  }

  private async serial<T> (fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn)
    this.queue = run.catch(() => {})
    return await run
  }

  private async beforeAnswer (file: string, signal?: AbortSignal): Promise<boolean> {
    if (!this.disks.has(file)) return false
    if (this.pending.delete(file)) return true
    try {
      const covered = await this.round(signal)
      if (covered === null) return false
      this.pending = covered
      this.live = true
      return this.pending.delete(file)
    } catch (err) {
      if (signal?.aborted === true) throw err
      this.failedRounds++
      this.live = false
      this.pending.clear()
      this.components.log.warn({ vm: this.init.vm, file, err: errorMessage(err), errName: (err as Error).name }, 'RCT round failed; the hash scan answers this round, the next asks from the last reference point')
      return false
    }
  }

  /** One VM round: the disks told, or null when the VM does not run here. */
  private async round (signal?: AbortSignal): Promise<Set<string> | null> {
    const st = await this.load()
    const vmId = await this.components.vmId()
    if (vmId === undefined) {
      if (st.held !== null) await this.mergeHeld(st, signal)
      this.live = false
      return null
    }
    if (st.vmId !== vmId) {
      // another VM under this name (re-registered, imported): its reference points are not ours
      if (st.held !== null && st.vmId !== null) await this.components.rct.abort(st.held, signal).catch(() => {})
      Object.assign(st, { ...EMPTY, vmId })
      this.chain.clear()
      await this.save(st)
    }
    if (st.held !== null) await this.mergeHeld(st, signal)

    // ask only for disks whose told chain continues: after a restart the told source answers
    // in full anyway, so querying would cost Hyper-V work for nothing
    let gen: RctGeneration
    try {
      gen = await this.components.rct.begin(vmId, ++this.generation, this.chain.size > 0 ? st.rct : {}, signal)
    } catch (err) {
      if (err instanceof HypervisorCommandFailedError && err.exitCode === EXIT_NO_VM) { this.live = false; return null }
      throw err
    }
    st.held = gen
    await this.save(st)

    const covered = new Set<string>()
    for (const d of gen.disks) {
      const file = [...this.disks].find(([, k]) => k === pathKey(d.readFrom))?.[0]
      if (file === undefined) {
        this.components.log.debug({ vm: this.init.vm, readFrom: d.readFrom }, 'RCT: a drive that is not one of the configured disks (or runs on a checkpoint chain) is left to the hash scan')
        continue
      }
      const prev = this.chain.get(file) ?? null
      const since = d.full ? null : prev
      if (d.full && d.referencePoint !== null) this.components.log.warn({ vm: this.init.vm, file, referencePoint: d.referencePoint, why: d.lostReason }, 'RCT id no longer known to Hyper-V; one hash scan, then RCT again')
      else if (d.full) this.components.log.info({ vm: this.init.vm, file }, 'RCT: no reference point yet; one hash scan, then RCT')
      this.told.tell(file, { since, until: gen.snapshotId, ranges: d.ranges, space: 'virtual', consistent: true })
      this.chain.set(file, gen.snapshotId)
      covered.add(file)
    }
    return covered
  }

  /** The held checkpoint becomes the reference point (or, failing that, is merged without one). */
  private async mergeHeld (st: Persisted, signal?: AbortSignal): Promise<void> {
    const held = st.held
    if (held === null) return
    try {
      const c = await this.components.rct.commit(held, st.referencePointId, signal)
      st.referencePointId = c.referencePointId
      st.rct = {}
      held.disks.forEach((d, i) => { const cap = c.captures[i]; if (cap !== undefined) st.rct[normalizeDiskId(d.diskId)] = cap.newReferencePoint })
    } catch (err) {
      // The next query goes from the older reference point (a superset), or is `full` if Hyper-V
      // destroyed it; DestroySnapshot merges the checkpoint either way (the next begin would too).
      this.components.log.warn({ vm: this.init.vm, snapshot: held.snapshotId, err: errorMessage(err) }, 'RCT: could not make the checkpoint a reference point; merging it without one')
      await this.components.rct.abort(held, signal).catch(() => {})
      throw err
    } finally {
      st.held = null
      this.pending.clear()
      await this.save(st)
    }
  }

  private async load (): Promise<Persisted> {
    if (this.state !== null) return this.state
    try {
      const doc = await readState(this.init.stateFile)
      this.state = doc === undefined ? { ...EMPTY, rct: {} } : validState(this.init.stateFile, doc)
    } catch (err) {
      if (!(err instanceof HypervisorStateError)) throw err
      // Forgetting costs one hash scan per disk (a stale checkpoint of ours is merged by the next
      // begin; a stale reference point stays until removed by hand), so start afresh rather than
      // fail every round; the next save replaces the file.
      this.components.log.warn({ vm: this.init.vm, file: this.init.stateFile, err: errorMessage(err) }, 'RCT state unreadable; starting a new chain (one hash scan)')
      this.state = { ...EMPTY, rct: {} }
    }
    return this.state
  }

  private async save (st: Persisted): Promise<void> { await writeState(this.init.stateFile, st) }
}

function validState (file: string, doc: unknown): Persisted {
  const o = doc as Partial<Persisted> | null
  const ok = typeof o === 'object' && o !== null && o.v === 1 &&
    (o.vmId === null || typeof o.vmId === 'string') &&
    (o.referencePointId === null || typeof o.referencePointId === 'string') &&
    typeof o.rct === 'object' && o.rct !== null && Object.values(o.rct).every(x => typeof x === 'string') &&
    (o.held === null || (typeof o.held === 'object' && typeof o.held?.snapshotId === 'string' && Array.isArray(o.held.disks)))
  if (!ok) throw new HypervisorStateError(file, 'not an RCT state document (version 1)')
  return o as Persisted
}
