/**
 * ToldScanSource: a told source that keeps the hash scan's manifest true. The seed-resume rule
 * of the sender (skip a block when the manifest's hash equals the target's) and new-target
 * seeding (`nonZeroRanges`) must see told changes; a gap in the told chain is one hash scan
 * against the manifest (incremental, not every block), then told answers again.
 */
import assert from 'node:assert/strict'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Level } from 'level'
import { HashScanSource } from '../../../storage/changes/hash-scan.ts'
import { ToldRangesSource } from '../../../storage/changes/told.ts'
import { ToldScanSource, parseToldScanToken } from '../../../storage/changes/told-scan.ts'
import type { Range } from '../../../storage/changes/range.ts'
import { Manifest } from '../../../storage/manifest/manifest.ts'
import { binarySublevel } from '../../../storage/manifest/db.ts'
import { blockChecksum, zeroChecksum } from '../../../protocol/delta/index.ts'
import type { ManualClock } from '../../../common/clock.ts'
import { aheadClock, blockContent, tempDb, tempDir, writeAt, KiB } from './helpers.ts'
import type { TempDir } from './helpers.ts'

const BS = 4 * KiB
const N = 256

function blocksOf (ranges: Range[]): number[] {
  const out: number[] = []
  for (const r of ranges) for (let o = r.offset; o < r.offset + r.length; o += BS) out.push(o / BS)
  return out
}

