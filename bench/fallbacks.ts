/**
 * Throughput of the Windows fallbacks beside the native bindings they replace (README, "Windows"):
 * BLAKE3 native addon vs its WebAssembly build, lz4 native addon vs the package's pure-JS codec.
 * 64 KiB blocks, half compressible, single thread. Prints one JSON document.
 *   node --import tsx bench/fallbacks.ts
 */
import { createRequire } from 'node:module'
import { blake3, blake3Impl, blake3Wasm } from '../common/blake3.ts'
import { loadJsLz4, lz4 } from '../common/lz4.ts'

const BLOCK = 64 * 1024
const blocks: Buffer[] = []
for (let i = 0; i < 64; i++) {
  const b = Buffer.alloc(BLOCK)
  for (let j = 0; j < BLOCK; j += 4) b.writeUInt32LE((Math.random() * 2 ** 32) >>> 0, j)
  if (i % 2 === 0) b.fill('vmesh replica block ', 0, BLOCK * 3 / 4)
  blocks.push(b)
}

function rate (fn: (b: Buffer) => void, ms = 1500): number {
  for (const b of blocks.slice(0, 8)) fn(b)
  let n = 0
  const t0 = performance.now()
  while (performance.now() - t0 < ms) { fn(blocks[n % blocks.length] as Buffer); n++ }
  return Math.round(n * BLOCK / 1e6 / ((performance.now() - t0) / 1000))
}

const out: Record<string, unknown> = { node: process.version, platform: process.platform, blockBytes: BLOCK, blake3Impl, lz4Impl: lz4.impl }
const js = loadJsLz4()
let native: { encodeBlock: (s: Uint8Array, d: Uint8Array) => number, decodeBlock: (s: Uint8Array, d: Uint8Array) => number, encodeBound: (n: number) => number } | null = null
try { native = createRequire(import.meta.url)('lz4') } catch { native = null }
out.blake3MBs = { [blake3Impl]: rate(b => { blake3(b, 16) }), wasm: rate(b => { blake3Wasm(b, 16) }) }
const codecs: Record<string, typeof js> = { js }
if (native !== null) codecs.native = { impl: 'native', ...native }
const lz4Out: Record<string, { encodeMBs: number, decodeMBs: number }> = {}
for (const [name, c] of Object.entries(codecs)) {
  const dst = Buffer.alloc(c.encodeBound(BLOCK))
  const encoded = blocks.map(b => { const d = Buffer.alloc(c.encodeBound(BLOCK)); const n = c.encodeBlock(b, d); return d.subarray(0, n) })
  const raw = Buffer.alloc(BLOCK)
  let k = 0
  lz4Out[name] = {
    encodeMBs: rate(b => { c.encodeBlock(b, dst) }),
    decodeMBs: rate(() => { const e = encoded[k++ % encoded.length] as Buffer; if (e.length > 0) c.decodeBlock(e, raw) })
  }
}
out.lz4 = lz4Out
process.stdout.write(JSON.stringify(out) + '\n')
