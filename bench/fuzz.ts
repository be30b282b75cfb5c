/**
 * `npm run bench -- fuzz [COUNT] [--seed N] [--only TARGET] [--index I]`: COUNT (default
 * 1 000 000) seeded, mutated inputs through each codec (membership, election, replication
 * control + stream, delta receive path) and each disk-format parser (VHD, VHDX), with the
 * mutators and corpora of the unit fuzz tests (test/helpers/fuzz/). Input i of a target is
 * generated from its own RNG seeded with (seed, target, i), so any input is reproduced alone
 * with `--only TARGET --index I`. Per target: inputs, typed errors, accepted, unexpected
 * exceptions (must be 0; the first ones are listed with their seed and index), slowest input,
 * inputs/s. The unit tests keep their own (CI) counts.
 */
import { VmeshError } from '../common/errors.ts'
import { SeededRandom, type Random } from '../common/random.ts'
import { decodeSwimMessage, encodeSwimMessage } from '../protocol/membership/codec.ts'
import { MembershipDecodeError } from '../protocol/membership/errors.ts'
import { decodeElectionMessage, encodeElectionMessage } from '../protocol/election/codec.ts'
import { ElectionDecodeError } from '../protocol/election/errors.ts'
import { decodeControl, encodeControl } from '../protocol/replication/codec.ts'
import { isPeerProtocolError } from '../protocol/replication/errors.ts'
import { ReplicationDecoder, encodeReplicationItem, type ReplicationItem } from '../protocol/replication/stream.ts'
import { parseDisk } from '../storage/formats/open.ts'
import { MEMBERSHIP_SAMPLES, membershipGarbage, mutateMembership } from '../test/helpers/fuzz/membership.ts'
import { ELECTION_SAMPLES, electionInput } from '../test/helpers/fuzz/election.ts'
import { mutateReplication, replicationGarbage } from '../test/helpers/fuzz/replication.ts'
import { deltaCorpus, mutateDelta, receiveDelta } from '../test/helpers/fuzz/delta.ts'
import { formatBases, mutateImage, type FormatBase } from '../test/helpers/fuzz/formats.ts'
import { concat, randomChunks, sampleGeneration, sampleMessages } from '../test/unit/replication-protocol/fixtures.ts'

/** What one input did: accepted, or refused with a typed error (its code). Anything thrown is unexpected. */
type Outcome = { ok: true } | { ok: false, code: string }
interface Target { name: string, one: (rng: Random) => Outcome | Promise<Outcome> }

/** A typed refusal, or rethrow (an unexpected exception). */
function typed (err: unknown, isTyped: (e: unknown) => boolean): Outcome {
  if (isTyped(err)) return { ok: false, code: (err as VmeshError).code }
  throw err
}

function sameBytes (a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))
}

/** Accepted inputs must be canonical: what decodes re-encodes to the same bytes. */
class NotCanonicalError extends Error {
  constructor (what: string) { super(`${what}: accepted input does not re-encode to the same bytes`); this.name = 'NotCanonicalError' }
}

async function targets (): Promise<Target[]> {
  const swim = MEMBERSHIP_SAMPLES.map(encodeSwimMessage)
  const election = ELECTION_SAMPLES.map(m => encodeElectionMessage(m))
  const corpusRng = new SeededRandom(20240108)
  const replication = [...sampleMessages(), ...sampleGeneration(corpusRng)].map(i => encodeReplicationItem(i))
  const delta = await deltaCorpus()
  const { vhd, vhdx } = formatBases()
  const disk = (name: string, list: FormatBase[]): Target => ({
    name,
    one: async (rng) => {
      const reader = mutateImage(list[rng.int(list.length)] as FormatBase, rng)
      try {
        await parseDisk(reader)
        return { ok: true }
      } catch (err) {
        // a read past the end is the parser's bug (it must check bounds first), not a typed refusal
        return typed(err, e => e instanceof VmeshError && e.code !== 'ERR_FORMAT_READ_OUT_OF_RANGE')
      }
    }
  })
  return [
    {
      name: 'membership',
      one: (rng) => {
        const input = rng.int(4) === 0 ? membershipGarbage(rng) : mutateMembership(swim[rng.int(swim.length)] as Uint8Array, rng)
        try {
          const msg = decodeSwimMessage(input)
          if (JSON.stringify(decodeSwimMessage(encodeSwimMessage(msg))) !== JSON.stringify(msg)) throw new NotCanonicalError('membership')
          return { ok: true }
        } catch (err) { return typed(err, e => e instanceof MembershipDecodeError) }
      }
    },
    {
      name: 'election',
      one: (rng) => {
        const input = electionInput(rng, election)
        try {
          if (!sameBytes(encodeElectionMessage(decodeElectionMessage(input)), input)) throw new NotCanonicalError('election')
          return { ok: true }
        } catch (err) { return typed(err, e => e instanceof ElectionDecodeError) }
      }
    },
    {
      name: 'replication-control',
      one: (rng) => {
        const input = rng.int(5) === 0 ? replicationGarbage(rng) : mutateReplication(rng, replication[rng.int(replication.length)] as Uint8Array, replication)
        try {
          if (!sameBytes(encodeControl(decodeControl(input)), input)) throw new NotCanonicalError('replication control')
          return { ok: true }
        } catch (err) { return typed(err, isPeerProtocolError) }
      }
    },
    {
      name: 'replication-stream',
      one: (rng) => {
        const input = rng.int(5) === 0 ? replicationGarbage(rng) : mutateReplication(rng, replication[rng.int(replication.length)] as Uint8Array, replication)
        const dec = new ReplicationDecoder()
        const out: ReplicationItem[] = []
        try {
          for (const c of randomChunks(rng, input, 1 + rng.int(64))) out.push(...dec.push(c))
          dec.end()
          if (!sameBytes(concat(out.map(i => encodeReplicationItem(i))), input)) throw new NotCanonicalError('replication stream')
          return { ok: true }
        } catch (err) {
          return typed(err, isPeerProtocolError)
        } finally {
          if (dec.peakAllocation > Math.max(65536, 2 * input.byteLength)) throw new Error(`allocated ${dec.peakAllocation} bytes for a ${input.byteLength}-byte input`)
        }
      }
    },
    {
      name: 'delta',
      one: (rng) => {
        const input = mutateDelta(rng, delta)
        const peak = { alloc: 0 }
        const code = receiveDelta(rng, input, peak)
        if (peak.alloc > Math.max(64 * 1024, 2 * input.byteLength)) throw new Error(`allocated ${peak.alloc} bytes for a ${input.byteLength}-byte input`)
        return code === 'ok' ? { ok: true } : { ok: false, code }
      }
    },
    disk('vhd', vhd),
    disk('vhdx', vhdx)
  ]
}

