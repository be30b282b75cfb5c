/**
 * The replicas this node holds: one ReplicaStore per (source node, VM) under
 * `<dataDir>/replicas/<source>/<vm>/`, opened once and shared (never two stores on one
 * directory). Existing replicas are opened at start so status lists them (and crash recovery
 * runs) before their source reconnects.
 *
 * A receiving session holds its store through a lease (acquire → release). Removing a store
 * (a finalized replica whose VM moved on, a former owner's superseded replica) revokes its
 * leases — the sessions end, nothing of a generation in progress applied — waits until they are
 * released, and only then closes the store and deletes its folder. Opening or acquiring that
 * (source, vm) meanwhile waits for the removal and gets a fresh store: no session ever keeps
 * writing to a store the registry closed, and no store is closed under a receive in progress.
 */
import { join } from 'node:path'
import { mkdir, readdir, rm, statfs } from 'node:fs/promises'
import { ReplicaStore, type ReplicaHooks, type ReplicaLog } from '../../storage/replica/index.ts'
import type { Clock } from '../../common/clock.ts'
import { errorMessage } from '../../common/errors.ts'
import { VM_NAME_RE } from '../../common/names.ts'
import { ReplicaStoreRevokedError } from './errors.ts'

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

/** A holder's claim on an open store: the registry does not close the store while it is held. */
export interface ReplicaLease {
  readonly store: ReplicaStore
  /**
   * Aborted (reason: ReplicaStoreRevokedError) once the registry removes or closes the store:
   * the holder stops using it and releases the lease, which lets the removal go on.
   */
  readonly revoked: AbortSignal
  /** Ends the claim. Idempotent. */
  release: () => void
}

interface Lease extends ReplicaLease { readonly released: Promise<void>, revoke: (why: string) => void }

/** One (source, vm) store: opening or open, and who holds it. */
interface Entry {
  source: string
  vm: string
  store: Promise<ReplicaStore>
  /** Set once `store` resolved (status reads it synchronously). */
  opened?: ReplicaStore
  leases: Set<Lease>
}

export class ReplicaRegistry {
  private readonly entries = new Map<string, Entry>()
  /** (source/vm) → its removal in progress; open and acquire wait for it. */
  private readonly removing = new Map<string, Promise<void>>()

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

  /**
   * The store of (source, vm), opened (and created) on first use, for a short use (status,
   * finalize, points). A holder that writes to it over time (a receiving session) uses acquire().
   */
  async open (source: string, vm: string): Promise<ReplicaStore> {
    return await (await this.entry(source, vm)).store
  }

  /**
   * The store of (source, vm) under a lease: it is not closed until the lease is released, and
   * the lease is revoked when the registry is about to remove or close it.
   */
  async acquire (source: string, vm: string): Promise<ReplicaLease> {
    for (;;) {
      const e = await this.entry(source, vm)
      const store = await e.store
      // removed while it was opening: wait for that removal and take the fresh store
      if (this.entries.get(`${source}/${vm}`) !== e) continue
      const ac = new AbortController()
      let done!: () => void
      const released = new Promise<void>(resolve => { done = resolve })
      const lease: Lease = {
        store,
        revoked: ac.signal,
        released,
        revoke: (why) => { if (!ac.signal.aborted) ac.abort(new ReplicaStoreRevokedError(`the replica store of ${vm} from ${source} was ${why}`)) },
        release: () => { if (e.leases.delete(lease)) done() }
      }
      e.leases.add(lease)
      return lease
    }
  }

  /** The entry of (source, vm), after any removal of it in progress. */
  private async entry (source: string, vm: string): Promise<Entry> {
    if (!SAFE_NAME.test(source) || !SAFE_NAME.test(vm)) throw new RangeError('unsafe replica name')
    const key = `${source}/${vm}`
    for (let r = this.removing.get(key); r !== undefined; r = this.removing.get(key)) await r.catch(() => {})
    let e = this.entries.get(key)
    if (e === undefined) {
      const p = ReplicaStore.open({ clock: this.components.clock, log: this.components.log, ...(this.components.hooks !== undefined ? { hooks: this.components.hooks } : {}) }, { dir: this.dirOf(source, vm), vm, source, fsync: this.init.fsync ?? true, seedCheckpointBytes: this.init.seedCheckpointBytes ?? 16 * 1024 * 1024 })
      const created: Entry = { source, vm, store: p, leases: new Set() }
      e = created
      this.entries.set(key, created)
      p.then((store) => { created.opened = store }, () => { if (this.entries.get(key) === created) this.entries.delete(key) })
    }
    return e
  }

