/** Content and frame builders shared by the delta codec tests (seeded, so failures replay). */
import { SeededRandom } from '../../../common/random.ts'
import type { Random } from '../../../common/random.ts'
import { encodeFrame } from '../../../protocol/delta/codec.ts'
import { encodeGeneration } from '../../../protocol/delta/encoder.ts'
import type { GenerationFileSource } from '../../../protocol/delta/encoder.ts'
import { FileKind } from '../../../protocol/delta/messages.ts'
import type { Frame } from '../../../protocol/delta/messages.ts'
import { DeltaProtocolError } from '../../../protocol/delta/errors.ts'

export function randomBytes (rng: Random, n: number): Uint8Array {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = rng.int(256)
  return out
}

/** Text-like content lz4 shrinks well. */
export function compressible (rng: Random, n: number): Uint8Array {
  const words = ['disk ', 'block ', 'vmesh ', 'replica ', 'generation ', '0000 ', 'ffff ', '\n']
  const out = new Uint8Array(n)
  let i = 0
  while (i < n) {
    const w = words[rng.int(words.length)] as string
    for (let j = 0; j < w.length && i < n; j++) out[i++] = w.charCodeAt(j)
  }
  return out
}

export async function collect<T> (it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const x of it) out.push(x)
  return out
}

/** Asserts `fn` throws an error of class `cls` (by name) and returns it. */
export function throwsNamed (fn: () => unknown, name: string): Error {
  try {
    fn()
  } catch (err) {
    if (!(err instanceof Error) || err.name !== name) {
      throw new Error(`expected ${name}, got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`)
    }
    return err
  }
  throw new Error(`expected ${name}, nothing thrown`)
}

export async function rejectsNamed (p: Promise<unknown>, name: string): Promise<Error> {
  try {
    await p
  } catch (err) {
    if (!(err instanceof Error) || err.name !== name) {
      throw new Error(`expected ${name}, got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`)
    }
    return err
  }
  throw new Error(`expected ${name}, nothing thrown`)
}

export function isDeltaError (err: unknown): err is DeltaProtocolError {
  return err instanceof DeltaProtocolError && typeof err.code === 'string' && err.code.startsWith('ERR_DELTA_')
}

export interface SampleOptions {
  seed: number
  files?: number
  blocksPerFile?: number
  blockSize?: number
  maxFramePayloadBytes?: number
}

/** A small but varied generation: zero, random and compressible blocks, a resize, several frames. */
export async function sampleGeneration (opts: SampleOptions): Promise<Frame[]> {
  const rng = new SeededRandom(opts.seed)
  const blockSize = opts.blockSize ?? 512
  const fileCount = opts.files ?? 2
  const perFile = opts.blocksPerFile ?? 6
  const files: GenerationFileSource[] = []
  const content = new Map<number, Array<{ offset: number, data: Uint8Array }>>()
  for (let f = 0; f < fileCount; f++) {
    const size = blockSize * (perFile + 2) - (f % 2 === 0 ? 0 : 100)
    files.push({
      fileId: 10 + f,
      path: f === 0 ? '/vms/web01/web01.vhdx' : `/vms/web01/fïle-${f}.vmcx`,
      size,
      blockSize,
      kind: f === 0 ? FileKind.Disk : FileKind.WholeFile,
      ...(f === 1 ? { baseSize: size + 1 } : {})
    })
    const blocks: Array<{ offset: number, data: Uint8Array }> = []
    for (let b = 0; b < perFile; b++) {
      const kind = (b + f) % 3
      const len = b === perFile - 1 ? blockSize - 1 - rng.int(8) : blockSize
      const data = kind === 0 ? new Uint8Array(len) : kind === 1 ? randomBytes(rng, len) : compressible(rng, len)
      blocks.push({ offset: b * blockSize, data })
    }
    content.set(10 + f, blocks)
  }
  return await collect(encodeGeneration({
    vm: 'web01',
    generation: 7,
    baseGeneration: 6,
    consistent: true,
    createdAtMs: 1_700_000_000_000,
    files,
    readBlocks: (fileId) => content.get(fileId) ?? [],
    maxFramePayloadBytes: opts.maxFramePayloadBytes ?? blockSize * 2
  }))
}

export function concat (parts: Uint8Array[]): Uint8Array {
  let n = 0
  for (const p of parts) n += p.byteLength
  const out = new Uint8Array(n)
  let at = 0
  for (const p of parts) { out.set(p, at); at += p.byteLength }
  return out
}

export function encodeAll (frames: Frame[]): Uint8Array[] {
  return frames.map(f => encodeFrame(f))
}

