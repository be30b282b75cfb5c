/**
 * Reading a redo journal back: `scanRedo` verifies every record up to the commit record and
 * summarizes what the generation touches (needed to capture the undo log); `applyRedoInPlace`
 * replays it onto the replica files. Replay writes absolute bytes and sizes in journal order,
 * so running it again after a crash part-way through gives the same result.
 */
import type { Core } from './core.ts'
import type { ReplicaFileHandle } from './fs.ts'
import type { FileEntry, RedoHeader } from './schema.ts'
import type { ReadEnd } from './records.ts'
import { redoHeaderSchema } from './schema.ts'
import { JournalReader } from './records.ts'
import { IntervalSet } from './intervals.ts'
import { closeAll } from './core.ts'
import { ReplicaJournalCorruptError } from './errors.ts'

export interface RedoFileSummary {
  /** bytes written, merged */
  touched: IntervalSet
  /** smallest size the file takes during the generation (header size included) */
  minSize: number
  finalSize: number
}

export interface RedoScan {
  header: RedoHeader
  committed: boolean
  /** how the scan ended when not committed */
  end: ReadEnd | undefined
  files: Map<number, RedoFileSummary>
  records: number
  dataBytes: number
}

/** Reads and verifies a redo journal. Throws ReplicaJournalCorruptError when even the header is unusable. */
export async function scanRedo (core: Core, path: string): Promise<RedoScan> {
  const r = await JournalReader.open(core.fs, path, 'redo')
  try {
    const first = await r.next()
    if (!('type' in first)) throw first.kind === 'torn' ? first.error : new ReplicaJournalCorruptError(`${path}: empty journal`)
    if (first.type !== 'header') throw new ReplicaJournalCorruptError(`${path}: no header`)
    const parsed = redoHeaderSchema.safeParse(first.json)
    if (!parsed.success) throw new ReplicaJournalCorruptError(`${path}: invalid header`, { cause: parsed.error })
    const header = parsed.data
    const files = new Map<number, RedoFileSummary>()
    for (const f of header.files) {
      if (files.has(f.fileId)) throw new ReplicaJournalCorruptError(`${path}: duplicate file id ${f.fileId}`)
      files.set(f.fileId, { touched: new IntervalSet(), minSize: f.size, finalSize: f.size })
    }
    const scan: RedoScan = { header, committed: false, end: undefined, files, records: 0, dataBytes: 0 }
    // bounded: every iteration consumes a record or ends the scan
    for (;;) {
      const rec = await r.next()
      if (!('type' in rec)) { scan.end = rec; break }
      if (rec.type === 'commit') { scan.committed = true; break }
      if (rec.type === 'header') { scan.end = { kind: 'torn', error: new ReplicaJournalCorruptError(`${path}: second header`) }; break }
      const f = files.get(rec.fileIdx)
      if (f === undefined) { scan.end = { kind: 'torn', error: new ReplicaJournalCorruptError(`${path}: unknown file id ${rec.fileIdx}`) }; break }
      if (rec.type === 'size') {
        f.finalSize = rec.size
        f.minSize = Math.min(f.minSize, rec.size)
      } else {
        const end = rec.offset + rec.data.length
        if (end > f.finalSize) { scan.end = { kind: 'torn', error: new ReplicaJournalCorruptError(`${path}: block past the file size`) }; break }
        f.touched.add(rec.offset, end)
      }
    }
    scan.records = r.records
    scan.dataBytes = r.dataBytes
    return scan
  } finally {
    await r.close()
  }
}

/**
 * A record of the journal as its writer appended it (kept in memory for a small generation, so
 * the in-place writes need not read the journal back): the same bytes, in journal order.
 */
export type HeldRecord = { type: 'block', fileIdx: number, offset: number, data: Uint8Array } | { type: 'size', fileIdx: number, size: number }

/** In-place writes issued before the first of them completes (the thread pool has four threads). */
const IN_PLACE_WRITES_IN_FLIGHT = 4

/**
 * Writes of one replay in flight together: an incremental generation's scattered blocks then
 * cost about one write latency per batch instead of one each. Journal order still decides
 * where it matters: a write overlapping one in flight, and a size change, wait for everything
 * before them. drain() throws the first failure.
 */
class ConcurrentWrites {
  private readonly inFlight: Array<{ file: number, start: number, end: number, done: Promise<void> }> = []
  private failure: { err: unknown } | undefined

  constructor (private readonly max: number) {}

  async add (file: number, start: number, end: number, write: () => Promise<void>): Promise<void> {
    if (this.inFlight.length >= this.max || this.inFlight.some(w => w.file === file && w.start < end && start < w.end)) await this.drain()
    const done = write().catch((err: unknown) => { this.failure ??= { err } })
    this.inFlight.push({ file, start, end, done })
  }

  async drain (): Promise<void> {
    for (const w of this.inFlight.splice(0)) await w.done
    if (this.failure !== undefined) throw this.failure.err
  }
}

/**
 * Replays a committed journal onto the replica files. `oldFiles` is the file map at the base
 * generation: a file not in it is new and starts from empty (whatever an earlier discarded
 * attempt left there is cleared).
 */
export async function applyRedoInPlace (core: Core, path: string, scan: RedoScan, oldFiles: Record<string, FileEntry>, held?: readonly HeldRecord[]): Promise<void> {
  const gen = scan.header.generation
  const handles = new Map<number, ReplicaFileHandle>()
  let created = false
  try {
    for (const f of scan.header.files) {
      const fh = await core.fs.open(core.filePath(f.name), 'write')
      handles.set(f.fileId, fh)
      if (oldFiles[f.path] === undefined) { created = true; await fh.truncate(0) }
      await fh.truncate(f.size)
    }
    // the writer's copy of the records when it kept one, else the journal read back
    const r = held === undefined ? await JournalReader.open(core.fs, path, 'redo', undefined, { freshWindows: true }) : undefined
    const records = held?.[Symbol.iterator]()
    const writes = new ConcurrentWrites(IN_PLACE_WRITES_IN_FLIGHT)
    try {
      let first = true
      // bounded: every iteration consumes a record of a finite file (or list) or ends
      for (;;) {
        let rec: HeldRecord | Exclude<Awaited<ReturnType<JournalReader['next']>>, ReadEnd>
        if (records !== undefined) {
          const n = records.next()
          if (n.done === true) break
          rec = n.value
        } else {
          const next = await (r as JournalReader).next()
          if (!('type' in next)) throw next.kind === 'torn' ? next.error : new ReplicaJournalCorruptError(`${path}: ended before its commit record`)
          if (next.type === 'commit') break
          rec = next
        }
        if (rec.type === 'header') continue
        const fh = handles.get(rec.fileIdx)
        if (fh === undefined) throw new ReplicaJournalCorruptError(`${path}: unknown file id ${rec.fileIdx}`)
        if (rec.type === 'size') {
          await writes.drain()
          await fh.truncate(rec.size)
        } else {
          const { data, offset } = rec
          await writes.add(rec.fileIdx, offset, offset + data.length, async () => { await fh.write(data, 0, data.length, offset) })
        }
        if (first) { first = false; await core.step('inplace-partial', gen) }
      }
      await writes.drain()
    } finally {
      await writes.drain().catch(() => {})
      await r?.close()
    }
    for (const fh of handles.values()) await core.sync(fh)
    if (created) await core.syncDir(core.filesDir)
  } finally {
    await closeAll(handles.values())
  }
}
