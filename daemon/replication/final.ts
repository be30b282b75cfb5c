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

export interface FinalShipOptions {
  clock: Clock
  /** How long the target may take to acknowledge. */
  timeoutMs: number
  /** Quiet spell (no scan running) before the final generation is made. @default 600 */
  quietMs?: number
  /** Poll step while waiting for the acknowledgement. @default 100 */
  pollMs?: number
  signal?: AbortSignal
}

export async function shipFinalGeneration (src: VmSource, target: string, o: FinalShipOptions): Promise<number> {
  if (src.sender(target) === undefined) throw new NotAReplicationTargetError(src.name, target)
  const deadline = o.clock.now() + o.timeoutMs
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
  src.notify()
  while (src.books.target(target).acked < g) {
    o.signal?.throwIfAborted()
    if (o.clock.now() >= deadline) throw new FinalGenerationTimeoutError(src.name, target, g, o.timeoutMs)
    await src.changed(Math.max(1, Math.min(o.pollMs ?? 100, deadline - o.clock.now())), o.signal)
  }
  return g
}
