/**
 * The oracle for the test bed's TCG disk-writer guest (../shared/testbed/diskwriter.asm): it
 * writes record n — "CNTR", then n repeated — into slot n mod 32 of its own disk, ~10×/s. A copy
 * of the disk that is one point in time holds, after record N, in every slot k the newest record
 * n ≤ N with n ≡ k (mod 32) — nothing older, nothing newer. A mix of two moments (a slot read
 * before the guest overwrote it, a later slot after) breaks that.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const SLOTS = 32

/** The test bed's guest source (`nasm -f bin` makes its boot sector), undefined when the test bed is not beside the checkout. */
export const DISKWRITER_ASM: string | undefined = [fileURLToPath(new URL('../../../shared/testbed/diskwriter.asm', import.meta.url)), '/work/shared/testbed/diskwriter.asm'].find(p => existsSync(p))

/** SIGKILLs a QEMU still running and waits for its exit. */
export async function killQemu (qemu: ChildProcess | undefined): Promise<void> {
  if (qemu === undefined || qemu.exitCode !== null || qemu.signalCode !== null) return
  qemu.kill('SIGKILL')
  await new Promise(resolve => qemu.once('exit', resolve))
}

/** The record numbers in the 32 slots of a disk image (0: never written), read through its format driver. */
export function slotsOf (image: string, dir: string, format = 'vhdx'): number[] {
  const raw = join(dir, 'slots.raw')
  const r = spawnSync('qemu-img', ['convert', '-U', '-f', format, '-O', 'raw', image, raw])
  assert.equal(r.status, 0, String(r.stderr))
  const out: number[] = []
  const buf = readFileSync(raw)
  for (let k = 0; k < SLOTS; k++) {
    const at = (1 + k * 4096) * 512
    const sector = buf.subarray(at, at + 512)
    if (sector.every(b => b === 0)) { out.push(0); continue }
    assert.equal(sector.subarray(0, 4).toString('latin1'), 'CNTR', `slot ${k}: not a record`)
    const n = sector.readUInt32LE(4)
    for (let i = 8; i < 512; i += 4) assert.equal(sector.readUInt32LE(i), n, `slot ${k}: torn sector`)
    assert.equal(n % SLOTS, k, `slot ${k} holds record ${n}`)
    out.push(n)
  }
  return out
}

/** The point the slots are, or why they are no single point. */
export function pointOf (slots: number[]): { n: number } | { torn: string } {
  const n = Math.max(...slots)
  for (let k = 0; k < slots.length; k++) {
    // the newest record ≤ n in slot k
    const want = n - ((((n - k) % SLOTS) + SLOTS) % SLOTS)
    const expect = want >= 1 ? want : 0
    if (slots[k] !== expect) return { torn: `slot ${k} holds ${slots[k] as number}, the point after record ${n} has ${expect}` }
  }
  return { n }
}

/**
 * A fixed VHDX whose payload blocks are all present, as Hyper-V makes them — so the file keeps
 * its size under a guest. (`qemu-img create -o subformat=fixed` on a fresh file marks every
 * block ZERO and allocates it at the file's end on its first write: that file grows.) Made by
 * converting an empty raw file with every block written (`-S 0`); the boot sector `bin`, when
 * given, is written at offset 0.
 */
export function presentFixedVhdx (path: string, dir: string, size: string, blockSize = '1M', bin?: string): void {
  const raw = join(dir, 'fixed-src.raw')
  for (const argv of [
    ['qemu-img', 'create', '-q', '-f', 'raw', raw, size],
    ...(bin !== undefined ? [['qemu-io', '-f', 'raw', '-c', `write -q -s ${bin} 0 512`, raw]] : []),
    ['qemu-img', 'convert', '-S', '0', '-f', 'raw', '-O', 'vhdx', '-o', `subformat=fixed,block_size=${blockSize}`, raw, path],
    ['rm', '-f', raw]
  ]) {
    const r = spawnSync(argv[0] as string, argv.slice(1))
    assert.equal(r.status, 0, `${argv.join(' ')}: ${String(r.stderr)}`)
  }
}
