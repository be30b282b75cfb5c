import assert from 'node:assert/strict'
import { JournalAppender, JournalReader, PRELUDE_BYTES, type JournalRecord, type ReadEnd } from '../../../storage/replica/records.ts'
import { IntervalSet, subtract } from '../../../storage/replica/intervals.ts'
import { selectRetained, resolveRetention, DEFAULT_RETENTION } from '../../../storage/replica/retention.ts'
import { replicaFileName, sourceBasename } from '../../../storage/replica/names.ts'
import { MemFs } from './memfs.ts'

async function readAll (fs: MemFs, path: string): Promise<{ recs: JournalRecord[], end: ReadEnd }> {
  const r = await JournalReader.open(fs, path, 'redo')
  const recs: JournalRecord[] = []
  try {
    for (let i = 0; i < 10_000; i++) {
      const x = await r.next()
      if (!('type' in x)) return { recs, end: x }
      recs.push(x.type === 'block' ? { ...x, data: Buffer.from(x.data) } : x)
      if (x.type === 'commit') return { recs, end: { kind: 'end' } }
    }
    throw new Error('unbounded journal')
  } finally { await r.close() }
}

async function sample (fs: MemFs, path = '/j'): Promise<number> {
  const a = await JournalAppender.create(fs, path, 'redo', { hello: 'world' }, 64)
  await a.appendBlock(1, 10, Buffer.alloc(100, 1))
  await a.appendSize(1, 5000)
  await a.appendBlock(2, 2 ** 40, Buffer.alloc(10, 2))
  await a.appendCommit()
  await a.close()
  return a.size
}

describe('replica journal records', () => {
  it('round-trips header, blocks, sizes and the commit record', async () => {
    const fs = new MemFs()
    const size = await sample(fs)
    assert.equal(fs.peek('/j')?.length, size)
    const { recs, end } = await readAll(fs, '/j')
    assert.equal(end.kind, 'end')
    assert.deepEqual(recs.map(r => r.type), ['header', 'block', 'size', 'block', 'commit'])
    assert.deepEqual((recs[0] as { json: unknown }).json, { hello: 'world' })
    const b2 = recs[3] as { offset: number, data: Buffer, fileIdx: number }
    assert.equal(b2.offset, 2 ** 40)
    assert.equal(b2.fileIdx, 2)
    assert.deepEqual(recs[4], { type: 'commit', records: 3, dataBytes: 110 })
  })

  it('stops at a flipped bit anywhere, never returning the commit record', async () => {
    const fs = new MemFs()
    const size = await sample(fs)
    const original = fs.peek('/j') as Buffer
    for (let at = 0; at < size; at += 7) {
      const copy = Buffer.from(original)
      copy[at] = (copy[at] as number) ^ 0x40
      const fs2 = new MemFs()
      await fs2.mkdir('/')
      const fh = await fs2.open('/j', 'create')
      await fh.write(copy, 0, copy.length, 0)
      const { recs, end } = await readAll(fs2, '/j')
      assert.ok(!recs.some(r => r.type === 'commit'), `byte ${at}: commit record still accepted`)
      assert.equal(end.kind, 'torn')
      if (end.kind === 'torn') assert.equal(end.error.code, 'ERR_REPLICA_JOURNAL_CORRUPT')
    }
  })

  it('treats every truncation as a torn tail', async () => {
    const fs = new MemFs()
    const size = await sample(fs)
    const original = fs.peek('/j') as Buffer
    for (let len = 0; len < size; len += 5) {
      const fs2 = new MemFs()
      const fh = await fs2.open('/j', 'create')
      await fh.write(original, 0, len, 0)
      const { recs } = await readAll(fs2, '/j')
      assert.ok(!recs.some(r => r.type === 'commit'), `length ${len}`)
      if (len < PRELUDE_BYTES) assert.equal(recs.length, 0)
    }
  })

  it('refuses an absurd record length before allocating it', async () => {
    const fs = new MemFs()
    await sample(fs)
    const at = (fs.peek('/j') as Buffer).length
    const fh = await fs.open('/j', 'write')
    const head = Buffer.alloc(8)
    head.writeUInt8(2, 0)
    head.writeUInt32LE(0xffff_fff0, 4)
    await fh.write(head, 0, 8, at)
    const r = await JournalReader.open(fs, '/j', 'redo')
    for (let i = 0; i < 5; i++) await r.next()
    const end = await r.next()
    assert.ok(!('type' in end))
    await r.close()
  })

  it('a journal of another kind is not accepted', async () => {
    const fs = new MemFs()
    await sample(fs)
    const r = await JournalReader.open(fs, '/j', 'undo')
    const x = await r.next()
    assert.ok(!('type' in x) && x.kind === 'torn')
    await r.close()
  })
})

