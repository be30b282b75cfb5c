/**
 * The host-wide read budget of hash scans (`scan.budget` in the config): one token bucket that
 * every VM's hash scan takes from before each chunk it reads, so together they never read
 * faster than the budget, whatever the number of VMs or the size of their disks.
 *
 * Takes are split into pieces no larger than the bucket's burst, so the bucket never goes into
 * debt: in any window of T ms the scans are granted at most `rate × T/1000 + burst` bytes, and
 * the burst is small (10 ms at the rate by default, at least 64 KiB). Each VM is its own
 * fair-queuing flow, so a VM with a huge disk cannot starve a small one: each gets at least
 * rate / (VMs scanning).
 */
import type { Clock } from '../../common/clock.ts'
import type { ReadBudget } from '../../storage/changes/read-budget.ts'
import { TokenBucket } from './bucket.ts'

export interface ScanBudgetInit {
  /** Bytes per second all hash scans of the host may read together; Infinity = unbounded. */
  rateBytesPerSec: number
  /** Most read above the rate in any window, as time at the rate. @default 10 */
  burstMs?: number
}

export class ScanReadBudget implements ReadBudget {
  private readonly bucket: TokenBucket
  private readonly scanners = new Set<string>()

  constructor (components: { clock: Clock }, init: ScanBudgetInit) {
    this.bucket = new TokenBucket({ clock: components.clock }, { rateBytesPerSec: init.rateBytesPerSec, burstMs: init.burstMs ?? 10, minBurstBytes: 64 * 1024 })
  }

  get rateBytesPerSec (): number { return this.bucket.rate }
  get burstBytes (): number { return this.bucket.burst }
  /** Bytes granted so far (all scans). */
  get takenBytes (): number { return this.bucket.takenBytes }

  /** Applies a reloaded `scan.budget`; waiting scans are re-timed. */
  setRate (rateBytesPerSec: number): void { this.bucket.setRate(rateBytesPerSec) }

  /** A VM whose hash scan shares the budget (for the RPO the budget allows it). */
  register (vm: string): void { this.scanners.add(vm) }
  unregister (vm: string): void { this.scanners.delete(vm) }

  /** The least read rate one registered VM's scan gets (fair share). */
  shareBytesPerSec (): number { return this.bucket.rate / Math.max(1, this.scanners.size) }

  async take (bytes: number, opts: { signal?: AbortSignal, flow?: string } = {}): Promise<void> {
    if (this.bucket.unlimited) { await this.bucket.take(bytes, opts); return }
    let taken = 0
    try {
      while (taken < bytes) {
        const n = Math.min(bytes - taken, this.bucket.burst)
        await this.bucket.take(n, opts)
        taken += n
      }
    } catch (err) {
      this.bucket.refund(taken) // nothing is read when the take fails
      throw err
    }
  }
}
