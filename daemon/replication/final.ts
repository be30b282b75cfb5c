/**
 * The last step of a planned failover on the source: the VM is off, so its files are quiet and
 * a scan now is an exact, consistent capture. Scan everything, make sure the newest generation
 * is a consistent one (bump an empty one when the last was fuzzy or nothing was captured yet:
 * the sender then ships just the end of it), and wait until the target acknowledged it — an
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
  /** Poll step while waiting for the acknowledgement. @default 100 */
  pollMs?: number
  signal?: AbortSignal
}

export async function shipFinalGeneration (src: VmSource, target: string, o: FinalShipOptions): Promise<number> {
  if (src.sender(target) === undefined) throw new NotAReplicationTargetError(src.name, target)
  await src.scanAll()
  let g = src.generation
  if (g === 0 || src.books.meta(g)?.consistent !== true) {
    g = await src.books.bump(o.clock.wallNow(), true)
    src.notify()
  }
  const deadline = o.clock.now() + o.timeoutMs
  while (src.books.target(target).acked < g) {
    o.signal?.throwIfAborted()
    if (o.clock.now() >= deadline) throw new FinalGenerationTimeoutError(src.name, target, g, o.timeoutMs)
    await src.changed(Math.max(1, Math.min(o.pollMs ?? 100, deadline - o.clock.now())), o.signal)
  }
  return g
}