describe('replica interval sets', () => {
  it('merges overlapping and adjacent ranges', () => {
    const s = new IntervalSet()
    s.add(10, 20); s.add(30, 40); s.add(20, 25); s.add(5, 11); s.add(50, 60); s.add(24, 31); s.add(0, 0)
    assert.deepEqual(s.toArray(), [{ start: 5, end: 40 }, { start: 50, end: 60 }])
    assert.equal(s.bytes, 45)
    assert.ok(s.covers(6, 39))
    assert.ok(!s.covers(39, 41))
    assert.deepEqual(s.clip(55).toArray(), [{ start: 5, end: 40 }, { start: 50, end: 55 }])
  })

  it('subtracts', () => {
    const minus = IntervalSet.from([{ start: 5, end: 10 }, { start: 15, end: 20 }])
    const pieces = [...subtract([{ start: 0, end: 12 }, { start: 14, end: 30 }], minus)].map(p => [p.start, p.end])
    assert.deepEqual(pieces, [[0, 5], [10, 12], [14, 15], [20, 30]])
    assert.deepEqual([...subtract([{ start: 6, end: 8 }], minus)], [])
  })

  it('agrees with a bitmap on random inserts', () => {
    let x = 7
    const rand = (n: number): number => { x = (x * 1103515245 + 12345) % 2147483648; return x % n }
    const s = new IntervalSet()
    const bits = new Uint8Array(500)
    for (let i = 0; i < 300; i++) {
      const a = rand(490); const b = a + rand(10)
      s.add(a, b); bits.fill(1, a, b)
    }
    const fromBits: Array<{ start: number, end: number }> = []
    for (let i = 0; i < bits.length; i++) {
      if (bits[i] === 1 && (i === 0 || bits[i - 1] === 0)) fromBits.push({ start: i, end: i })
      if (bits[i] === 1) (fromBits[fromBits.length - 1] as { end: number }).end = i + 1
    }
    assert.deepEqual(s.toArray(), fromBits)
  })
})

describe('replica retention policy', () => {
  const H = 3_600_000
  it('keeps the last hour whole, then the newest point of each hour, up to maxPoints hours', () => {
    const now = 100 * H
    const points = [
      { generation: 1, createdAtMs: 90 * H + 10 }, { generation: 2, createdAtMs: 90 * H + 20 },
      { generation: 3, createdAtMs: 97 * H }, { generation: 4, createdAtMs: 98 * H + 5 },
      { generation: 5, createdAtMs: 98 * H + 9 }, { generation: 6, createdAtMs: 99 * H + 1 },
      { generation: 7, createdAtMs: 99 * H + 2 }, { generation: 8, createdAtMs: 100 * H }
    ]
    assert.deepEqual([...selectRetained(points, now, DEFAULT_RETENTION)].sort((a, b) => a - b), [2, 3, 5, 6, 7, 8])
    assert.deepEqual([...selectRetained(points, now, { ...DEFAULT_RETENTION, maxPoints: 2 })].sort((a, b) => a - b), [3, 5, 6, 7, 8])
    assert.deepEqual([...selectRetained(points, now, { maxPoints: 3, keepAllWithinMs: 0, hourlyBeyond: false })].sort((a, b) => a - b), [5, 6, 7, 8])
    // the newest point survives even when it is old
    assert.deepEqual([...selectRetained(points.slice(0, 1), now, { maxPoints: 0, keepAllWithinMs: 0, hourlyBeyond: true })], [1])
    assert.deepEqual([...selectRetained([], now, DEFAULT_RETENTION)], [])
  })

  it('validates the policy', () => {
    assert.throws(() => resolveRetention({ maxPoints: -1 }), { code: 'ERR_REPLICA_INVALID_INPUT' })
    assert.throws(() => resolveRetention({ keepAllWithinMs: 1.5 }), { code: 'ERR_REPLICA_INVALID_INPUT' })
    assert.deepEqual(resolveRetention(undefined), DEFAULT_RETENTION)
  })
})

describe('replica file names', () => {
  it('keeps the basename, makes it safe and unique', () => {
    assert.equal(sourceBasename('C:\\VMs\\web01\\Virtual Hard Disks\\web01.vhdx'), 'web01.vhdx')
    assert.equal(replicaFileName('/vms/web01/web01.vhdx', new Set()), 'web01.vhdx')
    assert.equal(replicaFileName('C:\\VMs\\a b\\disk (1).vhdx', new Set()), 'disk__1_.vhdx')
    assert.equal(replicaFileName('/', new Set()), 'file')
    assert.equal(replicaFileName('/x/..', new Set()), 'file')
    const taken = new Set(['disk.vhdx'])
    const n = replicaFileName('/b/disk.vhdx', taken)
    assert.match(n, /^disk-[0-9a-f]{8}\.vhdx$/)
    taken.add(n)
    assert.match(replicaFileName('/b/disk.vhdx', taken), /^disk-[0-9a-f]{8}-2\.vhdx$/)
  })
})
