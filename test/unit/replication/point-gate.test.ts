/**
 * PointGate (daemon/replication/point-gate.ts): the rules that make a fleeced generation one
 * instant — a lease only on a recorded consistent point, no round while a lease is held, no
 * lease while a round runs or waits — on virtual time.
 */
import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { PointGate, type HeldPoint } from '../../../daemon/replication/point-gate.ts'
import { fileMayGrow } from '../../../storage/formats/layout.ts'

/** A point whose bytes are all `fill`, recording how it was released. */
function point (fill: number, size = 4096): HeldPoint & { released: boolean[] } {
  const released: boolean[] = []
  return {
    fileSize: size,
    released,
    read: async (offset, length) => Buffer.alloc(Math.min(length, size - offset), fill),
    release: async (ok) => { released.push(ok) }
  }
}

/** A gate holding `p` as a recorded, consistent point (a round ran and its answer was recorded). */
async function holding (g: PointGate, p: HeldPoint): Promise<PointGate> {
  await g.beginRound()
  g.hold(p)
  g.endRound(true, true)
  return g
}

/** Lets pending promise callbacks run (no real time passes). */
const flush = async (): Promise<void> => { for (let i = 0; i < 10; i++) await Promise.resolve() }

describe('replication/PointGate', () => {
  it('no point, an unrecorded one or an inconsistent one: no lease (the sender reads the live file)', async () => {
    const clock = new ManualClock()
    const g = new PointGate(clock)
    assert.equal(await g.lease(0), undefined)
    assert.equal(await g.beginRound(), null)
    g.hold(point(1))
    g.endRound(false, true) // the answer was not recorded
    assert.equal(await g.lease(0), undefined)
    const prev = await g.beginRound()
    assert.equal(prev?.ok, false, 'its changes were not recorded: merged back when released')
    g.hold(point(2))
    g.endRound(true, false) // a gap scan of the live file answered
    assert.equal(await g.lease(0), undefined)
  })

  it('a recorded consistent point is leased and read; a read after the lease ends is refused', async () => {
    const g = await holding(new PointGate(new ManualClock()), point(7, 8192))
    const l = await g.lease(0)
    assert.ok(l !== undefined)
    assert.equal(l.fileSize, 8192)
    assert.deepEqual(await l.read(0, 4), Buffer.from([7, 7, 7, 7]))
    assert.equal(g.leases, 1)
    l.release()
    l.release() // idempotent
    assert.equal(g.leases, 0)
    await assert.rejects(l.read(0, 4), { name: 'AbortedError' })
  })

  it('a round waits until every lease ends, then gets the held point to release (ok: recorded)', async () => {
    const p1 = point(1)
    const g = await holding(new PointGate(new ManualClock()), p1)
    const a = await g.lease(0)
    const b = await g.lease(0)
    const round: { began?: { point: HeldPoint, ok: boolean } | null } = {}
    void g.beginRound().then(r => { round.began = r })
    await flush()
    assert.equal(round.began, undefined, 'two senders read the point')
    a?.release()
    await flush()
    assert.equal(round.began, undefined, 'one sender still reads it')
    b?.release()
    await flush()
    assert.deepEqual(round.began as unknown, { point: p1, ok: true })
  })

  it('a lease asked during a round waits for it and gets the new point; a waiting round holds new leases back', async () => {
    const clock = new ManualClock()
    const g = await holding(new PointGate(clock), point(1))
    const reader = await g.lease(0)
    // a round waits for `reader`; a second sender must not slip in ahead of it (starving it)
    let roundStarted = false
    const round = g.beginRound().then(() => { roundStarted = true })
    let late: Awaited<ReturnType<PointGate['lease']>> | null = null
    void g.lease(5_000).then(l => { late = l ?? null })
    await flush()
    assert.equal(late, null)
    reader?.release()
    await round
    assert.equal(roundStarted, true)
    await flush()
    assert.equal(late, null, 'no lease while the round runs')
    g.hold(point(2))
    g.endRound(true, true)
    await flush()
    assert.ok(late !== null, 'leased once the round ended')
    assert.deepEqual(await (late as { read: (o: number, n: number) => Promise<Buffer> }).read(0, 1), Buffer.from([2]), 'the new point')
  })

  it('a round that does not end within the wait: no lease (fuzzy), after exactly that long', async () => {
    const clock = new ManualClock()
    const g = await holding(new PointGate(clock), point(1))
    await g.beginRound() // a round that never ends (its scan hangs)
    let got: unknown = 'pending'
    void g.lease(5_000).then(l => { got = l })
    clock.advance(4_999)
    await flush()
    assert.equal(got, 'pending')
    clock.advance(1)
    await flush()
    assert.equal(got, undefined)
  })

  it('an aborted wait rejects and leaves the gate usable', async () => {
    const g = await holding(new PointGate(new ManualClock()), point(1))
    const l = await g.lease(0)
    const ac = new AbortController()
    const waiting = g.beginRound(ac.signal)
    ac.abort()
    await assert.rejects(waiting, { name: 'AbortedError' })
    l?.release()
    assert.ok((await g.lease(0)) !== undefined, 'no round is counted as waiting after the abort')
  })

  it('drop() hands the held point out for release at stop', async () => {
    const p = point(1)
    const g = await holding(new PointGate(new ManualClock()), p)
    assert.deepEqual(g.drop(), { point: p, ok: true })
    assert.equal(g.drop(), null)
    assert.equal(await g.lease(0), undefined)
  })
})

describe('formats/fileMayGrow (which disks are fleeced)', () => {
  const vhdx = (states: number[], chunkRatio = 4): Parameters<typeof fileMayGrow>[0] => {
    const bat = new Uint8Array(states.length * 8)
    states.forEach((st, i) => { new DataView(bat.buffer).setUint32(i * 8, ((i + 4) << 20) | st, true) })
    return { layout: { subformat: 'fixed', format: 'vhdx', chunkRatio, bat: { offset: 2 << 20, length: bat.length, entryBytes: 8 } }, bat }
  }
  it('raw and fixed VHD keep their size; dynamic and differencing images grow', () => {
    const flat = { format: 'raw', chunkRatio: 0, bat: null } as const
    assert.equal(fileMayGrow({ layout: { ...flat, subformat: 'fixed' }, bat: null }), false)
    assert.equal(fileMayGrow({ layout: { ...flat, format: 'vhd', subformat: 'fixed' }, bat: null }), false)
    assert.equal(fileMayGrow({ layout: { ...flat, format: 'vhd', subformat: 'dynamic' }, bat: null }), true)
    assert.equal(fileMayGrow({ layout: { ...flat, format: 'vhdx', subformat: 'differencing' }, bat: null }), true)
  })
  it('a fixed VHDX keeps its size only when every payload block is present (qemu-img marks them ZERO and allocates on write)', () => {
    // 6 = fully present, 2 = zero; entry 4 is the chunk's sector bitmap (not payload, state 0)
    assert.equal(fileMayGrow(vhdx([6, 6, 6, 6, 0, 6])), false)
    assert.equal(fileMayGrow(vhdx([6, 6, 2, 6, 0, 6])), true)
    assert.equal(fileMayGrow({ ...vhdx([6]), bat: null }), true)
  })
})
