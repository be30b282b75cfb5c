/**
 * Blocks the target already holds travel as their hash (replication 1.2.0, haveQuery).
 *
 * Between the block reader and the encoder of one file of a generation: each whole block (at a
 * block boundary, or the file's short last block; not all zeros, which travel as a flag anyway)
 * is hashed — BLAKE3-128, the delta checksum — and batched; each batch goes to the target as one
 * haveQuery, and the blocks wait here until its haveAnswer says which ones the target copied
 * from its content index into the generation. Only the others go on, in their original order.
 *
 *   reader ─▶ hash + batch (≤ batchBytes) ─▶ haveQuery ─▶ … window of answers pending …
 *                                                         haveAnswer ─▶ the rest ─▶ encoder
 *
 * Several batches are outstanding at once (up to `windowBytes` of blocks held here), so a round
 * trip costs no throughput while the window covers it: 16 MiB per 100 ms RTT is 160 MB/s. Memory
 * is bounded by the window; backpressure is the reader's (it is pulled only as batches settle).
 */
import { blockChecksum, isAllZero, type ChangedBlock } from '../../protocol/delta/index.ts'
import type { HaveQueryMessage } from '../../protocol/replication/index.ts'
import { ReplicationUnexpectedMessageError } from './errors.ts'

export interface HaveLink {
  /** Sends one query. */
  query: (msg: HaveQueryMessage) => Promise<void>
  /** The answer to `queryId` (answers come in query order): one flag per block asked. */
  answer: (queryId: number) => Promise<boolean[]>
}

export interface OfferOptions {
  fileId: number
  generation: number
  /** the file's block size and current size: what counts as a whole block */
  blockSize: number
  fileSize: number
  link: HaveLink
  /** A fresh u32 query id. */
  nextQueryId: () => number
  /** Raw bytes per query. @default 2 MiB */
  batchBytes?: number
  /** Blocks per query (the codec's maxHaveBlocks). @default 4096 */
  batchBlocks?: number
  /** Raw bytes held here while their answers are pending. @default 16 MiB */
  windowBytes?: number
  /** The target copied `blocks` blocks of `bytes` bytes: they are not sent. */
  onHeld?: (blocks: number, bytes: number) => void
}

interface Item { block: ChangedBlock, hash: Uint8Array | undefined }
interface Batch { queryId: number | undefined, items: Item[], asked: number, bytes: number }

/** The blocks of `blocks` the target does not already hold, in order (see the file comment). */
export async function * offerByHash (blocks: AsyncIterable<ChangedBlock>, o: OfferOptions): AsyncGenerator<ChangedBlock> {
  const batchBytes = o.batchBytes ?? 2 * 1024 * 1024
  const batchBlocks = o.batchBlocks ?? 4096
  const windowBytes = o.windowBytes ?? 16 * 1024 * 1024
  const pending: Batch[] = []
  let cur: Batch = { queryId: undefined, items: [], asked: 0, bytes: 0 }
  let held = 0

  const send = async (): Promise<void> => {
    const b = cur
    cur = { queryId: undefined, items: [], asked: 0, bytes: 0 }
    if (b.items.length === 0) return
    if (b.asked > 0) {
      b.queryId = o.nextQueryId()
      const asked = b.items.filter(i => i.hash !== undefined).map(i => ({ offset: i.block.offset, length: i.block.data.byteLength, hash: i.hash as Uint8Array }))
      await o.link.query({ type: 'haveQuery', queryId: b.queryId, generation: o.generation, fileId: o.fileId, blocks: asked })
    }
    pending.push(b)
  }

  // the oldest batch's blocks the target does not hold
  const settle = async (): Promise<ChangedBlock[]> => {
    const b = pending.shift() as Batch
    held -= b.bytes
    if (b.queryId === undefined) return b.items.map(i => i.block)
    const flags = await o.link.answer(b.queryId)
    if (flags.length !== b.asked) throw new ReplicationUnexpectedMessageError(`haveAnswer with ${flags.length} flags for ${b.asked} blocks`)
    const out: ChangedBlock[] = []
    let k = 0
    let n = 0
    let bytes = 0
    for (const i of b.items) {
      if (i.hash !== undefined && flags[k++] === true) { n++; bytes += i.block.data.byteLength; continue }
      out.push(i.block)
    }
    if (n > 0) o.onHeld?.(n, bytes)
    return out
  }

  for await (const block of blocks) {
    const len = block.data.byteLength
    const whole = block.offset % o.blockSize === 0 && (len === o.blockSize || (len < o.blockSize && block.offset + len === o.fileSize))
    const hash = whole && !isAllZero(block.data) ? blockChecksum(block.data) : undefined
    cur.items.push({ block, hash })
    cur.bytes += len
    held += len
    if (hash !== undefined) cur.asked++
    if (cur.asked >= batchBlocks || cur.bytes >= batchBytes) await send()
    // bounded: each pass settles one batch
    while (held > windowBytes && pending.length > 0) yield * await settle()
  }
  await send()
  while (pending.length > 0) yield * await settle()
}
