/**
 * What an earlier daemon process left in a QEMU it no longer drives (killed, crashed, restarted
 * or upgraded while the VM kept running): its dirty bitmaps go on recording every write (QEMU's
 * memory: 32 MiB for a 1 TiB disk at 4 KiB), and a fleecing point it held goes on copying the
 * first write to each cluster into a scratch image nobody reads or deletes, until the disk's
 * worth of it. A new chain removes them first.
 *
 * Ours are the names `<prefix>-…-<epoch>-<seq>` (qemu-bitmaps.ts, qemu-fleece.ts); one with
 * another epoch than the caller's belongs to an earlier tracker of this disk. Bitmaps are
 * looked for on the disk's own format node only. Jobs, exports and nodes are QEMU-wide; they are
 * removed when a new tracker or point capture of a VM starts, which is safe because a VM's
 * rounds run one at a time and nothing of ours outlives a round except a held fleecing point
 * (one-disk VMs only). They go first: a held point's copy-before-write filter sits under the
 * format node, and QEMU then no longer names the image file in `query-block` (the format node
 * cannot even be found), and a bitmap an export uses cannot be removed.
 */
import { readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { QmpReply } from './qmp.ts'

type Qmp = (command: string, args?: Record<string, unknown>) => Promise<QmpReply>

/** What was removed (for the log). */
export interface StaleRemoved { bitmaps: string[], jobs: string[], exports: string[], nodes: string[], files: string[] }

export const nothingRemoved = (): StaleRemoved => ({ bitmaps: [], jobs: [], exports: [], nodes: [], files: [] })

const array = (r: QmpReply): Array<Record<string, unknown>> => Array.isArray(r.return) ? r.return as Array<Record<string, unknown>> : []

/** A name of ours (`prefix-…`) that is not of `keepEpoch` (undefined: every one of ours). */
function staleName (prefix: string, keepEpoch: string | undefined): (name: unknown) => name is string {
  return (name: unknown): name is string => typeof name === 'string' && name.startsWith(`${prefix}-`) && (keepEpoch === undefined || !name.includes(`-${keepEpoch}-`))
}

/**
 * Block jobs, NBD exports and block nodes of ours in this QEMU that are not `keepEpoch`'s, and
 * scratch files in `scratchDir` likewise.
 */
export async function removeStaleJobsAndNodes (qmp: Qmp, scope: { prefix: string, keepEpoch?: string, scratchDir?: string }, sleep: (ms: number) => Promise<void>, into: StaleRemoved = nothingRemoved()): Promise<StaleRemoved> {
  const stale = staleName(scope.prefix, scope.keepEpoch)
  const out = into
  const jobs: string[] = []
  for (const j of array(await qmp('query-block-jobs'))) {
    if (!stale(j.device)) continue
    await qmp('block-job-cancel', { device: j.device, force: true })
    jobs.push(j.device)
  }
  out.jobs.push(...jobs)
  // a cancelled job leaves within a few ms; its node can go only then
  await untilGone(qmp, 'query-block-jobs', 'device', jobs, sleep)
  const exports: string[] = []
  for (const e of array(await qmp('query-block-exports'))) {
    if (!stale(e.id)) continue
    if ((await qmp('block-export-del', { id: e.id, mode: 'hard' })).error === undefined) exports.push(e.id)
  }
  out.exports.push(...exports)
  // an export's deletion completes asynchronously: then its node can go
  await untilGone(qmp, 'query-block-exports', 'id', exports, sleep)
  for (const n of array(await qmp('query-named-block-nodes', { flat: true }))) {
    if (!stale(n['node-name'])) continue
    if ((await qmp('blockdev-del', { 'node-name': n['node-name'] })).error === undefined) out.nodes.push(n['node-name'])
  }
  if (scope.scratchDir !== undefined) {
    for (const f of await readdir(scope.scratchDir).catch(() => [] as string[])) {
      if (!stale(f)) continue
      await rm(join(scope.scratchDir, f), { force: true })
      out.files.push(f)
    }
  }
  return out
}

/** Waits (bounded: 2 s) until `query` lists none of `names` under `key`. */
async function untilGone (qmp: Qmp, query: string, key: string, names: string[], sleep: (ms: number) => Promise<void>): Promise<void> {
  for (let i = 0; i < 200 && names.length > 0 && array(await qmp(query)).some(x => names.includes(x[key] as string)); i++) await sleep(10)
}

/** Our bitmaps on `formatNode` that are not `keepEpoch`'s. */
export async function removeStaleBitmaps (qmp: Qmp, scope: { prefix: string, keepEpoch: string, formatNode: string }, into: StaleRemoved = nothingRemoved()): Promise<StaleRemoved> {
  const stale = staleName(scope.prefix, scope.keepEpoch)
  const fmt = array(await qmp('query-named-block-nodes', { flat: true })).find(n => n['node-name'] === scope.formatNode)
  for (const b of Array.isArray(fmt?.['dirty-bitmaps']) ? fmt['dirty-bitmaps'] as Array<{ name?: unknown }> : []) {
    if (stale(b.name) && (await qmp('block-dirty-bitmap-remove', { node: scope.formatNode, name: b.name })).error === undefined) into.bitmaps.push(b.name)
  }
  return into
}

/** True when something was removed. */
export function removedAny (r: StaleRemoved): boolean {
  return r.bitmaps.length + r.jobs.length + r.exports.length + r.nodes.length + r.files.length > 0
}
