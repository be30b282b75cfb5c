// Worker entry for block.test.ts: proves encodeBlock runs inside a worker thread.
import { parentPort, workerData } from 'node:worker_threads'
import { encodeBlock } from '../../../protocol/delta/block.ts'

const blocks = (workerData as { blocks: Uint8Array[] }).blocks
const out = blocks.map(b => encodeBlock(b))
parentPort?.postMessage(out, out.map(b => b.payload.buffer as ArrayBuffer))
