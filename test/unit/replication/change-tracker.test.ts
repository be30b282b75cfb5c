import assert from 'node:assert/strict'
import { join } from 'node:path'
import { writeFile, utimes } from 'node:fs/promises'
import type { Level } from 'level'
import { ChangeTracker } from '../../../daemon/replication/change-tracker.ts'
import { HashScanSource } from '../../../storage/changes/hash-scan.ts'
import type { ChangeEvent, WatchFn } from '../../../daemon/replication/change-tracker.ts'
import type { ChangeOptions, ChangeSet, ChangeSource } from '../../../storage/changes/source.ts'
import { DirtyMaps } from '../../../storage/dirty/dirty-maps.ts'
import { binarySublevel } from '../../../storage/manifest/db.ts'
import { ManualClock } from '../../../common/clock.ts'
import { aheadClock, blockContent, tempDb, tempDir, writeAt, KiB } from '../changes/helpers.ts'
import type { TempDir } from '../changes/helpers.ts'

const BS = 64 * KiB

/** A scripted change source: records each call, answers with the next queued set. */
class FakeSource implements ChangeSource {
  calls: Array<{ file: string, since: string | null, at: number }> = []
  answers: Array<Partial<ChangeSet>> = []
  gate: Promise<void> | null = null
  private onCall: (() => void) | null = null
  /** Resolves at the next call of changes(). */
  readonly nextCall = (): Promise<void> => new Promise<void>(resolve => { this.onCall = resolve })
  constructor (private readonly clock: ManualClock) {}
  async changes (file: string, since: string | null, opts: ChangeOptions = {}): Promise<ChangeSet> {
    this.calls.push({ file, since, at: this.clock.now() })
    this.onCall?.()
    if (this.gate != null) await this.gate
    if (opts.signal?.aborted === true) throw Object.assign(new Error('aborted'), { code: 'ERR_ABORTED' })
    const a = this.answers.shift() ?? {}
    return { ranges: [], token: `t${this.calls.length}`, consistent: true, full: since === null, fileSize: 10 * BS, blockSize: BS, scannedBytes: 0, ...a }
  }
}

function fakeWatch (): WatchFn & { fire: (dir: string, name: string | null) => void, open: Set<string> } {
  const handlers = new Map<string, (n: string | null) => void>()
  const open = new Set<string>()
  const fn = ((dir, onEvent) => {
    handlers.set(dir, onEvent)
    open.add(dir)
    return { close: () => { open.delete(dir); handlers.delete(dir) } }
  }) as WatchFn & { fire: (dir: string, name: string | null) => void, open: Set<string> }
  fn.fire = (dir, name) => { handlers.get(dir)?.(name) }
  fn.open = open
  return fn
}

