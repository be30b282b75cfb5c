/**
 * A group of GROUP_BLOCKS consecutive block entries stored as one LevelDB value. One value per
 * group instead of one per block cuts the per-operation cost of a full scan (a 2 GiB file at
 * 64 KiB blocks: 1024 puts instead of 32768) and lets the scanner compare hashes in a tight loop.
 *
 * Value layout (fixed size, GROUP_VALUE_BYTES):
 *   [0]                 tag GROUP_TAG (a value without it is corrupt, never guessed at)
 *   [1, 1+N)            slot state: 0 absent (zero, never non-zero), 1 hash, 2 tombstone (became zero)
 *   [1+N, 1+5N)         u32 BE generation that last changed the slot (0 when absent)
 *   [1+5N, 1+21N)       16-byte BLAKE3-128 of the block (zeros unless state = hash)
 * LevelDB compresses the unused slots of sparse groups.
 */
import { ManifestCorruptError } from './errors.ts'

export const HASH_BYTES = 16
export const GROUP_BLOCKS = 32
export const GROUP_TAG = 0x01
export const SLOT_ABSENT = 0
export const SLOT_HASH = 1
export const SLOT_TOMBSTONE = 2

const N = GROUP_BLOCKS
const STATE_AT = 1
const GEN_AT = 1 + N
const HASH_AT = 1 + 5 * N
export const GROUP_VALUE_BYTES = 1 + 21 * N

/** Entries of one group. Reads are views of the stored value; the first write copies it. */
export class BlockGroup {
  private bytes: Uint8Array | null
  private owned = false
  /** True once a slot was changed (the group must be written back). */
  dirty = false

  /** `bytes` null: a group with no stored value (every slot absent). */
  constructor (readonly index: number, bytes: Uint8Array | null) {
    this.bytes = bytes
  }

  /** Validates a stored value; throws ManifestCorruptError if it is not one this code wrote. */
  static decode (index: number, v: Uint8Array): BlockGroup {
    if (v.length !== GROUP_VALUE_BYTES || v[0] !== GROUP_TAG) {
      throw new ManifestCorruptError(`manifest group ${index} has ${v.length} bytes, tag ${String(v[0])}`)
    }
    for (let i = 0; i < N; i++) {
      if ((v[STATE_AT + i] as number) > SLOT_TOMBSTONE) throw new ManifestCorruptError(`manifest group ${index} slot ${i} has state ${String(v[STATE_AT + i])}`)
    }
    return new BlockGroup(index, v)
  }

  /** First block index of this group. */
  get firstBlock (): number { return this.index * N }

  state (slot: number): number {
    return this.bytes === null ? SLOT_ABSENT : this.bytes[STATE_AT + slot] as number
  }

  generation (slot: number): number {
    const b = this.bytes
    if (b === null) return 0
    const o = GEN_AT + 4 * slot
    return (((b[o] as number) << 24) | ((b[o + 1] as number) << 16) | ((b[o + 2] as number) << 8) | (b[o + 3] as number)) >>> 0
  }

  /** The slot's hash as a view (valid until the group is written to); null unless state = hash. */
  hash (slot: number): Uint8Array | null {
    if (this.bytes === null || this.bytes[STATE_AT + slot] !== SLOT_HASH) return null
    const o = HASH_AT + HASH_BYTES * slot
    return this.bytes.subarray(o, o + HASH_BYTES)
  }

  /** True when the slot holds a hash equal to src[at, at+16). */
  hashEquals (slot: number, src: Uint8Array, at: number): boolean {
    const b = this.bytes
    if (b === null || b[STATE_AT + slot] !== SLOT_HASH) return false
    const o = HASH_AT + HASH_BYTES * slot
    for (let i = 0; i < HASH_BYTES; i++) if (b[o + i] !== src[at + i]) return false
    return true
  }

  /** Stores src[at, at+16) as the slot's hash, or a tombstone when `src` is null. */
  set (slot: number, src: Uint8Array | null, at: number, generation: number): void {
    const b = this.writable()
    const o = HASH_AT + HASH_BYTES * slot
    b[STATE_AT + slot] = src === null ? SLOT_TOMBSTONE : SLOT_HASH
    if (src === null) b.fill(0, o, o + HASH_BYTES)
    else for (let i = 0; i < HASH_BYTES; i++) b[o + i] = src[at + i] as number
    this.setGeneration(b, slot, generation)
  }

  /** Makes the slot absent (the block is past the end of the file). */
  clear (slot: number): void {
    if (this.state(slot) === SLOT_ABSENT) return
    const b = this.writable()
    b[STATE_AT + slot] = SLOT_ABSENT
    this.setGeneration(b, slot, 0)
    b.fill(0, HASH_AT + HASH_BYTES * slot, HASH_AT + HASH_BYTES * (slot + 1))
  }

  isEmpty (): boolean {
    const b = this.bytes
    if (b === null) return true
    for (let i = 0; i < N; i++) if (b[STATE_AT + i] !== SLOT_ABSENT) return false
    return true
  }

  /** The value to store. */
  encode (): Uint8Array {
    return this.bytes ?? emptyValue()
  }

  private writable (): Uint8Array {
    if (!this.owned) {
      this.bytes = this.bytes === null ? emptyValue() : new Uint8Array(this.bytes)
      this.owned = true
    }
    this.dirty = true
    return this.bytes as Uint8Array
  }

  private setGeneration (b: Uint8Array, slot: number, g: number): void {
    const o = GEN_AT + 4 * slot
    b[o] = (g >>> 24) & 0xff
    b[o + 1] = (g >>> 16) & 0xff
    b[o + 2] = (g >>> 8) & 0xff
    b[o + 3] = g & 0xff
  }
}

function emptyValue (): Uint8Array {
  const v = new Uint8Array(GROUP_VALUE_BYTES)
  v[0] = GROUP_TAG
  return v
}
