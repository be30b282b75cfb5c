/**
 * What a TargetSender needs of the VM it ships (VmSource implements it): the files, the books
 * and dirty maps, the manifest of block hashes, and the scan state. Kept apart from VmSource so
 * the sender depends on this view, not on the class that creates senders.
 */
import type { VmConfig } from '../../config/load.ts'
import type { FileKind } from '../../protocol/delta/index.ts'
import type { Manifest } from '../../storage/manifest/manifest.ts'
import type { DirtyMaps } from '../../storage/dirty/index.ts'
import type { Books } from './books.ts'
import type { PointLease } from './point-gate.ts'

export interface SourceFile { fileId: number, path: string, kind: FileKind }

export interface SenderSource {
  readonly name: string
  readonly files: SourceFile[]
  readonly blockSize: number
  /** The VM's entry (the sender reads its seed mode and recovery-point policy, which it sends in hello). */
  readonly vm: Pick<VmConfig, 'seed'> & Partial<Pick<VmConfig, 'recoveryPoints'>>
  readonly books: Books
  readonly dirty: DirtyMaps
  readonly manifest: Manifest
  /** The VM's current generation G. */
  readonly generation: number
  /** Every file has been scanned at least once. */
  readonly ready: boolean
  /** Scans in progress (a consistent capture needs 0). */
  readonly scanBusy: number
  /** Incremented when a scan starts and when it ends. */
  readonly scanSeq: number
  /** Resolves at the next scan result or generation change (or after `ms`). */
  changed: (ms: number, signal?: AbortSignal) => Promise<void>
  /**
   * Wall time through which every write is captured in the current generation or an earlier
   * one (the start of the oldest file's last completed scan); undefined before every file has
   * been scanned. The RPO counts from it.
   */
  capturedThroughMs: () => number | undefined
  /** Wakes whoever waits in changed(). */
  notify: () => void
  /**
   * Records a generation without changes, captured now: for a target whose newest generation
   * went fuzzy although the files have not changed since (the sender checks that first), it is a
   * recovery point at the state the target already holds.
   */
  consistencyPoint: () => Promise<number>
  /** Forgets what `target` holds: it gets every non-zero block again (or every block, `all`). */
  resetTarget: (target: string, all: boolean) => Promise<void>
  /**
   * The consistent point a fleeced disk's generation is read from (point-gate.ts); undefined:
   * read the live file. Absent: no file is fleeced.
   */
  leasePoint?: (file: string, maxWaitMs: number, signal?: AbortSignal) => Promise<PointLease | undefined>
}
