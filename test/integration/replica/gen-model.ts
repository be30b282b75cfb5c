/**
 * The deterministic sequence of generations used by the kill -9 test: generation g depends only
 * on g (and the state before it), so the child that applies them and the parent that checks
 * the replica agree on every byte without talking to each other.
 */
import { SeededRandom } from '../../../common/random.ts'
import { randomBytes, type GenSpec, type GenOp } from '../../unit/replica/helpers.ts'

export const DISK = '/vms/kill/disk.vhdx'
export const CFG = '/vms/kill/cfg.vmcx'
export const SEED_SIZE = 8 * 1024 * 1024
export const BLOCK = 64 * 1024
const HOUR = 3_600_000

export function diskSize (g: number): number {
  return g <= 1 ? SEED_SIZE : SEED_SIZE + ((g % 7) - 3) * BLOCK + (g % 3) * 1000
}

export function createdAt (g: number): number { return 1_600_000_000_000 + g * (HOUR / 3) }

export function genSpec (g: number): GenSpec {
  const rng = new SeededRandom(g * 7919)
  const ops: GenOp[] = []
  if (g === 1) {
    for (let at = 0; at < SEED_SIZE; at += BLOCK) ops.push({ kind: 'block', fileId: 1, offset: at, data: randomBytes(rng, BLOCK) })
    ops.push({ kind: 'block', fileId: 2, offset: 0, data: randomBytes(rng, 4096) })
    return {
      header: { generation: 1, baseGeneration: 0, consistent: true, createdAtMs: createdAt(1), files: [{ fileId: 1, path: DISK, size: SEED_SIZE, kind: 'disk' }, { fileId: 2, path: CFG, size: 4096, kind: 'whole-file' }] },
      ops
    }
  }
  const size = diskSize(g)
  for (let i = 0; i < 24; i++) {
    const offset = rng.int(Math.floor(size / BLOCK)) * BLOCK
    ops.push({ kind: 'block', fileId: 1, offset, data: randomBytes(rng, Math.min(BLOCK, size - offset)) })
  }
  ops.push({ kind: 'block', fileId: 2, offset: 0, data: randomBytes(rng, 4096) })
  return {
    header: { generation: g, baseGeneration: g - 1, consistent: g % 3 !== 0, createdAtMs: createdAt(g), files: [{ fileId: 1, path: DISK, size, kind: 'disk' }, { fileId: 2, path: CFG, size: 4096, kind: 'whole-file' }] },
    ops
  }
}

export const RETENTION = { maxPoints: 5, keepAllWithinMs: 0, hourlyBeyond: true }
