/**
 * The highest start epoch seen per VM, persisted before any start runs, so a driver refuses a
 * start from a node that lost an election it did not hear about — even across daemon restarts.
 * Equal epochs are allowed (a retried start of the same round).
 */
import { join } from 'node:path'
import { readState, writeState } from './state-file.ts'
import { HypervisorStateError, StaleEpochError } from './errors.ts'

export const EPOCH_FILE = 'hypervisor-epochs.json'

export class EpochStore {
  readonly file: string
  private cache?: Map<string, number>
  /** Writes are chained so two starts never interleave their read-modify-write. */
  private chain: Promise<unknown> = Promise.resolve()

  constructor (stateDir: string) {
    this.file = join(stateDir, EPOCH_FILE)
  }

  private async load (): Promise<Map<string, number>> {
    if (this.cache !== undefined) return this.cache
    const doc = await readState(this.file)
    const map = new Map<string, number>()
    if (doc !== undefined) {
      const epochs = (doc as { epochs?: unknown }).epochs
      if (typeof doc !== 'object' || doc === null || typeof epochs !== 'object' || epochs === null || Array.isArray(epochs)) {
        throw new HypervisorStateError(this.file, 'expected { "epochs": { "<vm>": <number> } }')
      }
      for (const [vm, e] of Object.entries(epochs)) {
        if (typeof e !== 'number' || !Number.isSafeInteger(e) || e < 0) throw new HypervisorStateError(this.file, `bad epoch for "${vm}"`)
        map.set(vm, e)
      }
    }
    this.cache = map
    return map
  }

  /** The highest epoch recorded for `vm` (0 when none). */
  async highest (vm: string): Promise<number> {
    await this.chain.catch(() => {})
    return (await this.load()).get(vm) ?? 0
  }

  /**
   * Throws StaleEpochError when `epoch` is below the highest seen; otherwise records it
   * durably (when higher) before returning.
   */
  async admit (vm: string, epoch: number): Promise<void> {
    if (!Number.isSafeInteger(epoch) || epoch < 0) throw new StaleEpochError(vm, epoch, 0)
    const run = this.chain.catch(() => {}).then(async () => {
      const map = await this.load()
      const prev = map.get(vm) ?? 0
      if (epoch < prev) throw new StaleEpochError(vm, epoch, prev)
      if (epoch === prev && map.has(vm)) return
      const next = new Map(map)
      next.set(vm, epoch)
      await writeState(this.file, { version: 1, epochs: Object.fromEntries([...next].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)) })
      this.cache = next
    })
    this.chain = run
    await run
  }

  /** Records an epoch learned elsewhere (a higher owner seen in the mesh) without starting. */
  async observe (vm: string, epoch: number): Promise<void> {
    try { await this.admit(vm, epoch) } catch (err) { if (!(err instanceof StaleEpochError)) throw err }
  }
}
