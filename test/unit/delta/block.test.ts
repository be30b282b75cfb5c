import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'
import { pathToFileURL } from 'node:url'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { SeededRandom } from '../../../common/random.ts'
import {
  BlockEncoding, CHECKSUM_LENGTH, blockChecksum, decodeBlock, encodeBlock, isAllZero, zeroChecksum
} from '../../../protocol/delta/block.ts'
import type { EncodedBlock } from '../../../protocol/delta/block.ts'
import { MAX_BLOCK_LENGTH } from '../../../protocol/delta/limits.ts'
import { compressible, randomBytes, throwsNamed } from './fixtures.ts'

// whichever codec the codec uses here (native addon, or the JS fallback on Windows)
import { lz4 } from '../../../common/lz4.ts'
const KiB = 1024

/** URL of tsx's ESM register API, read from its exports map (require.resolve would give the CJS one). */
function tsxEsmApiUrl (): string {
  const pkgPath = createRequire(import.meta.url).resolve('tsx/package.json')
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8')) as { exports: Record<string, { import: { default: string } }> }
  const rel = pkg.exports['./esm/api']?.import.default ?? './dist/esm/api/index.mjs'
  return pathToFileURL(join(dirname(pkgPath), rel)).href
}
const MiB = 1024 * KiB

function roundTrip (raw: Uint8Array): EncodedBlock {
  const block = encodeBlock(raw)
  assert.equal(block.length, raw.byteLength)
  assert.equal(block.checksum.byteLength, CHECKSUM_LENGTH)
  const back = decodeBlock(block, { maxLength: raw.byteLength })
  assert.ok(Buffer.from(back).equals(Buffer.from(raw)), 'decoded content differs')
  return block
}

