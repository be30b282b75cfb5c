/**
 * Delta codec throughput, single thread, 64 KiB blocks of mixed content (40% random, 40% text-like,
 * 20% zero), with baselines measured in the same run (memcpy, BLAKE3 alone). Prints one JSON document.
 * Run: node --import tsx test/unit/delta/measure.ts [seconds-per-measurement]
 * (kept beside the tests because bench/ belongs to another engineer; move it there at will)
 */
import { createHash } from 'node:crypto'
import { SeededRandom } from '../../../common/random.ts'
import { BlockEncoding, blockChecksum, decodeBlock, encodeBlock } from '../../../protocol/delta/block.ts'
import type { EncodedBlock } from '../../../protocol/delta/block.ts'
import { encodeFrame } from '../../../protocol/delta/codec.ts'
import { encodeGeneration } from '../../../protocol/delta/encoder.ts'
import { GenerationValidator } from '../../../protocol/delta/generation.ts'
import { FileKind } from '../../../protocol/delta/messages.ts'
import { FrameDecoder } from '../../../protocol/delta/stream.ts'
import { compressible, randomBytes } from './fixtures.ts'

const BLOCK = 64 * 1024
const COUNT = 256
const seconds = Number(process.argv[2] ?? 1.5)

const rng = new SeededRandom(2024)
const blocks: Uint8Array[] = []
for (let i = 0; i < COUNT; i++) {
  const r = i % 5
  blocks.push(r < 2 ? randomBytes(rng, BLOCK) : r < 4 ? compressible(rng, BLOCK) : new Uint8Array(BLOCK))
}
const totalBytes = COUNT * BLOCK

/** MB/s (10^6 bytes) of `fn` over `bytes`, repeated for about `seconds`. */
function rate (bytes: number, fn: () => void): number {
  fn() // warm up
  let rounds = 0
  const t0 = performance.now()
  let elapsed = 0
  while (elapsed < seconds * 1000 && rounds < 10_000) {
    fn()
    rounds++
    elapsed = performance.now() - t0
  }
  return Math.round((bytes * rounds) / (elapsed / 1000) / 1e6)
}

const sink: unknown[] = []
const encoded: EncodedBlock[] = blocks.map(b => encodeBlock(b))
const wireBytes = encoded.reduce((n, b) => n + b.payload.byteLength, 0)
const byEncoding = Object.fromEntries([BlockEncoding.Raw, BlockEncoding.Lz4, BlockEncoding.Zero].map(e => [BlockEncoding[e], encoded.filter(b => b.encoding === e).length]))

const scratch = new Uint8Array(BLOCK)
const result = {
  blockBytes: BLOCK,
  blocks: COUNT,
  mix: { random: 0.4, text: 0.4, zero: 0.2 },
  encodings: byEncoding,
  wireRatio: Number((wireBytes / totalBytes).toFixed(3)),
  baseline: {
    memcpyMBs: rate(totalBytes, () => { for (const b of blocks) scratch.set(b) }),
    blake3MBs: rate(totalBytes, () => { for (const b of blocks) sink[0] = blockChecksum(b) }),
    sha256MBs: rate(totalBytes, () => { for (const b of blocks) sink[0] = createHash('sha256').update(b).digest() })
  },
  encodeMBs: rate(totalBytes, () => { for (const b of blocks) sink[0] = encodeBlock(b) }),
  decodeMBs: rate(totalBytes, () => { for (const e of encoded) sink[0] = decodeBlock(e, { maxLength: BLOCK }) }),
  perKind: {
    randomEncodeMBs: rate(2 * BLOCK, () => { sink[0] = encodeBlock(blocks[0] as Uint8Array); sink[0] = encodeBlock(blocks[1] as Uint8Array) }),
    textEncodeMBs: rate(2 * BLOCK, () => { sink[0] = encodeBlock(blocks[2] as Uint8Array); sink[0] = encodeBlock(blocks[3] as Uint8Array) }),
    zeroEncodeMBs: rate(BLOCK, () => { sink[0] = encodeBlock(blocks[4] as Uint8Array) }),
    textDecodeMBs: rate(2 * BLOCK, () => { sink[0] = decodeBlock(encoded[2] as EncodedBlock, { maxLength: BLOCK }); sink[0] = decodeBlock(encoded[3] as EncodedBlock, { maxLength: BLOCK }) })
  },
  /** whole receive path on pre-encoded frames: FrameDecoder + GenerationValidator + decodeBlock */
  receivePathMBs: 0,
  /** whole send path: encodeGeneration (in-thread encodeBlock) + encodeFrame */
  sendPathMBs: 0
}

const files = [{ fileId: 1, path: '/vms/bench.vhdx', size: totalBytes, blockSize: BLOCK, kind: FileKind.Disk }]
async function sendOnce (): Promise<Uint8Array[]> {
  const out: Uint8Array[] = []
  for await (const f of encodeGeneration({
    vm: 'bench', generation: 2, baseGeneration: 1, consistent: true, createdAtMs: 0, files,
    readBlocks: () => blocks.map((data, i) => ({ offset: i * BLOCK, data }))
  })) out.push(encodeFrame(f))
  return out
}
const wire = await sendOnce()
result.receivePathMBs = rate(totalBytes, () => {
  const dec = new FrameDecoder()
  const v = new GenerationValidator()
  for (const chunk of wire) {
    for (const f of dec.push(chunk)) {
      v.accept(f)
      if (f.type === 'blocks') for (const e of f.entries) sink[0] = decodeBlock(e, { maxLength: BLOCK })
    }
  }
  dec.end()
  v.finish()
})
{
  let rounds = 0
  const t0 = performance.now()
  while (performance.now() - t0 < seconds * 1000 && rounds < 1000) { await sendOnce(); rounds++ }
  result.sendPathMBs = Math.round((totalBytes * rounds) / ((performance.now() - t0) / 1000) / 1e6)
}

console.log(JSON.stringify({ node: process.version, ...result }, null, 2))
