/**
 * A real VmSource for sender tests: one 4-block file in a temp folder, LevelDB, virtual time, no
 * watcher, and a FakeStream as the only target 'b' (replication 1.1.0: no content index). The
 * tracker's first scan (a timer due now) is fired before the bed is handed over, so it never
 * starts in the middle of a test's step.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ManualClock } from '../../../common/clock.ts'
import { silentLogger } from '../../../daemon/log.ts'
import { VmSource } from '../../../daemon/replication/vm-source.ts'
import { defaultVmConfig, type VmConfig } from '../../../config/load.ts'
import { openBinaryLevel } from '../../../storage/manifest/db.ts'
import { encodeReplicationItem, type ReplicationItem } from '../../../protocol/replication/index.ts'
import { tempDir } from '../../helpers/tmp.ts'
import { FakeStream, until } from './fake-stream.ts'

export const BED_BLOCK = 64 * 1024

/** The items of one type the source sent. */
export const sentOf = <T extends ReplicationItem['type']>(s: FakeStream, type: T): Array<Extract<ReplicationItem, { type: T }>> =>
  s.items().filter((i): i is Extract<ReplicationItem, { type: T }> => i.type === type)

export interface SourceBed { src: VmSource, s: FakeStream, clock: ManualClock, file: string, close: () => Promise<void> }

/**
 * `wallStartMs`: the virtual wall clock at 0 (ahead of the file's mtime: settled scans; behind
 * it: racy ones). `prepare` runs on the file before the source starts (e.g. utimes).
 */
export async function sourceBed (prefix: string, o: { wallStartMs: number, prepare?: (file: string) => Promise<void> }): Promise<SourceBed> {
  const t = await tempDir(prefix)
  const file = join(t.dir, 'vm1.img')
  await writeFile(file, Buffer.alloc(4 * BED_BLOCK, 0x5a))
  await o.prepare?.(file)
  const clock = new ManualClock(0, o.wallStartMs)
  const db = await openBinaryLevel(join(t.dir, 'db'))
  const s = new FakeStream()
  s.protocol = '/vmesh/replication/1.1.0'
  const vm: VmConfig = { ...defaultVmConfig('vm1'), files: [file], replicateTo: ['b'], blockSizeBytes: BED_BLOCK, scanIntervalMs: 3_600_000 }
  const src = new VmSource({ clock, log: silentLogger(), db, dial: async () => s }, { vm, nodeName: 'a', watch: false })
  await src.start()
  clock.advance(0)
  return { src, s, clock, file, close: async () => { await src.stop(); await db.close(); await t.cleanup() } }
}

/** The hash requests of each stream already answered (by requestId). */
const answered = new WeakMap<FakeStream, Set<number>>()

/**
 * The `n`th `begin`. An incremental generation on a path whose rate the sender has not measured
 * above ~50 MB/s first asks for the target's 4 KiB hashes of the changed blocks — whether it did
 * depends on the virtual time between the seed's frames and their pongs, so both ways are taken:
 * a request not answered yet is answered (no hash matches) and returned beside the begin.
 */
export async function nthBegin (s: FakeStream, n: number): Promise<{ begin: Extract<ReplicationItem, { type: 'begin' }>, hashRequest: Extract<ReplicationItem, { type: 'hashRequest' }> | undefined }> {
  const done = answered.get(s) ?? new Set<number>()
  answered.set(s, done)
  const open = (): Extract<ReplicationItem, { type: 'hashRequest' }> | undefined => sentOf(s, 'hashRequest').find(r => !done.has(r.requestId))
  await until(`generation ${n} or its hash request`, () => sentOf(s, 'begin').length >= n || open() !== undefined)
  const req = open()
  if (req !== undefined) {
    done.add(req.requestId)
    s.deliver(encodeReplicationItem({ type: 'hashResponse', requestId: req.requestId, fileId: req.fileId, offset: req.offset, blockSize: req.blockSize, hashes: Array.from({ length: req.length / req.blockSize }, () => new Uint8Array(16).fill(9)), last: true }))
  }
  await until(`generation ${n}`, () => sentOf(s, 'begin').length >= n)
  const begin = sentOf(s, 'begin')[n - 1]
  if (begin === undefined) throw new Error(`no begin #${n}`)
  return { begin, hashRequest: req }
}
