/**
 * Replication follows ownership. The node that owns a VM sources it — from its configured
 * files while it runs the VM from them, from its finalized replica once it took the VM over —
 * to every other host of the VM's policy, its home included. A node that stops owning a VM
 * (demoted, or a replica holder whose source changed) turns its own copy into the seed of the
 * replica it will now receive: the files are hard-linked (copied where links cannot be made)
 * into `<replicas>/<new owner>/<vm>.seed/`, where the receiver's `seed: existing` preload finds
 * them, and the new owner compares block hashes and sends only the blocks that differ. That is
 * what makes failback cheap: the old owner receives what changed while it was away, not the disk.
 */
import { copyFile, link, mkdir, rm } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { defaultVmConfig, type VmConfig } from '../../config/load.ts'
import { replicaFileName } from '../../storage/replica/names.ts'
import type { CopyFile } from './types.ts'

export type { CopyFile } from './types.ts'

/** The policy of a VM as ownership knows it (its home node's announcement). */
export interface VmPolicy { name: string, home: string, replicateTo: string[] }

/**
 * The names a new owner's `hello` may use for `f`: its own replica file name, derived from the
 * source path like every replica name, and the local file's base name (the new owner may run
 * the VM from its home files, named as here).
 */
export function seedNames (f: CopyFile): string[] {
  return [...new Set([replicaFileName(f.source, new Set()), basename(f.local), basename(f.source)])]
}

/** Hard-links (or copies) `files` into `seedDir` under every name the new owner may use. */
export async function placeSeed (seedDir: string, files: CopyFile[]): Promise<string[]> {
  await mkdir(seedDir, { recursive: true, mode: 0o700 })
  const placed: string[] = []
  for (const f of files) {
    for (const name of seedNames(f)) {
      const to = join(seedDir, name)
      await rm(to, { force: true })
      try { await link(f.local, to) } catch { await copyFile(f.local, to) }
      placed.push(to)
    }
  }
  return placed
}

/**
 * The source entry for a VM this node runs from replica files: the home node's entry when this
 * node is the home (its policy, grain and schedule), defaults otherwise; targets are every host
 * of the policy but this one, the home first.
 */
export function adoptedVmConfig (o: {
  spec: VmPolicy
  self: string
  home?: VmConfig
  disks: string[]
  files: string[]
  isPeer: (name: string) => boolean
}): VmConfig {
  const base = o.home ?? defaultVmConfig(o.spec.name)
  const targets = [o.spec.home, ...o.spec.replicateTo].filter((n, i, all) => n !== o.self && all.indexOf(n) === i && o.isPeer(n))
  return { ...base, name: o.spec.name, disks: o.disks, files: o.files, replicateTo: targets, seed: 'existing' }
}
