/**
 * The last step of a planned failover on the source: the VM is off, so its files are quiet and
 * a scan now is an exact, consistent capture. Scan everything, wait for a spell without scans,
 * start one more generation (often empty: the sender then ships just its begin and end, read
 * while nothing moves, so consistent), and wait until the target acknowledged it — an
 * acknowledgement means durable on the target. The generation number is what the release
 * tells the voters, and what the target must hold before it may take the VM.
 */
import type { Clock } from '../../common/clock.ts'
import type { VmSource } from './vm-source.ts'
import { FinalGenerationTimeoutError, NotAReplicationTargetError } from './errors.ts'
import type { GenerationProgress } from './sender.ts'
import { nodeScanIO, type FileStat } from '../../storage/changes/file-io.ts'
import { SETTLE_MARGIN_MS } from '../../storage/changes/hash-scan.ts'

export interface FinalShipOptions {
  clock: Clock
  /** How long the target may take to acknowledge. */
  timeoutMs: number
  /** Quiet spell (no scan running) before the final generation is made. @default 600 */
  quietMs?: number
  /**
   * The hash scan's settle margin: a stat taken sooner than this after a file's mtime/ctime does
   * not let a scan skip reading it, so until then every periodic scan re-reads and commits the
   * file, and a generation read meanwhile is fuzzy. @default SETTLE_MARGIN_MS (2000)
   */
  settleMs?: number
  /** The files' stat (injected by tests). @default nodeScanIO.stat */
  stat?: (path: string) => Promise<FileStat>
  /** Poll step while waiting for the acknowledgement. @default 100 */
  pollMs?: number
  signal?: AbortSignal
  /**
   * Told the bytes of the final change set read so far (every ≤ pollMs while it goes), its
   * total (0 until the final scan is done) and what happens now.
   */
  onProgress?: (doneBytes: number, totalBytes: number, phase: string) => void
}

export async function shipFinalGeneration (src: VmSource, target: string, o: FinalShipOptions): Promise<number> {
  if (src.sender(target) === undefined) throw new NotAReplicationTargetError(src.name, target)
  const deadline = o.clock.now() + o.timeoutMs
  o.onProgress?.(0, 0, 'scanning the stopped VM')
  // the VM's last writes must have settled first (see settleMs): otherwise the periodic scans
  // keep re-reading the files for up to 2 s after them and the final generation, read among
  // those scans, went fuzzy — the target would not take the VM and the old owner reclaimed it
  // after the grace (planned.test.ts, 1 run in 3 after the settle rule came in)
  let latestMs = 0
  for (const f of src.files) {
    const st = await (o.stat ?? nodeScanIO.stat)(f.path).catch(() => undefined)
    if (st !== undefined) latestMs = Math.max(latestMs, Number((st.mtimeNs > st.ctimeNs ? st.mtimeNs : st.ctimeNs) / 1_000_000n))
  }
  const settleWait = latestMs + (o.settleMs ?? SETTLE_MARGIN_MS) + 50 - o.clock.wallNow()
  if (settleWait > 0) await o.clock.sleep(Math.min(settleWait, Math.max(0, deadline - o.clock.now())), o.signal)
  await src.scanAll()
  // File-system events of the guest's last writes may still start scans (debounced): a scan
  // running while the final generation is read makes the sender mark it fuzzy. Wait for a
  // quiet spell first; the VM is off, so nothing new can start one after it.
  const quietMs = o.quietMs ?? 600
  let quietSince = o.clock.now()
  while (o.clock.now() - quietSince < quietMs && o.clock.now() < deadline) {
    o.signal?.throwIfAborted()
    await o.clock.sleep(50)
    if (src.scanBusy > 0) quietSince = o.clock.now()
  }
  await src.scanAll()
  // always a generation of its own, read after the quiet spell: an earlier one may have been
  // read (and acknowledged) as fuzzy while a scan ran
  const g = await src.books.bump(o.clock.wallNow(), true, undefined, src.capturedThroughMs())
  // what the target still lacks, now that nothing changes: the final ship's total
  const total = o.onProgress !== undefined ? await src.dirty.dirtyBytes(target) + await src.dirty.inFlightBytes(target) : 0
  const read = o.onProgress !== undefined ? finalReadCounter(() => src.sender(target)?.generationProgress()) : () => 0
  src.notify()
  // and not while a change set is still on its way in chunks: a chunk is numbered above g but
  // holds only part of what the target lacks
  while (src.books.target(target).acked < g || src.sender(target)?.midChangeSet === true) {
    o.onProgress?.(Math.min(total, read()), total, `shipping the final generation ${g}`)
    o.signal?.throwIfAborted()
    if (o.clock.now() >= deadline) throw new FinalGenerationTimeoutError(src.name, target, g, o.timeoutMs)
    await src.changed(Math.max(1, Math.min(o.pollMs ?? 100, deadline - o.clock.now())), o.signal)
  }
  o.onProgress?.(total, total, `final generation ${g} acknowledged`)
  return g
}

/**
 * Bytes read for the generations sent since it was made: each generation's total once the
 * sender moved on to the next (one change set may go as several chunks), plus what was read of
 * the current one. What was already read of the generation on its way at the start is not
 * counted (the total is measured after it).
 */
export function finalReadCounter (current: () => Readonly<GenerationProgress> | undefined): () => number {
  const first = current()
  const base = first === undefined ? undefined : { generation: first.generation, readBytes: first.readBytes }
  const before = (p: Readonly<GenerationProgress>): number => base !== undefined && p.generation === base.generation ? base.readBytes : 0
  let done = 0
  let last = first
  return () => {
    const p = current()
    if (p === undefined) return done
    // the sender moved on: the generation before was read whole
    if (last !== undefined && p !== last) done += Math.max(0, last.totalBytes - before(last))
    last = p
    return done + Math.max(0, p.readBytes - before(p))
  }
}
