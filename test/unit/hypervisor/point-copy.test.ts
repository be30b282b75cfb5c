/**
 * point-copy.ts: the blocks of a copied point, kept across points within a budget — newest
 * bytes win, the oldest blocks go first, a read of anything not held is a typed miss — and the
 * plan that maps a fixed image's virtual ranges to the file ranges the told source will ask for.
 */
import assert from 'node:assert/strict'
import { PointCopy, PointRangeMissError, copyPlan } from '../../../daemon/hypervisor/point-copy.ts'
import { rawLayout, type DiskLayout } from '../../../storage/formats/layout.ts'

const fill = (n: number, v: number): Buffer => Buffer.alloc(n, v)

describe('hypervisor/point-copy', () => {
  it('holds the newest bytes per block, reads across blocks, and says what it covers', () => {
    const c = new PointCopy(4096, 1 << 20)
    c.put(0, fill(8192, 1))
    c.put(4096, fill(4096, 2)) // a later point rewrote block 1
    assert.deepEqual([...c.read(4000, 200)], [...fill(96, 1), ...fill(104, 2)])
    assert.equal(c.covers([{ offset: 0, length: 8192 }]), true)
    assert.equal(c.covers([{ offset: 0, length: 8193 }]), false)
    assert.equal(c.covers([{ offset: 100, length: 0 }]), true)
    assert.throws(() => c.read(8000, 500), (e: Error & { code?: string }) => e instanceof PointRangeMissError && e.name === 'PointRangeMissError' && e.code === 'ERR_POINT_RANGE_MISS')
    assert.equal(c.bytes, 8192)
    c.clear()
    assert.equal(c.covers([{ offset: 0, length: 1 }]), false)
    assert.equal(c.bytes, 0)
  })

  it('a short last block (the file\'s end) covers only its bytes', () => {
    const c = new PointCopy(4096, 1 << 20)
    c.put(8192, fill(1000, 7))
    assert.equal(c.covers([{ offset: 8192, length: 1000 }]), true)
    assert.equal(c.covers([{ offset: 8192, length: 1001 }]), false)
  })

  it('evicts the oldest blocks past its budget; a rewritten block counts as new', () => {
    const c = new PointCopy(4096, 3 * 4096)
    c.put(0, fill(4096, 1))
    c.put(4096, fill(4096, 2))
    c.put(8192, fill(4096, 3))
    c.put(0, fill(4096, 4)) // block 0 is now the newest
    c.put(12288, fill(4096, 5)) // over budget: block 1 (the oldest) goes
    assert.equal(c.bytes, 3 * 4096)
    assert.equal(c.covers([{ offset: 4096, length: 4096 }]), false)
    assert.equal(c.read(0, 1)[0], 4)
    assert.equal(c.covers([{ offset: 8192, length: 8192 }]), true)
    assert.throws(() => { c.put(100, fill(10, 0)) }, RangeError)
  })

  it('a block not copied again for keepPoints points goes (memory falls back after a burst)', () => {
    const c = new PointCopy(4096, 1 << 20, 2)
    c.nextPoint()
    c.put(0, fill(8192, 1)) // point 1: blocks 0, 1
    c.nextPoint()
    c.put(4096, fill(4096, 2)) // point 2: block 1 again
    assert.equal(c.covers([{ offset: 0, length: 8192 }]), true)
    c.nextPoint() // point 3: block 0 (last copied at 1) goes, block 1 (2) stays
    assert.equal(c.covers([{ offset: 0, length: 4096 }]), false)
    assert.equal(c.read(4096, 1)[0], 2)
    assert.equal(c.bytes, 4096)
    c.nextPoint()
    assert.equal(c.bytes, 0)
  })

  it('plan: raw maps 1:1 to blocks; a fixed VHDX maps through its BAT', () => {
    const raw = copyPlan({ layout: rawLayout(1 << 20), bat: null }, 4096)
    assert.ok(raw !== null)
    assert.deepEqual(raw([{ offset: 5000, length: 10 }, { offset: (1 << 20) - 1, length: 1 }]), [{ offset: 4096, length: 4096 }, { offset: (1 << 20) - 4096, length: 4096 }])
    // a VHDX with 1 MiB blocks: payload block 0 at 4 MiB, block 1 at 8 MiB (entries: state 6 = fully present, offset in MiB << 20)
    const bat = new Uint8Array(8 * 3)
    const dv = new DataView(bat.buffer)
    dv.setUint32(0, (4 << 20) | 6, true)
    dv.setUint32(8, (8 << 20) | 6, true)
    const layout: DiskLayout = { format: 'vhdx', subformat: 'fixed', fileSize: 10 << 20, virtualSize: 2 << 20, blockSize: 1 << 20, vhdBitmapBytes: 0, chunkRatio: 2048, logicalSectorSize: 512, hasParent: false, logPending: false, bat: { offset: 3 << 20, length: 24, entryBytes: 8 }, metadata: [] }
    const vhdx = copyPlan({ layout, bat }, 4096)
    assert.ok(vhdx !== null)
    const got = vhdx([{ offset: (1 << 20) + 10, length: 5000 }])
    assert.ok(got.some(r => r.offset === (8 << 20) && r.length === 8192), JSON.stringify(got))
    assert.equal(copyPlan({ layout, bat: null }, 4096), null)
  })
})
