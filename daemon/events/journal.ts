/**
 * The daemon's event history: a bounded in-memory ring, persisted as JSON lines so it survives
 * a restart, and an EventEmitter ('event') for live consumers (the dashboard's SSE stream, the
 * alert sinks).
 *
 *   producers (feeder.ts) ─append─▶ ring (last `capacity`) ─emit 'event'─▶ listeners
 *                                    └─▶ events.jsonl (append; compacted to the ring when it
 *                                        holds 2×capacity lines, temp + rename)
 *
 * A damaged line (torn write at a crash, an edited file) is skipped on load, never fatal.
 * Writes are serialized on one promise chain, so the file is appended in seq order.
 */
import { EventEmitter } from 'node:events'
import { appendFile, mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { Clock } from '../../common/clock.ts'
import { errorMessage } from '../../common/errors.ts'
import type { MeshEvent, MeshEventInput } from './types.ts'

export interface EventJournalInit {
  /** This node's name, stamped on every event. */
  node: string
  /** The JSONL file; undefined keeps the journal in memory only (tests). */
  path?: string
  /** Events kept (in memory and, after compaction, on disk). @default 1000 */
  capacity?: number
}

export interface EventJournalComponents {
  clock: Clock
  log?: { warn: (o: object, msg: string) => void }
}

export interface EventJournalEvents { event: [MeshEvent] }

export class EventJournal extends EventEmitter<EventJournalEvents> {
  private readonly ring: MeshEvent[] = []
  private readonly capacity: number
  private seq = 0
  private linesOnDisk = 0
  private writes: Promise<void> = Promise.resolve()
  private started = false

  constructor (private readonly components: EventJournalComponents, private readonly init: EventJournalInit) {
    super()
    this.capacity = init.capacity ?? 1000
    this.setMaxListeners(64)
  }

  /** Loads the persisted history (last `capacity` valid lines). */
  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    if (this.init.path === undefined) return
    let text = ''
    try { text = await readFile(this.init.path, 'utf8') } catch { return }
    const lines = text.split('\n')
    for (const line of lines) {
      if (line.trim() === '') continue
      const e = parseLine(line)
      if (e === undefined || e.seq <= this.seq) continue
      this.ring.push(e)
      this.seq = e.seq
      if (this.ring.length > this.capacity) this.ring.shift()
    }
    this.linesOnDisk = lines.length
  }

  /** Waits for pending writes. The history stays readable after stop. */
  async stop (): Promise<void> {
    this.started = false
    await this.writes
  }

  /** Records an event, tells the listeners, and persists it (in the background, in order). */
  append (input: MeshEventInput): MeshEvent {
    const e: MeshEvent = { ...input, seq: ++this.seq, atWallMs: input.atWallMs ?? this.components.clock.wallNow(), node: this.init.node }
    this.ring.push(e)
    if (this.ring.length > this.capacity) this.ring.shift()
    if (this.init.path !== undefined) this.persist(e)
    this.emit('event', e)
    return e
  }

  /** Events with seq > `seq`, oldest first (at most `limit`, the newest of them). */
  since (seq: number, limit = this.capacity): MeshEvent[] {
    const out = this.ring.filter(e => e.seq > seq)
    return out.length > limit ? out.slice(out.length - limit) : out
  }

  /** Seq of the newest event (0: none yet). */
  get lastSeq (): number { return this.seq }

  /** Resolves once every append so far is on disk (tests, shutdown). */
  async flushed (): Promise<void> { await this.writes }

  private persist (e: MeshEvent): void {
    const path = this.init.path as string
    this.writes = this.writes.then(async () => {
      await mkdir(dirname(path), { recursive: true })
      if (this.linesOnDisk >= 2 * this.capacity) {
        // compaction: the ring (which already holds e) replaces the file
        const tmp = `${path}.tmp`
        await writeFile(tmp, this.ring.map(x => JSON.stringify(x)).join('\n') + '\n')
        await rename(tmp, path)
        this.linesOnDisk = this.ring.length
        return
      }
      await appendFile(path, JSON.stringify(e) + '\n')
      this.linesOnDisk++
    }).catch((err: unknown) => { this.components.log?.warn({ error: errorMessage(err) }, 'event journal write failed') })
  }
}

const KINDS = new Set(['member', 'election', 'failover', 'fence', 'verify'])
const SEVERITIES = new Set(['info', 'warning', 'critical'])

/** One persisted line, or undefined when it is not a well-formed event. */
function parseLine (line: string): MeshEvent | undefined {
  let o: unknown
  try { o = JSON.parse(line) } catch { return undefined }
  if (typeof o !== 'object' || o === null) return undefined
  const e = o as Record<string, unknown>
  if (!Number.isSafeInteger(e.seq) || (e.seq as number) <= 0) return undefined
  if (typeof e.atWallMs !== 'number' || typeof e.text !== 'string' || typeof e.node !== 'string') return undefined
  if (!KINDS.has(e.kind as string) || !SEVERITIES.has(e.severity as string)) return undefined
  return o as MeshEvent
}
