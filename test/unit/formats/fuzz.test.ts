/**
 * Seeded fuzz of both parsers: valid small images, mutated (bit flips, fields overwritten with
 * extreme values, random bytes, truncation, extension), with checksums recomputed for most inputs
 * so mutations reach past the checksum checks. For every input: nothing but a VmeshError may be
 * thrown, the parser must never read out of range (it checks bounds itself), reads stay small and
 * the total read is bounded by the input size — so no unbounded allocation and no unbounded work.
 * Images are shared; mutations live in an overlay, so 100k inputs need no 100k image copies.
 * Reproduce one input with FUZZ_SEED=<seed printed on failure>.
 */
import assert from 'node:assert/strict'
import { VmeshError } from '../../../common/errors.ts'
import { SeededRandom } from '../../../common/random.ts'
import { parseDisk } from '../../../storage/formats/open.ts'
import type { ParsedDisk } from '../../../storage/formats/types.ts'
import { OverlayReader, formatBases as bases, mutateImage as mutate, type FormatBase as Base } from '../../helpers/fuzz/formats.ts'

const MiB = 1024 * 1024
const KiB = 1024
const INPUTS_PER_FORMAT = Number(process.env.FUZZ_INPUTS ?? 50_000)
const BASE_SEED = Number(process.env.FUZZ_SEED ?? 0x5eed)
/** Largest single read the parsers should ever issue (BAT pieces and metadata items are ≤ 1 MiB). */
const MAX_SINGLE_READ = MiB

interface Outcome { ok: number, codes: Map<string, number>, failures: string[], maxMs: number, maxBytesRatio: number }

function checkParsed (d: ParsedDisk, size: number): void {
  let prevEnd = -1
  let sum = 0
  for (const r of d.scanRanges) {
    assert.ok(r.offset > prevEnd && r.length > 0 && r.offset + r.length <= size, 'scan ranges sorted, disjoint, inside the file')
    prevEnd = r.offset + r.length
    sum += r.length
  }
  assert.equal(d.scanBytes, sum)
  assert.ok(Number.isSafeInteger(d.virtualSize) && d.virtualSize >= 0)
  assert.ok(d.allocatedBlocks <= d.totalBlocks || d.blockSize === 0)
}

async function run (list: Base[], inputs: number, seed0: number): Promise<Outcome> {
  const out: Outcome = { ok: 0, codes: new Map(), failures: [], maxMs: 0, maxBytesRatio: 0 }
  for (let i = 0; i < inputs; i++) {
    const seed = seed0 + i
    const rng = new SeededRandom(seed)
    const base = list[rng.int(list.length)] as Base
    const reader = mutate(base, rng)
    const t0 = performance.now()
    try {
      const d = await parseDisk(reader)
      checkParsed(d, reader.size)
      out.ok++
    } catch (err) {
      if (!(err instanceof VmeshError)) {
        out.failures.push(`seed ${seed} (${base.name}): non-VmeshError ${String(err)}`)
      } else if (err.code === 'ERR_FORMAT_READ_OUT_OF_RANGE') {
        out.failures.push(`seed ${seed} (${base.name}): parser read out of range: ${err.message}`)
      } else {
        out.codes.set(err.code, (out.codes.get(err.code) ?? 0) + 1)
      }
    }
    out.maxMs = Math.max(out.maxMs, performance.now() - t0)
    if (reader.maxRead > MAX_SINGLE_READ) out.failures.push(`seed ${seed} (${base.name}): single read of ${reader.maxRead} bytes`)
    // Everything read is bounded by the input: a few passes over the file plus the fixed tables.
    const budget = 2 * reader.size + 512 * KiB
    if (reader.bytesRead > budget) out.failures.push(`seed ${seed} (${base.name}): read ${reader.bytesRead} bytes of a ${reader.size}-byte input`)
    out.maxBytesRatio = Math.max(out.maxBytesRatio, reader.bytesRead / Math.max(1, reader.size))
    if (out.failures.length > 20) break
  }
  return out
}

function summary (name: string, o: Outcome, inputs: number, ms: number): string {
  const codes = [...o.codes.entries()].sort((a, b) => b[1] - a[1]).map(([c, n]) => `${c.replace(/^ERR_/, '')}=${n}`).join(' ')
  return `      ${name}: ${inputs} inputs in ${(ms / 1000).toFixed(1)} s, ${o.ok} parsed, ${o.codes.size} error codes, ` +
    `slowest ${o.maxMs.toFixed(1)} ms, max read/size ${o.maxBytesRatio.toFixed(2)}\n        ${codes}`
}

describe('format fuzz (seeded)', function () {
  this.timeout(300_000)
  const { vhd, vhdx } = bases()

  it('base images parse cleanly', async () => {
    for (const b of [...vhd, ...vhdx]) {
      const d = await parseDisk(new OverlayReader(b.bytes, b.bytes.length))
      assert.deepEqual(d.warnings, [], b.name)
    }
  })

  for (const [name, list, seed, minCodes] of [['VHD', vhd, BASE_SEED, 10], ['VHDX', vhdx, BASE_SEED + 10_000_000, 20]] as const) {
    it(`${name}: ${INPUTS_PER_FORMAT} mutated inputs raise only typed errors, read in bounds, bounded work`, async () => {
      const t0 = performance.now()
      const o = await run(list, INPUTS_PER_FORMAT, seed)
      console.log(summary(name, o, INPUTS_PER_FORMAT, performance.now() - t0))
      assert.deepEqual(o.failures, [])
      // The fuzz must reach deep: many distinct failure codes, and some inputs that still parse.
      if (INPUTS_PER_FORMAT >= 10_000) {
        assert.ok(o.codes.size >= minCodes, `only ${o.codes.size} distinct error codes`)
        assert.ok(o.ok >= INPUTS_PER_FORMAT / 50, `only ${o.ok} inputs parsed`)
      }
      assert.ok(o.maxMs < 5000, `slowest input took ${o.maxMs} ms`)
    })
  }
})