describe('changes/told-scan', function () {
  this.timeout(20_000)
  let dir: TempDir
  let db: Level<Uint8Array, Uint8Array>
  let file: string
  let clock: ManualClock
  let manifest: Manifest
  let hashScan: HashScanSource
  let told: ToldRangesSource
  /** The fake producer: what it tells at the next answer, and its chain. */
  let live: boolean
  let pending: Range[]
  let chain: number
  let restartChain: boolean
  let source: ToldScanSource

  beforeEach(async () => {
    dir = await tempDir()
    db = await tempDb(dir.path)
    file = join(dir.path, 'disk.raw')
    clock = aheadClock()
    const buf = Buffer.alloc(N * BS)
    for (let i = 0; i < N; i++) if (i < 128) blockContent(BS, i).copy(buf, i * BS) // upper half zeros
    await writeFile(file, buf)
    manifest = new Manifest(binarySublevel(db, 'manifest'))
    hashScan = new HashScanSource({ manifest, clock }, { blockSizeBytes: BS, chunkBytes: 16 * BS })
    told = new ToldRangesSource({}, { blockSizeBytes: BS })
    live = true
    pending = []
    chain = 0
    restartChain = true
    source = new ToldScanSource({
      told,
      hashScan,
      producer: {
        beforeAnswer: async (f) => {
          if (!live) { restartChain = true; return false }
          if (restartChain) {
            restartChain = false
            pending = []
            told.tell(f, { since: null, until: `p${++chain}`, ranges: [], space: 'file' })
            return true
          }
          told.tell(f, { since: `p${chain}`, until: `p${chain + 1}`, ranges: pending, space: 'file' })
          chain++
          pending = []
          return true
        }
      }
    })
  })
  afterEach(async () => { await db.close(); await dir.cleanup() })

  /** A guest write the producer sees (and tells at the next answer). */
  async function write (block: number, salt: number): Promise<void> {
    await writeAt(file, block * BS, blockContent(BS, block, salt))
    pending.push({ offset: block * BS, length: BS })
  }

  /** The sender's seed-resume rule (sender.ts buildSkipSet): blocks whose manifest hash equals the target's. */
  async function skipped (replica: Buffer): Promise<Set<number>> {
    const ours = new Map<number, Uint8Array | null>()
    for await (const e of manifest.file(file).entries(0, N)) ours.set(e.index, e.hash)
    const zero = zeroChecksum(BS)
    const out = new Set<number>()
    for (let i = 0; i < N; i++) {
      const theirs = blockChecksum(replica.subarray(i * BS, (i + 1) * BS))
      if (Buffer.compare(ours.get(i) ?? zero, theirs) === 0) out.add(i)
    }
    return out
  }

  it('a seed resumed after told changes skips no changed block, and a new target is seeded with them', async () => {
    const first = await source.changes(file, null)
    assert.equal(first.full, true)
    assert.equal(source.lastAnswer(file), 'gap-scan')
    assert.deepEqual(blocksOf(first.ranges), [...Array(128).keys()])
    // the target holds this seed durably (an interrupted seed that got everything)
    const replica = await readFile(file)

    await write(5, 1) // changed
    await write(200, 1) // was zeros
    const set = await source.changes(file, first.token)
    assert.equal(set.full, false)
    assert.equal(source.lastAnswer(file), 'told')
    assert.deepEqual(blocksOf(set.ranges), [5, 200])
    assert.ok(set.scannedBytes <= 2 * BS, `read ${set.scannedBytes} bytes: only the told blocks`)
    assert.equal(set.consistent, false)

    const skip = await skipped(replica)
    assert.ok(!skip.has(5), 'block 5 changed after the seed: resuming must resend it')
    assert.ok(!skip.has(200), 'block 200 changed after the seed: resuming must resend it')
    assert.ok(skip.has(4) && skip.has(100) && skip.has(250), 'unchanged blocks are still skipped')

    const nonZero: number[] = []
    for await (const r of hashScan.nonZeroRanges(file)) nonZero.push(...blocksOf([r]))
    assert.ok(nonZero.includes(200), 'a new target must get block 200')
    assert.equal((await manifest.file(file).meta())?.stat, null, 'no stat token: a told pass is not a quiet scan')
  })

  it('a gap in the chain (bitmap lost) is one incremental hash scan, then told answers again', async () => {
    let token = (await source.changes(file, null)).token
    await write(3, 1)
    token = (await source.changes(file, token)).token
    // QEMU restarted: block 9 was written while no bitmap recorded it
    await writeAt(file, 9 * BS, blockContent(BS, 9, 7))
    restartChain = true
    const gap = await source.changes(file, token)
    assert.equal(source.lastAnswer(file), 'gap-scan')
    assert.equal(gap.full, false, 'the manifest is ours: only what differs, not every block')
    assert.deepEqual(blocksOf(gap.ranges), [9])
    assert.equal(gap.scannedBytes, N * BS, 'one read of the file')
    assert.equal(gap.consistent, false)
    await write(10, 1)
    const again = await source.changes(file, gap.token)
    assert.equal(source.lastAnswer(file), 'told')
    assert.deepEqual(blocksOf(again.ranges), [10])
    assert.ok(again.scannedBytes <= BS)
  })

  it('an unknown token (daemon restarted: told state lost) scans against the manifest, not a full resend', async () => {
    const t1 = (await source.changes(file, null)).token
    await write(6, 1)
    const t2 = (await source.changes(file, t1)).token
    // a new process: new told source, same manifest
    told = new ToldRangesSource({}, { blockSizeBytes: BS })
    const fresh = new ToldScanSource({ told, hashScan, producer: { beforeAnswer: async (f) => { told.tell(f, { since: null, until: 'q1', ranges: [], space: 'file' }); return true } } })
    await writeAt(file, 8 * BS, blockContent(BS, 8, 3))
    const set = await fresh.changes(file, t2)
    assert.equal(set.full, false)
    assert.deepEqual(blocksOf(set.ranges), [8])
  })

  it('tokens: a plain hash-scan token (the VM used the scan before) is kept as the hash-scan part, both ways', async () => {
    const before = await hashScan.changes(file, null)
    assert.deepEqual(parseToldScanToken(before.token), { hs: before.token, told: null })
    await writeAt(file, 11 * BS, blockContent(BS, 11, 9))
    const set = await source.changes(file, before.token) // the switch: one scan against the manifest
    assert.equal(set.full, false)
    assert.deepEqual(blocksOf(set.ranges), [11])
    assert.deepEqual(parseToldScanToken('garbage'), { hs: null, told: null })
    assert.equal(parseToldScanToken(set.token).hs !== null, true)
  })

  it('while the producer cannot see the file (VM not under QEMU) the hash scan answers', async () => {
    let token = (await source.changes(file, null)).token
    live = false
    await writeAt(file, 12 * BS, blockContent(BS, 12, 5))
    const set = await source.changes(file, token)
    assert.equal(source.lastAnswer(file), 'idle-scan')
    assert.deepEqual(blocksOf(set.ranges), [12])
    token = set.token
    live = true
    const back = await source.changes(file, token) // a new chain: one scan (nothing changed)
    assert.equal(source.lastAnswer(file), 'gap-scan')
    assert.deepEqual(back.ranges, [])
    await write(13, 1)
    const t = await source.changes(file, back.token)
    assert.equal(source.lastAnswer(file), 'told')
    assert.deepEqual(blocksOf(t.ranges), [13])
  })
})
