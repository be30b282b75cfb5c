/**
 * The source's persistent replication books for one VM, in a LevelDB sublevel: the VM
 * generation counter G, per-generation capture metadata (for lag and recovery-point times),
 * and per target the acknowledged and in-flight generation. Small JSON values; kept mirrored
 * in memory so status reads are synchronous.
 */
import type { BinaryDb } from '../../storage/manifest/db.ts'
import { concatBytes, decodeUtf8, encodeUtf8, readU32be, u32be } from '../../storage/manifest/db.ts'
import type { TargetBook } from './logic.ts'

export interface GenerationMeta {
  createdAtMs: number
  consistent: boolean
  /** Wall time the capture behind this generation began (every write before it is in it); absent from older books. */
  captureStartMs?: number
}

const K_G = encodeUtf8('G')
const P_META = 0x6d // 'm'
const P_TARGET = 0x74 // 't'

export class Books {
  generation = 0
  private readonly metas = new Map<number, GenerationMeta>()
  private readonly targets = new Map<string, TargetBook>()

  constructor (private readonly db: BinaryDb) {}

  async load (): Promise<void> {
    await this.db.open()
    const g = await this.db.get(K_G)
    this.generation = g === undefined ? 0 : (JSON.parse(decodeUtf8(g)) as { g: number }).g
    for await (const [k, v] of this.db.iterator({ gte: new Uint8Array([P_META]), lt: new Uint8Array([P_META + 1]) })) {
      this.metas.set(readU32be(k, 1), JSON.parse(decodeUtf8(v)) as GenerationMeta)
    }
    for await (const [k, v] of this.db.iterator({ gte: new Uint8Array([P_TARGET]), lt: new Uint8Array([P_TARGET + 1]) })) {
      this.targets.set(decodeUtf8(k.subarray(1)), JSON.parse(decodeUtf8(v)) as TargetBook)
    }
  }

  meta (g: number): GenerationMeta | undefined { return this.metas.get(g) }

  /** Starts generation G+1 captured at `createdAtMs`, its capture begun at `captureStartMs`. */
  async bump (createdAtMs: number, consistent: boolean, to?: number, captureStartMs?: number): Promise<number> {
    const g = Math.max(this.generation + 1, to ?? 0)
    const meta: GenerationMeta = { createdAtMs: Math.round(createdAtMs), consistent, ...(captureStartMs !== undefined ? { captureStartMs: Math.round(captureStartMs) } : {}) }
    await this.db.batch([
      { type: 'put', key: concatBytes(new Uint8Array([P_META]), u32be(g)), value: encodeUtf8(JSON.stringify(meta)) },
      { type: 'put', key: K_G, value: encodeUtf8(JSON.stringify({ g })) }
    ])
    this.generation = g
    this.metas.set(g, meta)
    return g
  }

  target (name: string): TargetBook {
    return this.targets.get(name) ?? { acked: 0, inFlight: null }
  }

  hasTarget (name: string): boolean { return this.targets.has(name) }

  async setTarget (name: string, book: TargetBook): Promise<void> {
    await this.db.put(concatBytes(new Uint8Array([P_TARGET]), encodeUtf8(name)), encodeUtf8(JSON.stringify(book)))
    this.targets.set(name, { ...book })
    await this.prune()
  }

  async removeTarget (name: string): Promise<void> {
    await this.db.del(concatBytes(new Uint8Array([P_TARGET]), encodeUtf8(name)))
    this.targets.delete(name)
  }

  /** Drops metadata no target needs any more (below the lowest acked generation, whose capture time is the RPO). */
  private async prune (): Promise<void> {
    let low = this.generation
    for (const b of this.targets.values()) low = Math.min(low, b.acked)
    const drop = [...this.metas.keys()].filter(g => g < low && g < this.generation)
    if (drop.length === 0) return
    await this.db.batch(drop.map(g => ({ type: 'del' as const, key: concatBytes(new Uint8Array([P_META]), u32be(g)) })))
    for (const g of drop) this.metas.delete(g)
  }
}
