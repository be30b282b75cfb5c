/**
 * One scan pass's side of the manifest: block hashes come in, in block order, and are merged
 * with the stored groups read through one forward cursor. Per block it decides what to write
 * (new hash, or a tombstone for a block gone to zero) and whether to report it; a changed group
 * is written back once, when the pass moves past it. Gaps (ranges not read: format-unallocated,
 * i.e. zeros) visit only the groups that exist, so a 1 TiB sparse gap costs nothing.
 */
import { BlockGroup, GROUP_BLOCKS, HASH_BYTES, SLOT_ABSENT, SLOT_HASH } from '../manifest/group.ts'
import type { GroupCursor, ManifestWriter } from '../manifest/manifest.ts'
import type { BlockRuns } from './range.ts'

export interface MergeInit {
  cursor: GroupCursor
  writer: ManifestWriter
  runs: BlockRuns
  /** Generation stamped on what this scan writes. */
  G: number
  /** Last committed generation. */
  committed: number
  /** Report blocks changed after this generation; null: report every non-zero block. */
  sinceGen: number | null
}

export class ManifestMerge {
  /** Something was written (or deleted). */
  wrote = false
  /** An entry carries a generation newer than the committed one (an interrupted scan's). */
  sawNewer = false
  /** The group being merged. */
  private cur: BlockGroup | null = null
  /** A stored group read from the cursor ahead of its turn. */
  private ahead: BlockGroup | null = null

  constructor (private readonly m: MergeInit) {}

  /**
   * Blocks [first, first+count): zeroMask[i] = 1 marks block first+i all zeros, otherwise its
   * hash is hashes[16i, 16i+16).
   */
  async hashed (first: number, count: number, hashes: Uint8Array, zeroMask: Uint8Array): Promise<void> {
    const { runs, G, committed, sinceGen } = this.m
    let i = 0
    for (let guard = 0; i < count && guard <= count; guard++) {
      const idx = first + i
      const g = Math.floor(idx / GROUP_BLOCKS)
      const grp = this.cur?.index === g ? this.cur : await this.moveTo(g)
      const base = g * GROUP_BLOCKS
      const stop = Math.min(count, base + GROUP_BLOCKS - first)
      for (; i < stop; i++) {
        const slot = first + i - base
        const state = grp.state(slot)
        const oldGen = state === SLOT_ABSENT ? 0 : grp.generation(slot)
        if (oldGen > committed) this.sawNewer = true
        const zero = zeroMask[i] === 1
        const changed = zero ? state === SLOT_HASH : !grp.hashEquals(slot, hashes, i * HASH_BYTES)
        if (changed) {
          grp.set(slot, zero ? null : hashes, i * HASH_BYTES, G)
          this.wrote = true
        }
        if (sinceGen === null ? !zero : changed || oldGen > sinceGen) runs.add(first + i)
      }
    }
  }

  /** Blocks [first, end) are zeros without being read. */
  async zeros (first: number, end: number): Promise<void> {
    const { runs, G, committed, sinceGen } = this.m
    let idx = first
    for (let guard = 0; idx < end && guard <= end - first; guard++) {
      const g = Math.floor(idx / GROUP_BLOCKS)
      if (this.cur?.index !== g) {
        await this.flushCurrent()
        const next = await this.nextStoredFrom(g)
        if (next === null) return
        if (next.firstBlock >= end) { this.ahead = next; return }
        this.cur = next
        idx = Math.max(idx, next.firstBlock)
      }
      const grp = this.cur as BlockGroup
      const base = grp.firstBlock
      const stop = Math.min(end, base + GROUP_BLOCKS)
      for (; idx < stop; idx++) {
        const slot = idx - base
        const state = grp.state(slot)
        if (state === SLOT_ABSENT) continue
        const oldGen = grp.generation(slot)
        if (oldGen > committed) this.sawNewer = true
        const changed = state === SLOT_HASH
        if (changed) {
          grp.set(slot, null, 0, G)
          this.wrote = true
        }
        if (sinceGen !== null && (changed || oldGen > sinceGen)) runs.add(idx)
      }
    }
  }

  /** Ends the pass for a file of `nBlocks` blocks: entries past the end are forgotten. */
  async finish (nBlocks: number): Promise<void> {
    const { committed } = this.m
    for (let guard = 0; guard < Number.MAX_SAFE_INTEGER; guard++) {
      const grp = this.cur ?? await this.nextStoredFrom(0)
      this.cur = null
      if (grp === null) break
      for (let s = Math.max(0, nBlocks - grp.firstBlock); s < GROUP_BLOCKS; s++) {
        if (grp.state(s) === SLOT_ABSENT) continue
        if (grp.generation(s) > committed) this.sawNewer = true
        grp.clear(s)
        this.wrote = true
      }
      if (grp.dirty) await this.m.writer.putGroup(grp)
    }
  }

  private async flushCurrent (): Promise<void> {
    const c = this.cur
    this.cur = null
    if (c?.dirty === true) await this.m.writer.putGroup(c)
  }

  /** Makes group g current: the stored one, or an empty one (stored only if written to). */
  private async moveTo (g: number): Promise<BlockGroup> {
    await this.flushCurrent()
    const next = await this.nextStoredFrom(g)
    if (next !== null && next.index !== g) this.ahead = next
    this.cur = next !== null && next.index === g ? next : new BlockGroup(g, null)
    return this.cur
  }

  /**
   * The first stored group with index ≥ g. Passes cover every block in order, so no stored
   * group below g is ever passed over.
   */
  private async nextStoredFrom (g: number): Promise<BlockGroup | null> {
    for (let guard = 0; guard < Number.MAX_SAFE_INTEGER; guard++) {
      const grp = this.ahead ?? await this.m.cursor.next()
      this.ahead = null
      if (grp === null || grp.index >= g) return grp
    }
    return null
  }
}
