import assert from 'node:assert/strict'
import { offerByHash, type HaveLink } from '../../../daemon/replication/have.ts'
import { blockChecksum, type ChangedBlock } from '../../../protocol/delta/index.ts'
import type { HaveQueryMessage } from '../../../protocol/replication/index.ts'

const BS = 4096

async function * source (blocks: ChangedBlock[], log: string[]): AsyncGenerator<ChangedBlock> {
  for (const b of blocks) { log.push(`read ${b.offset / BS}`); yield b }
}

/** A target that holds the contents in `held` (by fill byte), answering in order. */
function fakeTarget (held: Set<number>, log: string[]): HaveLink & { queries: HaveQueryMessage[] } {
  const queries: HaveQueryMessage[] = []
  return {
    queries,
    query: async (q) => { queries.push(q); log.push(`query ${q.queryId} ${q.blocks.map(b => b.offset / BS).join(',')}`) },
    answer: async (id) => {
      const q = queries.find(x => x.queryId === id) as HaveQueryMessage
      log.push(`answer ${id}`)
      return q.blocks.map(b => [...held].some(v => Buffer.compare(blockChecksum(Buffer.alloc(b.length, v)), b.hash) === 0))
    }
  }
}

describe('replication/have: offering blocks by hash', () => {
  it('leaves out the blocks the target holds, keeps order, never asks for zeros, partial or unaligned blocks', async () => {
    const blocks: ChangedBlock[] = [
      { offset: 0, data: Buffer.alloc(BS, 1) },
      { offset: BS, data: Buffer.alloc(BS, 0) }, // zeros: a flag on the wire anyway
      { offset: 2 * BS, data: Buffer.alloc(BS, 2) },
      { offset: 3 * BS + 512, data: Buffer.alloc(512, 1) }, // a sub-block piece
      { offset: 4 * BS, data: Buffer.alloc(BS, 3) },
      { offset: 5 * BS, data: Buffer.alloc(100, 1) } // the file's short last block
    ]
    const log: string[] = []
    const link = fakeTarget(new Set([1, 3]), log)
    let heldBytes = 0
    const out: number[] = []
    let id = 7
    for await (const b of offerByHash(source(blocks, log), { fileId: 3, generation: 9, blockSize: BS, fileSize: 5 * BS + 100, link, nextQueryId: () => id++, onHeld: (_n, bytes) => { heldBytes += bytes } })) out.push(b.offset)
    // the short last block of ones is held too (the fake target holds ones of any length)
    assert.deepEqual(out, [BS, 2 * BS, 3 * BS + 512])
    assert.equal(link.queries.length, 1)
    assert.deepEqual(link.queries[0]?.blocks.map(b => b.offset), [0, 2 * BS, 4 * BS, 5 * BS])
    assert.equal(link.queries[0]?.generation, 9)
    assert.equal(link.queries[0]?.fileId, 3)
    assert.equal(heldBytes, 2 * BS + 100)
  })

  it('keeps several queries in flight, up to its window of held bytes', async () => {
    const blocks = Array.from({ length: 40 }, (_, i) => ({ offset: i * BS, data: Buffer.alloc(BS, 1 + (i % 5)) }))
    const log: string[] = []
    const link = fakeTarget(new Set([2]), log)
    const out: number[] = []
    let id = 1
    for await (const b of offerByHash(source(blocks, log), { fileId: 0, generation: 1, blockSize: BS, fileSize: 40 * BS, link, nextQueryId: () => id++, batchBytes: 4 * BS, windowBytes: 12 * BS })) out.push(b.offset / BS)
    assert.deepEqual(out, Array.from({ length: 40 }, (_, i) => i).filter(i => i % 5 !== 1))
    assert.equal(link.queries.length, 10)
    // the first answer is awaited only once the window is full: three queries out before it
    const firstAnswer = log.indexOf('answer 1')
    assert.equal(log.slice(0, firstAnswer).filter(l => l.startsWith('query')).length, 3)
    // and never more than the window's blocks read ahead of what was settled
    let read = 0; let settled = 0
    for (const l of log) {
      if (l.startsWith('read')) read++
      if (l.startsWith('answer')) settled += 4
      assert.ok(read - settled <= 12 + 1, `${read} read, ${settled} settled`)
    }
  })

  it('refuses an answer with the wrong number of flags', async () => {
    const link: HaveLink = { query: async () => {}, answer: async () => [true] }
    const blocks = [{ offset: 0, data: Buffer.alloc(BS, 1) }, { offset: BS, data: Buffer.alloc(BS, 2) }]
    await assert.rejects(async () => { for await (const _ of offerByHash(source(blocks, []), { fileId: 0, generation: 1, blockSize: BS, fileSize: 2 * BS, link, nextQueryId: () => 1 })) {} }, { name: 'ReplicationUnexpectedMessageError' })
  })
})
