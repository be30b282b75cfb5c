/**
 * The replicas this node holds: one ReplicaStore per (source node, VM) under
 * `<dataDir>/replicas/<source>/<vm>/`, opened once and shared (never two stores on one
 * directory). Existing replicas are opened at start so status lists them (and crash recovery
 * runs) before their source reconnects.
 */
import { join } from 'node:path'
import { mkdir, readdir, rm, statfs } from 'node:fs/promises'
import { ReplicaStore, type ReplicaHooks, type ReplicaLog } from '../../storage/replica/index.ts'
import type { Clock } from '../../common/clock.ts'
import { errorMessage } from '../../common/errors.ts'
import { VM_NAME_RE } from '../../common/names.ts'

const SAFE_NAME = VM_NAME_RE // node names and VM names (a superset of node names)

export interface ReplicaRegistryComponents {
  clock: Clock
  log: ReplicaLog & { error?: (obj: object, msg: string) => void }
  /** Step hooks of every store opened (crash and fault injection in tests). */
  hooks?: ReplicaHooks
}

export interface ReplicaRegistryInit {
  /** `<dataDir>/replicas` */
  dir: string
  /** fsync at step boundaries. @default true */
  fsync?: boolean
  /** Seed bytes between durable checkpoints (what a resumed seed can skip). @default 16 MiB */
  seedCheckpointBytes?: number
}

export class ReplicaRegistry {
  private readonly stores = new Map<string, Promise<ReplicaStore>>()
  private readonly opened = new Map<string, { source: string, vm: string, store: ReplicaStore }>()

  constructor (private readonly components: ReplicaRegistryComponents, private readonly init: ReplicaRegistryInit) {}

  static isSafeName (name: string): boolean { return SAFE_NAME.test(name) }

  dirOf (source: string, vm: string): string { return join(this.init.dir, source, vm) }
  /** Where an operator may pre-place copies for `seed: existing` (not a store: no SAFE_NAME dir). */
  seedDirOf (source: string, vm: string): string { return join(this.init.dir, source, `${vm}.seed`) }

  /** Opens every replica already on disk; failures are logged, not fatal. */
  async start (): Promise<void> {
    await mkdir(this.init.dir, { recursive: true, mode: 0o700 })
    let sources: string[] = []
    try { sources = await readdir(this.init.dir) } catch { return }
    for (const source of sources) {
      if (!SAFE_NAME.test(source)) continue
      let vms: string[] = []
      try { vms = await readdir(join(this.init.dir, source)) } catch { continue }
      for (const vm of vms) {
        if (!SAFE_NAME.test(vm) || vm.endsWith('.seed')) continue
        try { await this.open(source, vm) } catch (err) {
          this.components.log.warn({ source, vm, err: errorMessage(err) }, 'replica could not be opened')
        }
      }
    }
  }

  /** The store of (source, vm), opened (and created) on first use. */
  async open (source: string, vm: string): Promise<ReplicaStore> {
    if (!SAFE_NAME.test(source) || !SAFE_NAME.test(vm)) throw new RangeError('unsafe replica name')
    const key = `${source}/${vm}`
    let p = this.stores.get(key)
    if (p === undefined) {
      p = ReplicaStore.open({ clock: this.components.clock, log: this.components.log, ...(this.components.hooks !== undefined ? { hooks: this.components.hooks } : {}) }, { dir: this.dirOf(source, vm), vm, source, fsync: this.init.fsync ?? true, seedCheckpointBytes: this.init.seedCheckpointBytes ?? 16 * 1024 * 1024 })
      this.stores.set(key, p)
      p.then((store) => { this.opened.set(key, { source, vm, store }) }, () => { if (this.stores.get(key) === p) this.stores.delete(key) })
    }
    return await p
  }

  /** Stores already open, synchronously (for status). */
  snapshot (): Array<{ source: string, vm: string, store: ReplicaStore }> { return [...this.opened.values()] }

  /** Stores opened so far (those still opening are skipped). */
  async list (): Promise<Array<{ source: string, vm: string, store: ReplicaStore }>> {
    const out: Array<{ source: string, vm: string, store: ReplicaStore }> = []
    for (const [key, p] of this.stores) {
      const [source, vm] = key.split('/') as [string, string]
      try { out.push({ source, vm, store: await p }) } catch {}
    }
    return out
  }

  /** Replicas of `vm` held here, from any source. */
  async ofVm (vm: string): Promise<Array<{ source: string, store: ReplicaStore }>> {
    return (await this.list()).filter(r => r.vm === vm)
  }

  /**
   * Closes and deletes the store of (source, vm): a finalized replica whose VM moved on. A
   * session still writing to it fails and its source retries into a fresh store.
   */
  async remove (source: string, vm: string): Promise<void> {
    if (!SAFE_NAME.test(source) || !SAFE_NAME.test(vm)) throw new RangeError('unsafe replica name')
    const key = `${source}/${vm}`
    const p = this.stores.get(key)
    this.stores.delete(key)
    this.opened.delete(key)
    if (p !== undefined) { try { await (await p).close() } catch {} }
    await rm(this.dirOf(source, vm), { recursive: true, force: true })
  }

  async diskFree (): Promise<number> {
    try {
      const s = await statfs(this.init.dir)
      return Number(s.bavail) * Number(s.bsize)
    } catch { return 0 }
  }

  async stop (): Promise<void> {
    const all = [...this.stores.values()]
    this.stores.clear()
    this.opened.clear()
    for (const p of all) {
      try { await (await p).close() } catch {}
    }
  }
}
