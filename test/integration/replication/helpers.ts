/**
 * Shared fixture of the replication integration tests: a LocalCluster whose source node
 * protects one VM, plus waits on the status document and replica comparisons.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import type { StatusDocument, TargetStatus, VmStatus } from '../../../daemon/status.ts'

export interface VmSpec {
  name: string
  disks?: string[]
  files?: string[]
  replicateTo: string[]
  blockSize?: string
  scanInterval?: number
  quietBudget?: number
  limit?: string
  seed?: 'full' | 'existing'
}

/** The `vms:` config section for `specs`. */
export function vmsSection (specs: VmSpec[]): Record<string, unknown> {
  return {
    vms: specs.map(s => ({
      name: s.name,
      disks: s.disks ?? [],
      files: s.files ?? [],
      replicateTo: s.replicateTo,
      scanInterval: s.scanInterval ?? 500,
      quietBudget: s.quietBudget ?? 1000,
      ...(s.blockSize !== undefined ? { blockSize: s.blockSize } : {}),
      ...(s.limit !== undefined ? { limit: s.limit } : {}),
      ...(s.seed !== undefined ? { seed: s.seed } : {})
    }))
  }
}

export function vmOf (s: StatusDocument, vm: string): VmStatus | undefined { return s.vms.find(v => v.name === vm) }
export function targetOf (s: StatusDocument, vm: string, target: string): TargetStatus | undefined { return vmOf(s, vm)?.targets.find(t => t.node === target) }

/**
 * Waits until `target` acknowledged the source's current generation, nothing is pending, and
 * the replica files hold that generation (the ack comes once it is durable, just before).
 */
export async function waitInSync (c: LocalCluster, source: string, vm: string, target: string, timeoutMs = 60_000): Promise<{ generation: number }> {
  const r = await waitAcked(c, source, vm, target, timeoutMs)
  await c.waitReplicaApplied(target, vm, r.generation, timeoutMs)
  return r
}

async function waitAcked (c: LocalCluster, source: string, vm: string, target: string, timeoutMs: number): Promise<{ generation: number }> {
  return await c.waitFor(`${target} in sync for ${vm}`, async () => {
    const s = await c.status(source)
    const t = targetOf(s, vm, target)
    const v = vmOf(s, vm)
    if (t === undefined || v === undefined) return undefined
    return t.state === 'in-sync' && t.ackedGeneration === v.generation && v.generation > 0 ? { generation: v.generation } : undefined
  }, timeoutMs, 100)
}

/**
 * The replica of `sourcePath` on `node`, read at rest: waits until the replica neither receives
 * nor applies a generation (status `receivingGeneration` and `applyingGeneration` null, not
 * seeding) — the files then hold exactly `appliedGeneration` — reads the file, and checks that
 * the replica stayed at rest on that generation while it was read.
 */
export async function readReplicaAtRest (c: LocalCluster, node: string, vm: string, sourcePath: string, timeoutMs = 30_000): Promise<{ generation: number, bytes: Buffer }> {
  return await c.readReplicaAtRest(node, vm, sourcePath, timeoutMs)
}

/** Path of the replica of `sourcePath` held by `node`. */
export async function replicaPath (c: LocalCluster, node: string, vm: string, sourcePath: string): Promise<string> {
  const s = await c.status(node)
  const p = vmOf(s, vm)?.replica?.files[sourcePath]
  if (p === undefined) throw new Error(`${node} holds no replica of ${sourcePath}`)
  return p
}

export async function sameBytes (a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([readFile(a), readFile(b)])
  return x.equals(y)
}

export function logOf (c: LocalCluster, node: string): string { return join(c.node(node).dir, 'daemon.log') }

/** A fixed VHD of `size` bytes of virtual disk filled with random data (written directly). */
export async function randomFixedVhd (path: string, size: number): Promise<void> {
  const { qemuImgCreate } = await import('../../helpers/qemu.ts')
  const { open } = await import('node:fs/promises')
  const { randomBytes } = await import('node:crypto')
  await qemuImgCreate(path, 'vpc', size, { subformat: 'fixed', force_size: true })
  const fh = await open(path, 'r+')
  try {
    for (let at = 0; at < size; at += 4 * 1024 * 1024) await fh.write(randomBytes(Math.min(4 * 1024 * 1024, size - at)), 0, undefined, at)
  } finally { await fh.close() }
}

/** Writes `length` random bytes at guest `offset` of a fixed VHD (data starts at 0). */
export async function randomWrite (path: string, offset: number, length: number): Promise<void> {
  const { open } = await import('node:fs/promises')
  const { randomBytes } = await import('node:crypto')
  const fh = await open(path, 'r+')
  try { await fh.write(randomBytes(length), 0, length, offset) } finally { await fh.close() }
}

export async function replicaOf (c: LocalCluster, node: string, vm: string): Promise<VmStatus['replica'] | undefined> {
  try { return vmOf(await c.status(node), vm)?.replica ?? undefined } catch { return undefined }
}

/** Runs the vmesh CLI; resolves with exit code and stdout. */
export async function cli (args: string[], timeoutMs = 120_000): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const { execFile } = await import('node:child_process')
  const { VMESH_BIN } = await import('../../../daemon/cluster/local-cluster.ts')
  return await new Promise((resolve) => {
    execFile(process.execPath, [VMESH_BIN, ...args], { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null
      resolve({ code, stdout: String(stdout), stderr: String(stderr) })
    })
  })
}

/** Real-time pause longer than a scan interval plus the watcher debounce, so writes are seen. */
export async function settle (ms = 1500): Promise<void> { await new Promise(resolve => setTimeout(resolve, ms)) }

/**
 * Evidence for a replica that matched none of the expected generations: which MiB of it equals
 * which expected copy (`A`, `B`, `=` both, `?` none), the store's journal and undo files and the
 * replica's status at that moment, and the bytes read (saved next to the replica store).
 */
export async function replicaEvidence (c: LocalCluster, node: string, vm: string, replica: Buffer, expected: Record<string, Buffer>, tag: string): Promise<string> {
  const { readdir, writeFile } = await import('node:fs/promises')
  const { dirname } = await import('node:path')
  const MiB = 1024 * 1024
  const names = Object.keys(expected)
  let map = ''
  for (let at = 0; at < replica.length; at += MiB) {
    const part = replica.subarray(at, at + MiB)
    const eq = names.filter(n => expected[n]?.subarray(at, at + MiB).equals(part) === true)
    map += eq.length === names.length ? '=' : eq.length === 0 ? '?' : eq.join('')
  }
  const storeDir = join(c.node(node).dir, 'data', 'replicas')
  const listing: string[] = []
  const walk = async (d: string, depth: number): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      listing.push(join(d, e.name).slice(storeDir.length + 1))
      if (e.isDirectory() && depth < 4) await walk(join(d, e.name), depth + 1)
    }
  }
  await walk(storeDir, 0)
  const r = await replicaOf(c, node, vm)
  const saved = join(dirname(c.node(node).dir), `evidence-${tag}.bin`)
  await writeFile(saved, replica)
  return `replica by MiB (${names.join('/')} ; = both, ? neither): ${map}\nstatus replica: ${JSON.stringify(r)}\nstore files: ${listing.join(' ')}\nbytes read saved to ${saved}`
}