/** The RNG of input `index` of `target`: independent of every other input, so one reproduces alone. */
function inputRng (seed: number, target: string, index: number): SeededRandom {
  let h = seed >>> 0
  for (const ch of target) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0
  return new SeededRandom((h ^ Math.imul(index, 0x9e3779b1)) >>> 0)
}

interface Report {
  target: string
  inputs: number
  typedErrors: number
  accepted: number
  unexpected: number
  /** the first unexpected exceptions, with what reproduces each */
  firstUnexpected: Array<{ index: number, reproduce: string, error: string }>
  distinctCodes: number
  topCodes: Record<string, number>
  maxMsPerInput: number
  inputsPerSec: number
}

export async function run (args: string[]): Promise<object> {
  const opt = (name: string): string | undefined => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined }
  const positional = args.filter((a, i) => !a.startsWith('--') && !(i > 0 && (args[i - 1] ?? '').startsWith('--')))
  const count = Number(positional[0] ?? 1_000_000)
  const seed = Number(opt('--seed') ?? 0x5eed)
  const only = opt('--only')
  const index = opt('--index')
  if (!Number.isSafeInteger(count) || count < 1) throw new Error(`bad count ${positional[0]}`)
  const all = await targets()
  const chosen = only === undefined ? all : all.filter(t => t.name === only)
  if (chosen.length === 0) throw new Error(`no target ${only}; targets: ${all.map(t => t.name).join(', ')}`)
  const reports: Report[] = []
  for (const t of chosen) {
    const from = index === undefined ? 0 : Number(index)
    const to = index === undefined ? count : from + 1
    const codes = new Map<string, number>()
    const r: Report = { target: t.name, inputs: 0, typedErrors: 0, accepted: 0, unexpected: 0, firstUnexpected: [], distinctCodes: 0, topCodes: {}, maxMsPerInput: 0, inputsPerSec: 0 }
    const t0 = performance.now()
    for (let i = from; i < to; i++) {
      const s = performance.now()
      try {
        const o = await t.one(inputRng(seed, t.name, i))
        if (o.ok) r.accepted++
        else { r.typedErrors++; codes.set(o.code, (codes.get(o.code) ?? 0) + 1) }
      } catch (err) {
        r.unexpected++
        if (r.firstUnexpected.length < 10) {
          r.firstUnexpected.push({ index: i, reproduce: `npm run bench -- fuzz 1 --seed ${seed} --only ${t.name} --index ${i}`, error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) })
          if (index !== undefined) process.stderr.write(`${(err as Error).stack ?? String(err)}\n`)
        }
      }
      r.maxMsPerInput = Math.max(r.maxMsPerInput, performance.now() - s)
      r.inputs++
    }
    const secs = (performance.now() - t0) / 1000
    r.inputsPerSec = Math.round(r.inputs / secs)
    r.maxMsPerInput = Math.round(r.maxMsPerInput * 100) / 100
    r.distinctCodes = codes.size
    r.topCodes = Object.fromEntries([...codes].sort((a, b) => b[1] - a[1]).slice(0, 12))
    reports.push(r)
    process.stderr.write(`fuzz ${t.name}: ${r.inputs} inputs, ${r.typedErrors} typed errors, ${r.accepted} accepted, ${r.unexpected} unexpected, slowest ${r.maxMsPerInput} ms, ${r.inputsPerSec}/s\n`)
  }
  const unexpected = reports.reduce((n, r) => n + r.unexpected, 0)
  if (unexpected > 0) process.exitCode = 1
  return { count, seed, unexpected, targets: reports }
}
