/**
 * Every state a soak VM's disk file has been in: the root (the file as created) and each page
 * write its writer (writer.mjs) logged before making it. A replica read at rest must hash to one
 * of them — a generation the source had at some instant — and `rebuild` materializes that state
 * (the generation's snapshot) so `qemu-img compare` can check the replica against it.
 */
import { readFile } from 'node:fs/promises'
import { createHash } from 'node:crypto'

const PAGE = 4096

interface Step { parent: string, off: number, tag: string }

export class VmStates {
  /** state hash → the write that produced it (undefined for the root). */
  private readonly steps = new Map<string, Step | undefined>()
  /** Hashes the VM's instances started from (each must be a known state). */
  readonly starts: Array<{ hash: string, node: string, epoch: number, t: number }> = []
  private readOffset = 0
  private partial = ''

  constructor (readonly vm: string, readonly logPath: string, readonly root: Buffer) {
    this.steps.set(sha256(root), undefined)
  }

  /** Reads what the writers appended since the last call. */
  async refresh (): Promise<void> {
    const buf = await readFile(this.logPath).catch(() => Buffer.alloc(0))
    if (buf.length <= this.readOffset) return
    const text = this.partial + buf.subarray(this.readOffset).toString('utf8')
    this.readOffset = buf.length
    const lines = text.split('\n')
    this.partial = lines.pop() ?? ''
    for (const l of lines) {
      if (l === '') continue
      let o: { hash?: string, parent?: string, off?: number, tag?: string, start?: string, node?: string, epoch?: number, t?: number }
      try { o = JSON.parse(l) } catch { continue }
      if (o.hash !== undefined && o.parent !== undefined && o.off !== undefined && o.tag !== undefined && !this.steps.has(o.hash)) {
        this.steps.set(o.hash, { parent: o.parent, off: o.off, tag: o.tag })
      }
      if (o.start !== undefined) this.starts.push({ hash: o.start, node: o.node ?? '?', epoch: o.epoch ?? 0, t: o.t ?? 0 })
    }
  }

  has (hash: string): boolean { return this.steps.has(hash) }

  /**
   * Offsets of the pages of `bytes` that are neither the root's page there nor a page a writer
   * wrote there — what a fuzzy generation (blocks read while the file changed: a mix of states,
   * each page one the file held) can never contain.
   */
  unknownPages (bytes: Buffer): number[] {
    const known = new Map<number, Set<string>>()
    for (const s of this.steps.values()) {
      if (s === undefined) continue
      let set = known.get(s.off)
      if (set === undefined) { set = new Set(); known.set(s.off, set) }
      set.add(s.tag)
    }
    const out: number[] = []
    for (let off = 0; off < this.root.length; off += PAGE) {
      const page = bytes.subarray(off, off + PAGE)
      if (page.equals(this.root.subarray(off, off + PAGE))) continue
      const tags = known.get(off)
      if (tags === undefined || ![...tags].some(t => pageOf(t).equals(page))) out.push(off)
    }
    if (bytes.length !== this.root.length) out.push(-1)
    return out
  }
  get size (): number { return this.steps.size }

  /** The bytes of a known state: the root with the writes on its path applied. */
  rebuild (hash: string): Buffer {
    const path: Step[] = []
    let h: string | undefined = hash
    for (let guard = 0; ; guard++) {
      if (h === undefined || !this.steps.has(h)) throw new Error(`${this.vm}: state ${hash} is not known (broken at ${h})`)
      const s = this.steps.get(h)
      if (s === undefined) break
      path.push(s)
      h = s.parent
      if (guard > 10_000_000) throw new Error(`${this.vm}: state chain of ${hash} loops`)
    }
    const img = Buffer.from(this.root)
    for (let i = path.length - 1; i >= 0; i--) {
      const s = path[i] as Step
      pageOf(s.tag).copy(img, s.off)
    }
    if (sha256(img) !== hash) throw new Error(`${this.vm}: rebuilt state does not hash to ${hash}`)
    return img
  }
}

export function sha256 (b: Buffer): string { return createHash('sha256').update(b).digest('hex') }

/** writer.mjs's page for `tag`: its SHA-256 repeated over 4 KiB. */
export function pageOf (tag: string): Buffer {
  const d = createHash('sha256').update(tag).digest()
  const b = Buffer.alloc(PAGE)
  for (let i = 0; i < PAGE; i += 32) d.copy(b, i)
  return b
}