describe('delta block codec', () => {
  const rng = new SeededRandom(42)

  for (const size of [4 * KiB, 64 * KiB, 4 * MiB]) {
    describe(`${size / KiB} KiB blocks`, () => {
      it('round-trips random content as raw', () => {
        const block = roundTrip(randomBytes(rng, size))
        assert.equal(block.encoding, BlockEncoding.Raw)
        assert.equal(block.payload.byteLength, size)
      })

      it('round-trips compressible content as lz4', () => {
        const block = roundTrip(compressible(rng, size))
        assert.equal(block.encoding, BlockEncoding.Lz4)
        assert.ok(block.payload.byteLength < size / 2)
      })

      it('sends zeros as a flag with no payload', () => {
        const block = roundTrip(new Uint8Array(size))
        assert.equal(block.encoding, BlockEncoding.Zero)
        assert.equal(block.payload.byteLength, 0)
        assert.deepEqual(block.checksum, blockChecksum(new Uint8Array(size)))
      })

      it('does not take a block with one non-zero byte for zeros', () => {
        for (const at of [0, 1, size >>> 1, size - 1]) {
          const raw = new Uint8Array(size)
          raw[at] = 1
          assert.equal(isAllZero(raw), false)
          assert.notEqual(roundTrip(raw).encoding, BlockEncoding.Zero)
        }
      })
    })
  }

  it('detects zeros in unaligned views of any length', () => {
    const backing = new Uint8Array(200 * KiB + 3)
    for (const [off, len] of [[1, 7], [3, 64 * KiB], [5, 64 * KiB + 1], [0, 200 * KiB + 3], [7, 130 * KiB]] as const) {
      const view = backing.subarray(off, off + len)
      assert.equal(isAllZero(view), true)
      backing[off + len - 2] = 9
      assert.equal(isAllZero(view), false)
      backing[off + len - 2] = 0
    }
    assert.equal(isAllZero(new Uint8Array(0)), true)
  })

  it('uses lz4 only when it saves at least 1/32 of the length', () => {
    // a random prefix followed by zeros: the compressed size sweeps across the 31/32 budget
    const size = 4 * KiB
    const noise = randomBytes(rng, size)
    let sawLz4NearBudget = false
    let sawRawNearBudget = false
    for (let prefix = size - 400; prefix <= size; prefix += 2) {
      const raw = new Uint8Array(size)
      raw.set(noise.subarray(0, prefix))
      const dst = new Uint8Array(lz4.encodeBound(size))
      const n = lz4.encodeBlock(raw, dst)
      const saves = n > 0 && n * 32 <= size * 31
      const block = roundTrip(raw)
      assert.equal(block.encoding, saves ? BlockEncoding.Lz4 : BlockEncoding.Raw, `prefix ${prefix}: lz4 ${n} bytes`)
      if (block.encoding === BlockEncoding.Lz4) assert.ok(block.payload.byteLength * 32 <= size * 31)
      const slack = size * 31 / 32 - n
      if (saves && slack < 16) sawLz4NearBudget = true
      if (!saves && n > 0 && -slack < 16) sawRawNearBudget = true
    }
    assert.ok(sawLz4NearBudget && sawRawNearBudget, 'the sweep did not straddle the budget')
  })

  it('refuses empty and oversized blocks', () => {
    throwsNamed(() => encodeBlock(new Uint8Array(0)), 'DeltaBlockTooLargeError')
    throwsNamed(() => encodeBlock(new Uint8Array(MAX_BLOCK_LENGTH + 1)), 'DeltaBlockTooLargeError')
    const block = encodeBlock(randomBytes(rng, 8 * KiB))
    throwsNamed(() => decodeBlock(block, { maxLength: 4 * KiB }), 'DeltaBlockTooLargeError')
    throwsNamed(() => decodeBlock({ ...block, length: 4 * 1024 * MiB }, { maxLength: Number.MAX_SAFE_INTEGER }), 'DeltaBlockTooLargeError')
  })

  describe('tampering', () => {
    const raw = randomBytes(rng, 16 * KiB)
    const text = compressible(rng, 16 * KiB)

    it('detects a flipped byte in a raw payload', () => {
      const block = encodeBlock(raw)
      const payload = new Uint8Array(block.payload)
      payload[1234] = (payload[1234] as number) ^ 0x40
      const err = throwsNamed(() => decodeBlock({ ...block, payload }, { maxLength: raw.length }), 'DeltaChecksumMismatchError')
      assert.equal((err as { code?: string }).code, 'ERR_DELTA_CHECKSUM_MISMATCH')
    })

    it('never returns wrong content for a changed lz4 payload', () => {
      // a flipped match offset can point at an identical earlier word and decode to the same
      // bytes; that is harmless. What must never happen is different bytes passing the check.
      const block = encodeBlock(text)
      assert.equal(block.encoding, BlockEncoding.Lz4)
      let detected = 0
      for (let i = 0; i < block.payload.byteLength; i++) {
        const payload = new Uint8Array(block.payload)
        payload[i] = (payload[i] as number) ^ 0x01
        try {
          const out = decodeBlock({ ...block, payload }, { maxLength: text.length })
          assert.ok(Buffer.from(out).equals(Buffer.from(text)), `flip at ${i} produced different content`)
        } catch (err) {
          assert.ok(err instanceof Error && ['DeltaChecksumMismatchError', 'DeltaDecompressError'].includes(err.name), String(err))
          detected++
        }
      }
      assert.ok(detected > block.payload.byteLength * 0.9, `only ${detected} of ${block.payload.byteLength} flips detected`)
    })

    it('detects a changed checksum, including on zero blocks', () => {
      for (const content of [raw, text, new Uint8Array(4096)]) {
        const block = encodeBlock(content)
        const checksum = new Uint8Array(block.checksum)
        checksum[15] = (checksum[15] as number) ^ 1
        throwsNamed(() => decodeBlock({ ...block, checksum }, { maxLength: content.length }), 'DeltaChecksumMismatchError')
      }
    })

    it('refuses garbage lz4 and payloads that do not fit their encoding', () => {
      const block = encodeBlock(text)
      throwsNamed(() => decodeBlock({ ...block, payload: new Uint8Array([0xff, 0xff, 0xff, 0xff]) }, { maxLength: text.length }), 'DeltaDecompressError')
      throwsNamed(() => decodeBlock({ ...block, length: block.length - 1 }, { maxLength: text.length }), 'DeltaDecompressError')
      throwsNamed(() => decodeBlock({ ...block, payload: new Uint8Array(0) }, { maxLength: text.length }), 'DeltaBadEncodingError')
      const rawBlock = encodeBlock(raw)
      throwsNamed(() => decodeBlock({ ...rawBlock, payload: rawBlock.payload.subarray(1) }, { maxLength: raw.length }), 'DeltaBadEncodingError')
      const zero = encodeBlock(new Uint8Array(100))
      throwsNamed(() => decodeBlock({ ...zero, payload: new Uint8Array(1) }, { maxLength: 100 }), 'DeltaBadEncodingError')
      throwsNamed(() => decodeBlock({ ...zero, encoding: 7 as BlockEncoding }, { maxLength: 100 }), 'DeltaBadEncodingError')
      throwsNamed(() => decodeBlock({ ...zero, checksum: new Uint8Array(8) }, { maxLength: 100 }), 'DeltaBadEncodingError')
    })
  })

  it('decodes lz4 into a caller buffer and zeros into a shared view when asked', () => {
    const raw = compressible(rng, 64 * KiB)
    const block = encodeBlock(raw)
    assert.equal(block.encoding, BlockEncoding.Lz4)
    const into = new Uint8Array(100 * KiB)
    const out = decodeBlock(block, { maxLength: 64 * KiB, into })
    assert.equal(out.buffer, into.buffer)
    assert.equal(out.byteOffset, into.byteOffset)
    assert.ok(Buffer.from(out).equals(Buffer.from(raw)))
    // a buffer too small is not used (nor written past)
    const small = new Uint8Array(10)
    const out2 = decodeBlock(block, { maxLength: 64 * KiB, into: small })
    assert.notEqual(out2.buffer, small.buffer)
    assert.ok(Buffer.from(out2).equals(Buffer.from(raw)))
    assert.deepEqual(small, new Uint8Array(10))
    // a tampered lz4 payload still fails when decoded into a caller buffer
    const bad = { ...block, payload: new Uint8Array(block.payload).fill(0xff, 0, 8) }
    assert.throws(() => decodeBlock(bad, { maxLength: 64 * KiB, into }), (err: Error) => ['DeltaDecompressError', 'DeltaChecksumMismatchError'].includes(err.name))
    const z1 = decodeBlock(encodeBlock(new Uint8Array(4 * KiB)), { maxLength: 4 * KiB, sharedZero: true })
    const z2 = decodeBlock(encodeBlock(new Uint8Array(64 * KiB)), { maxLength: 64 * KiB, sharedZero: true })
    assert.equal(z1.byteLength, 4 * KiB)
    assert.equal(z2.byteLength, 64 * KiB)
    assert.ok(isAllZero(z1) && isAllZero(z2))
  })

  it('computes zero checksums beyond the shared zero buffer and caches them safely', () => {
    const big = 4 * MiB
    assert.deepEqual(zeroChecksum(big), blockChecksum(new Uint8Array(big)))
    const a = zeroChecksum(512)
    a[0] = (a[0] as number) ^ 0xff // a caller scribbling on its copy must not poison the cache
    assert.deepEqual(zeroChecksum(512), blockChecksum(new Uint8Array(512)))
  })

  it('encodes inside a worker thread and transfers the results back', async function () {
    this.timeout(30_000)
    const blocks = [randomBytes(rng, 64 * KiB), compressible(rng, 64 * KiB), new Uint8Array(64 * KiB)]
    // Node 20 workers do not inherit tsx's --import hooks, so the worker registers tsx itself
    const entry = new URL('./worker-encode.ts', import.meta.url).href
    const tsxApi = tsxEsmApiUrl()
    const bootstrap = `import(${JSON.stringify(tsxApi)}).then(m => { m.register(); return import(${JSON.stringify(entry)}) })`
    const worker = new Worker(bootstrap, { eval: true, workerData: { blocks } })
    try {
      const result = await new Promise<EncodedBlock[]>((resolve, reject) => {
        worker.once('message', resolve)
        worker.once('error', reject)
      })
      assert.deepEqual(result.map(b => b.encoding), [BlockEncoding.Raw, BlockEncoding.Lz4, BlockEncoding.Zero])
      result.forEach((b, i) => {
        assert.ok(Buffer.from(decodeBlock(b, { maxLength: 64 * KiB })).equals(Buffer.from(blocks[i] as Uint8Array)))
      })
    } finally {
      await worker.terminate()
    }
  })
})
