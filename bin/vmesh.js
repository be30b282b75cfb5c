#!/usr/bin/env -S MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072 node --max-semi-space-size=1
// vmesh runs from the compiled dist/ tree when it is up to date (lower memory and faster
// start: no TypeScript loader), and from the TypeScript sources through tsx otherwise, so a
// developer's edit is never shadowed by a stale build. `npm run build` refreshes dist/.
// VMESH_FROM_SOURCE=1 forces the sources.
import { existsSync, readdirSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

// The shebang's V8 flags (LocalCluster and the benches read them from here):
// --max-semi-space-size=1: a daemon's heap is small and steady, and V8's default 16 MiB
//   semi-spaces only inflate RSS — measured here 111 MB → 93 MB idle.
// MALLOC_ARENA_MAX=2 (glibc; ignored elsewhere): the chaos soak's host daemons grew RSS 5-10 % in
//   3 minutes of faults while V8's committed heap (47-50 MiB) and external memory (21-25 MiB)
//   stayed flat: the growth was native, +28 MiB outside V8 in one host daemon. glibc gives each
//   thread that allocates (libuv's pool, LevelDB's compaction, the hash workers) an arena of its
//   own, up to 8 per core, and freed memory stays in the arena it came from. With two arenas the
//   same run (same seed) grew +8 MiB outside V8 and 6.3 % at most, and every daemon's RSS was
//   lower (README: Chaos soak).
// MALLOC_MMAP_THRESHOLD_=131072 (glibc): the threshold fixed at its default, 128 KiB. glibc
//   otherwise raises it to the size of each mmapped block freed (up to 32 MiB), so after the first
//   short-lived 1 MiB buffer (journal appenders, undo and read chunks, the receiver's 4 MiB) all of
//   them come from the heap, where small allocations that outlive them pin the freed pages: a host
//   daemon keeps the high-water mark of the work it once did. Measured (malloc_stats via gdb, the
//   soak's cluster without faults, a host sourcing three VMs ~7 min after a takeover): 32 MB free
//   but kept in glibc's heaps; with the fixed threshold 18 MB, RSS 153 → 143 MiB. The price: a
//   fresh mmap (page faults) for each such buffer, ~0.8 ms more per 1 MiB in a micro-benchmark.
// No --heap-growing-percent: 0.2.1 ran with 300 (a 4x old-generation growth factor), which cut
//   the receiver's major GCs during a seed (~60 → ~10 per GiB; seed 186 → ~245 MB/s). The chaos
//   soak then showed host daemons' RSS climbing ~8-10 MiB a minute for many minutes: V8 let
//   old-space garbage build up to ~4x the live heap (~35 MiB live, heap used 53 → 97 MiB,
//   RSS 215 → 275 MB in 5 min) before marking. Not a leak — a forced GC went back to ~35 MiB —
//   but a host daemon whose memory only ever seems to grow is not "without significant impact"
//   and cannot be told from a leak by its operator. With V8's own factor RSS stays flat
//   (195 → 202 MB over 330 s, same cluster); the seed pays for it in GC time.

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const stamp = join(root, 'dist', '.build-stamp')

function newestSource (dir, limit) {
  let newest = 0
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) newest = Math.max(newest, newestSource(p, limit))
    else if (e.name.endsWith('.ts')) newest = Math.max(newest, statSync(p).mtimeMs)
    if (newest > limit) return newest
  }
  return newest
}

function distIsFresh () {
  if (process.env.VMESH_FROM_SOURCE === '1' || !existsSync(stamp)) return false
  const built = statSync(stamp).mtimeMs
  for (const d of ['common', 'config', 'daemon', 'protocol', 'storage']) {
    if (newestSource(join(root, d), built) > built) return false
  }
  return true
}

let main
if (distIsFresh()) {
  ({ main } = await import('../dist/daemon/cli/main.js'))
} else {
  const { register } = await import('tsx/esm/api')
  register()
  ;({ main } = await import('../daemon/cli/main.ts'))
}
await main(process.argv)
