import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { hashBlocks } from '../../../common/blake3.ts'
import { encodeGeneration, encodeFrame, type ChangedBlock } from '../../../protocol/delta/index.ts'
import { encodeReplicationItem } from '../../../protocol/replication/index.ts'
import { SUB_BLOCK, differingParts, refineBlocks, type SubHashes } from '../../../daemon/replication/sub-blocks.ts'

const BS = 64 * 1024

function subHashesOf (data: Uint8Array, offset: number): SubHashes {
  const m: SubHashes = new Map()
  hashBlocks(data, SUB_BLOCK).forEach((h, i) => m.set(offset / SUB_BLOCK + i, h))
  return m
}

async function wireBytes (blocks: ChangedBlock[], size: number): Promise<number> {
  let n = 0
  for await (const f of encodeGeneration({
    vm: 'vm', generation: 2, baseGeneration: 1, consistent: true, createdAtMs: 1,
    files: [{ fileId: 1, path: '/d.vhd', size, blockSize: BS, kind: 0 }],
    readBlocks: () => blocks,
    maxFramePayloadBytes: 1024 * 1024
  })) n += encodeFrame(f).byteLength
  return n
}

describe('replication sub-block deltas', () => {
  it('passes on only the 4 KiB pieces that differ, as runs', () => {
    const old = randomBytes(BS)
    const now = Buffer.from(old)
    randomBytes(SUB_BLOCK).copy(now, 3 * SUB_BLOCK)
    randomBytes(SUB_BLOCK).copy(now, 4 * SUB_BLOCK)
    randomBytes(100).copy(now, 15 * SUB_BLOCK + 7)
    const parts = differingParts({ offset: 10 * BS, data: now }, subHashesOf(old, 10 * BS))
    assert.deepEqual(parts.map(p => [p.offset - 10 * BS, p.data.byteLength]), [[3 * SUB_BLOCK, 2 * SUB_BLOCK], [15 * SUB_BLOCK, SUB_BLOCK]])
    assert.deepEqual(Buffer.from(parts[0]?.data as Uint8Array), now.subarray(3 * SUB_BLOCK, 5 * SUB_BLOCK))
  })

  it('sends a block whole where the target had no hashes (past its end, not asked)', () => {
    const data = randomBytes(BS)
    assert.deepEqual(differingParts({ offset: 0, data }, new Map()).map(p => p.data.byteLength), [BS])
    // a short last block of a file: pieces compared as far as they go
    const tail = randomBytes(SUB_BLOCK + 100)
    const parts = differingParts({ offset: BS, data: tail }, subHashesOf(tail.subarray(0, SUB_BLOCK), BS))
    assert.deepEqual(parts.map(p => [p.offset, p.data.byteLength]), [[BS + SUB_BLOCK, 100]])
  })

  it('scattered 4 KiB writes cost ≤ 1.3× their size on the wire, hashes included (64 KiB blocks cost 16×)', async () => {
    const size = 64 * 1024 * 1024
    const writes = 512 // 2 MiB of 4 KiB writes, one per changed 64 KiB block
    const whole: ChangedBlock[] = []
    const theirs: SubHashes = new Map()
    let hashBytes = 0
    for (let i = 0; i < writes; i++) {
      const offset = i * 2 * BS
      const old = randomBytes(BS)
      const now = Buffer.from(old)
      randomBytes(SUB_BLOCK).copy(now, (i % 16) * SUB_BLOCK)
      whole.push({ offset, data: now })
      for (const [k, v] of subHashesOf(old, offset)) theirs.set(k, v)
      // what the target answers for this block: one hashRequest, one hashResponse
      hashBytes += encodeReplicationItem({ type: 'hashRequest', requestId: i, fileId: 1, offset, length: BS, blockSize: SUB_BLOCK }).byteLength
      hashBytes += encodeReplicationItem({ type: 'hashResponse', requestId: i, fileId: 1, offset, blockSize: SUB_BLOCK, hashes: hashBlocks(old, SUB_BLOCK), last: true }).byteLength
    }
    const refined: ChangedBlock[] = []
    async function * src (): AsyncGenerator<ChangedBlock> { yield * whole }
    for await (const b of refineBlocks(src(), theirs)) refined.push(b)
    const written = writes * SUB_BLOCK
    const wire = await wireBytes(refined, size) + hashBytes
    const before = await wireBytes(whole, size)
    assert.ok(wire <= 1.3 * written, `wire ${wire} for ${written} written`)
    assert.ok(before >= 15 * written, `without sub-blocks ${before}`)
  })
})

describe('replication/sender: sub-block refinement only where the path is slow', () => {
  it('refines on an unmeasured path and below ~400 Mbit/s, not on a faster one', async () => {
    const { refinePays } = await import('../../../daemon/replication/sender.ts')
    assert.equal(refinePays(0), true, 'a new session has not measured its path yet: refine (safe on a WAN)')
    assert.equal(refinePays(1.25e6), true, '10 Mbit/s')
    assert.equal(refinePays(12.5e6), true, '100 Mbit/s')
    assert.equal(refinePays(125e6), false, '1 Gbit/s: sending the block costs less than the round trip and the target\'s read and hash')
  })
})