  /** Stores already open, synchronously (for status). */
  snapshot (): Array<{ source: string, vm: string, store: ReplicaStore }> {
    const out: Array<{ source: string, vm: string, store: ReplicaStore }> = []
    for (const e of this.entries.values()) if (e.opened !== undefined) out.push({ source: e.source, vm: e.vm, store: e.opened })
    return out
  }

  /** Stores opened so far (those still opening are skipped). */
  async list (): Promise<Array<{ source: string, vm: string, store: ReplicaStore }>> {
    const out: Array<{ source: string, vm: string, store: ReplicaStore }> = []
    for (const e of [...this.entries.values()]) {
      try { out.push({ source: e.source, vm: e.vm, store: await e.store }) } catch {}
    }
    return out
  }

  /** Replicas of `vm` held here, from any source. */
  async ofVm (vm: string): Promise<Array<{ source: string, store: ReplicaStore }>> {
    return (await this.list()).filter(r => r.vm === vm)
  }

  /** Whether a lease on the store of (source, vm) is held now (a session receiving into it). */
  isHeld (source: string, vm: string): boolean { return (this.entries.get(`${source}/${vm}`)?.leases.size ?? 0) > 0 }

  /**
   * Closes and deletes the store of (source, vm): a finalized replica whose VM moved on, or a
   * former owner's superseded one. Sessions holding it are ended first (their leases revoked,
   * then awaited), so a source still connected retries into a fresh store. With `ifUnused`,
   * nothing happens (false) while the store is held. A removal already under way is awaited.
   */
  async remove (source: string, vm: string, opts: { ifUnused?: boolean } = {}): Promise<boolean> {
    if (!SAFE_NAME.test(source) || !SAFE_NAME.test(vm)) throw new RangeError('unsafe replica name')
    const key = `${source}/${vm}`
    const running = this.removing.get(key)
    if (running !== undefined) { await running; return true }
    const e = this.entries.get(key)
    if (opts.ifUnused === true && e !== undefined && e.leases.size > 0) return false
    // from here on, open and acquire of this key wait for the removal
    this.entries.delete(key)
    const work = (async () => {
      if (e !== undefined) {
        await this.endLeases(e, 'removed')
        try { await (await e.store).close() } catch {}
      }
      await rm(this.dirOf(source, vm), { recursive: true, force: true })
    })()
    this.removing.set(key, work)
    try { await work } finally { if (this.removing.get(key) === work) this.removing.delete(key) }
    return true
  }

  /** Revokes every lease of `e` and waits until each is released. */
  private async endLeases (e: Entry, why: string): Promise<void> {
    const leases = [...e.leases]
    for (const l of leases) l.revoke(why)
    await Promise.all(leases.map(async l => { await l.released }))
  }

  /** Sources that have a `<vm>.seed` copy here. */
  async seedSourcesOf (vm: string): Promise<string[]> {
    let sources: string[] = []
    try { sources = await readdir(this.init.dir) } catch { return [] }
    const out: string[] = []
    for (const source of sources) {
      if (!SAFE_NAME.test(source)) continue
      try { if ((await readdir(join(this.init.dir, source))).includes(`${vm}.seed`)) out.push(source) } catch {}
    }
    return out
  }

  /** Deletes the `<vm>.seed` copy of `source`, if any. */
  async removeSeed (source: string, vm: string): Promise<void> {
    if (!SAFE_NAME.test(source) || !SAFE_NAME.test(vm)) throw new RangeError('unsafe replica name')
    await rm(this.seedDirOf(source, vm), { recursive: true, force: true })
  }

  async diskFree (): Promise<number> {
    try {
      const s = await statfs(this.init.dir)
      return Number(s.bavail) * Number(s.bsize)
    } catch { return 0 }
  }

  async stop (): Promise<void> {
    const all = [...this.entries.values()]
    this.entries.clear()
    for (const r of [...this.removing.values()]) await r.catch(() => {})
    for (const e of all) {
      await this.endLeases(e, 'closed (replication stopping)')
      try { await (await e.store).close() } catch {}
    }
  }
}