describe('changes/watcher (ChangeTracker)', function () {
  /** Advances virtual time, then lets any scan it started finish (scans do real LevelDB I/O). */
  const stepper = (t: ChangeTracker) => async (ms: number): Promise<void> => {
    await clock.advanceAsync(ms)
    await t.idle()
  }

  this.timeout(20_000)
  let dir: TempDir
  let db: Level<Uint8Array, Uint8Array>
  let clock: ManualClock

  beforeEach(async () => {
    dir = await tempDir()
    db = await tempDb(dir.path)
    clock = aheadClock()
  })
  afterEach(async () => { await db.close(); await dir.cleanup() })

  it('scans at start, then every scanIntervalMs after the previous scan', async () => {
    const source = new FakeSource(clock)
    const file = join(dir.path, 'a.raw')
    const t = new ChangeTracker({ clock, db, source, watch: fakeWatch() }, { files: [file], scanIntervalMs: 1000 })
    const step = stepper(t)
    await t.start()
    await step(0)
    assert.equal(source.calls.length, 1)
    await step(999)
    assert.equal(source.calls.length, 1)
    await step(1)
    assert.equal(source.calls.length, 2)
    for (let i = 0; i < 3; i++) await step(1000)
    assert.equal(source.calls.length, 5)
    assert.deepEqual(source.calls.map(c => c.since), [null, 't1', 't2', 't3', 't4'], 'each scan passes the saved token')
    assert.equal(await t.token(file), 't5')
    await t.stop()
    await t.stop()
    await clock.advanceAsync(10_000)
    assert.equal(source.calls.length, 5, 'no scans after stop')
    assert.equal(clock.pendingTimers, 0)
  })

  it('a watcher event pulls the scan forward by debounceMs, not sooner than minGapMs after the last that read', async () => {
    const source = new FakeSource(clock)
    const watch = fakeWatch()
    const file = join(dir.path, 'a.raw')
    const t = new ChangeTracker({ clock, db, source, watch }, { files: [file], scanIntervalMs: 60_000, debounceMs: 200, minGapMs: 1000 })
    const step = stepper(t)
    // the first scans read the file, the third finds its stat unchanged and reads nothing
    source.answers.push({ scannedBytes: 10 * BS }, { scannedBytes: 10 * BS }, { scannedBytes: 0 })
    await t.start()
    await step(0)
    assert.equal(source.calls.length, 1)
    watch.fire(dir.path, 'a.raw') // at t=0: debounce says 200, min gap says 1000
    await step(999)
    assert.equal(source.calls.length, 1)
    await step(1)
    assert.equal(source.calls.length, 2)
    // A burst of events: the first one sets the time, later ones do not postpone it.
    await step(5000)
    for (let i = 0; i < 4; i++) { watch.fire(dir.path, 'a.raw'); await step(50) }
    assert.equal(source.calls.length, 3)
    assert.equal(source.calls[2]?.at, 6000 + 200)
    // That scan (at 6200) read nothing: an event right after it is not held back by the minimum
    // gap, which counts from the last scan that read (at 1000); one that read would say 7200
    await step(300)
    watch.fire(dir.path, 'a.raw') // at 6500: debounce says 6700
    await step(199)
    assert.equal(source.calls.length, 3)
    await step(1)
    assert.equal(source.calls.length, 4)
    assert.equal(source.calls[3]?.at, 6700)
    // Events for other names in the directory are ignored.
    watch.fire(dir.path, 'other.txt')
    await step(5000)
    assert.equal(source.calls.length, 4)
    await t.stop()
    assert.equal(watch.open.size, 0, 'watchers closed')
  })

  it('a watcher event during a scan gets a scan after it (the write may have been only partly seen), not the interval', async () => {
    const source = new FakeSource(clock)
    const watch = fakeWatch()
    const file = join(dir.path, 'a.raw')
    const t = new ChangeTracker({ clock, db, source, watch }, { files: [file], scanIntervalMs: 60_000, debounceMs: 200, minGapMs: 1000 })
    const step = stepper(t)
    source.answers.push({ scannedBytes: 10 * BS }, { scannedBytes: 10 * BS })
    let release = (): void => {}
    source.gate = new Promise<void>(resolve => { release = resolve })
    const called = source.nextCall()
    await t.start()
    await clock.advanceAsync(0)
    await called
    // the scan runs (t=0 .. 500); one long write() that began before it ends during it
    await clock.advanceAsync(300)
    watch.fire(dir.path, 'a.raw')
    await clock.advanceAsync(200)
    source.gate = null
    release()
    await t.idle()
    assert.equal(source.calls.length, 1)
    // the scan ended at 500 and read: the next one is due at the minimum gap (1500), not at 60 500
    await step(999)
    assert.equal(source.calls.length, 1)
    await step(1)
    assert.equal(source.calls.length, 2)
    assert.equal(source.calls[1]?.at, 1500)
    // no event during that one: back to the interval
    await step(59_999)
    assert.equal(source.calls.length, 2)
    await step(1)
    assert.equal(source.calls.length, 3)
    await t.stop()
  })

  it('records change sets in the dirty maps before saving the token, and tells listeners', async () => {
    const source = new FakeSource(clock)
    const dirty = new DirtyMaps({ db: binarySublevel(db, 'dirty') }, { blockSizeBytes: BS })
    await dirty.open()
    await dirty.addTarget('hv-b')
    const file = join(dir.path, 'a.raw')
    source.answers.push({ ranges: [{ offset: 0, length: BS }], full: true })
    source.answers.push({ ranges: [{ offset: 3 * BS, length: BS }] })
    source.answers.push({ ranges: [{ offset: 5 * BS, length: BS }], full: true }) // state lost at the source
    const events: ChangeEvent[] = []
    const t = new ChangeTracker({ clock, db, source, dirty, watch: fakeWatch() }, { files: [file], scanIntervalMs: 100 })
    t.onChange((e) => { events.push(e) })
    const step = stepper(t)
    await t.start()
    await step(0)
    const pending = async (): Promise<unknown[]> => { const out = []; for await (const r of dirty.pending('hv-b', file)) out.push(r); return out }
    assert.deepEqual(await pending(), [{ offset: 0, length: BS }])
    await step(100)
    assert.deepEqual(await pending(), [{ offset: 0, length: BS }, { offset: 3 * BS, length: BS }])
    await step(100)
    assert.deepEqual(await pending(), [{ offset: 0, length: 10 * BS }], 'a full answer after earlier state marks the whole file')
    assert.equal(events.length, 3)
    await t.stop()
    await dirty.close()
  })

  it('a target added later can be seeded with the manifest\'s non-zero blocks only', async () => {
    const file = join(dir.path, 'disk.raw')
    const data = Buffer.alloc(8 * BS)
    blockContent(BS, 1).copy(data, 2 * BS)
    blockContent(BS, 2).copy(data, 3 * BS)
    await writeFile(file, data)
    const dirty = new DirtyMaps({ db: binarySublevel(db, 'dirty') }, { blockSizeBytes: BS })
    await dirty.open()
    const t = new ChangeTracker({ clock, db, dirty, watch: fakeWatch() }, { blockSizeBytes: BS })
    await t.start()
    t.addFile(file)
    await t.scanNow(file)
    assert.ok(t.source instanceof HashScanSource)
    const src = t.source
    await dirty.addTarget('hv-new', (f) => src.nonZeroRanges(f))
    await dirty.addTarget('hv-all')
    const got = []
    for await (const r of dirty.pending('hv-new', file)) got.push(r)
    assert.deepEqual(got, [{ offset: 2 * BS, length: 2 * BS }])
    assert.equal(await dirty.dirtyBytes('hv-all'), 8 * BS)
    await t.stop()
    await dirty.close()
  })

  it('reports scan errors to listeners and keeps the schedule', async () => {
    const file = join(dir.path, 'missing.raw')
    const errors: string[] = []
    const t = new ChangeTracker({ clock, db, watch: fakeWatch() }, { files: [file], scanIntervalMs: 500, blockSizeBytes: BS })
    t.onChange((e) => { if ('error' in e) errors.push((e.error as Error & { code: string }).code) })
    const step = stepper(t)
    await t.start()
    await step(0)
    await step(500)
    assert.deepEqual(errors, ['ERR_CHANGES_NOT_A_FILE', 'ERR_CHANGES_NOT_A_FILE'])
    await t.stop()
  })

  it('runs the default hash scan end to end and serialises scanNow with timed scans', async () => {
    const file = join(dir.path, 'disk.raw')
    const data = Buffer.alloc(8 * BS)
    for (let i = 0; i < 8; i += 2) blockContent(BS, i).copy(data, i * BS)
    await writeFile(file, data)
    // mtime has a coarse tick: date the file back so the later write surely moves it (the
    // production racy-timestamp guard uses the real wall clock, which this test's ManualClock is not)
    const past = new Date(Date.now() - 60_000)
    await utimes(file, past, past)
    const t = new ChangeTracker({ clock, db, watch: fakeWatch() }, { scanIntervalMs: 10_000, blockSizeBytes: BS })
    await t.start()
    t.addFile(file)
    const [a, b] = await Promise.all([t.scanNow(file), clock.advanceAsync(0)])
    void b
    assert.equal(a.full, true)
    assert.deepEqual(a.ranges, [0, 2, 4, 6].map(i => ({ offset: i * BS, length: BS })))
    await writeAt(file, 5 * BS, Buffer.from([1]))
    const c = await t.scanNow(file)
    assert.deepEqual(c.ranges, [{ offset: 5 * BS, length: BS }])
    assert.deepEqual(t.trackedFiles(), [file])
    t.removeFile(file)
    assert.deepEqual(t.trackedFiles(), [])
    await t.stop()
    assert.throws(() => { t.addFile(file) }, { code: 'ERR_CHANGES_NOT_RUNNING' })
  })

  it('stop() aborts a scan in progress and waits for it', async () => {
    const source = new FakeSource(clock)
    let release!: () => void
    source.gate = new Promise<void>(resolve => { release = resolve })
    const t = new ChangeTracker({ clock, db, source, watch: fakeWatch() }, { files: [join(dir.path, 'x')] })
    const events: ChangeEvent[] = []
    t.onChange((e) => { events.push(e) })
    const called = source.nextCall()
    await t.start()
    await clock.advanceAsync(0)
    await called
    assert.equal(source.calls.length, 1)
    const stopping = t.stop()
    release()
    await stopping
    assert.equal(events.length, 0, 'an aborted scan is not reported')
  })
})
