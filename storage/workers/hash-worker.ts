/** Default worker script of `WorkerPool`: block hashing for scans, block encoding for senders. */
import { serveTasks } from './worker-host.ts'
import { encodeBlocksTask, hashBlocksTask, readHashBlocksTask } from './tasks.ts'
import type { EncodeBlocksPayload, HashBlocksPayload, ReadHashPayload } from './tasks.ts'

serveTasks({
  hashBlocks: (payload) => {
    const r = hashBlocksTask(payload as HashBlocksPayload)
    return { result: r, transfer: [r.buf, r.hashes, r.zeroMask] }
  },
  readHashBlocks: (payload) => {
    const r = readHashBlocksTask(payload as ReadHashPayload)
    return { result: r, transfer: [r.hashes, r.zeroMask] }
  },
  encodeBlocks: (payload) => {
    const r = encodeBlocksTask(payload as EncodeBlocksPayload)
    return { result: r, transfer: [r.buf, r.out, r.checksums] }
  },
  // Test hooks: exercise the pool's error and crash paths without a special script.
  fail: () => { throw Object.assign(new Error('requested failure'), { code: 'ERR_TEST_FAIL' }) },
  crash: () => { process.exit(3) },
  echo: (payload) => ({ result: payload })
})
