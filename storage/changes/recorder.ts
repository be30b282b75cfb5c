/**
 * ChangeRecorder: one scan of one file, recorded — the storage half of change tracking (the
 * scheduling half, with timers and the file-system watcher, is daemon/replication/change-tracker.ts).
 *
 * Order per scan, for crash safety: changes(since = saved token) → dirty maps marked → token
 * saved. A crash between any two steps repeats the scan from the old token, and the source
 * answers for everything after it.
 */
import type { AbstractLevel } from 'abstract-level'
import type { Clock } from '../../common/clock.ts'
import { Manifest } from '../manifest/manifest.ts'
import { binarySublevel, decodeUtf8, encodeUtf8 } from '../manifest/db.ts'
import type { BinaryDb } from '../manifest/db.ts'
import type { DirtyMaps } from '../dirty/dirty-maps.ts'
import type { WorkerPool } from '../workers/pool.ts'
import { HashScanSource } from './hash-scan.ts'
import type { HashScanInit } from './hash-scan.ts'
import { inlineHasher, poolHasher } from './hasher.ts'
import type { ReflinkSnapshots } from './reflink.ts'
import type { ChangeSet, ChangeSource, RangesOf } from './source.ts'

export interface ChangeRecorderComponents {
  clock: Clock
  /** Database for manifests and tokens (sublevels `manifest` and `tracker` are used). */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  db: AbstractLevel<any, any, any>
  /** Hashing threads; absent: hash in the calling thread. Owned by the caller. */
  pool?: WorkerPool
  /** Where changes are recorded for each target; absent: nothing is marked. */
  dirty?: DirtyMaps
  /** Replaces the default hash scan (e.g. a ReportedRangesSource). */
  source?: ChangeSource
  snapshots?: ReflinkSnapshots | null
  rangesOf?: RangesOf
}

export interface ChangeRecorderInit {
  /** @default 65536 */
  blockSizeBytes?: number
  /** Extra passes allowed to get a quiet scan. @default 10000 */
  quietBudgetMs?: number
  /** Passed to the default hash scan. */
  scan?: Omit<HashScanInit, 'blockSizeBytes' | 'quietBudgetMs'>
}

export class ChangeRecorder {
  readonly source: ChangeSource
  private readonly tokens: BinaryDb

  constructor (private readonly components: ChangeRecorderComponents, init: ChangeRecorderInit = {}) {
    this.tokens = binarySublevel(components.db, 'tracker')
    this.source = components.source ?? new HashScanSource({
      manifest: new Manifest(binarySublevel(components.db, 'manifest')),
      clock: components.clock,
      hasher: components.pool != null ? poolHasher(components.pool) : inlineHasher,
      ...(components.snapshots !== undefined ? { snapshots: components.snapshots } : {}),
      ...(components.rangesOf !== undefined ? { rangesOf: components.rangesOf } : {})
    }, { ...init.scan, blockSizeBytes: init.blockSizeBytes ?? 65536, quietBudgetMs: init.quietBudgetMs ?? 10_000 })
  }

  /** The saved token of the absolute `path` (null before its first recorded scan). */
  async token (path: string): Promise<string | null> {
    const v = await this.tokens.get(encodeUtf8(path))
    return v === undefined ? null : decodeUtf8(v)
  }

  /** Scans the absolute `path` since its saved token, marks the dirty maps, saves the new token. */
  async record (path: string, signal?: AbortSignal): Promise<ChangeSet> {
    const key = encodeUtf8(path)
    const stored = await this.tokens.get(key)
    const since = stored === undefined ? null : decodeUtf8(stored)
    const set = await this.source.changes(path, since, signal != null ? { signal } : {})
    const dirty = this.components.dirty
    if (dirty != null) {
      // A full answer after earlier state means the targets' copies are of unknown age.
      if (set.full && since !== null) await dirty.markAll(path, set.fileSize)
      else await dirty.markChanged(path, set.ranges, set.fileSize)
    }
    await this.tokens.put(key, encodeUtf8(set.token))
    return set
  }
}
