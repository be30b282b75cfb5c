#!/usr/bin/env -S node --max-semi-space-size=1 --heap-growing-percent=300
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
// --heap-growing-percent=300: with a ~25 MB heap V8 sets the old-generation limit only ~10 MB
//   above it, and the ArrayBuffers that stream through replication (socket reads, Noise output,
//   file reads) count against that limit until a scavenge frees them; the receiver then ran a
//   major GC every ~17 MB (~60 per GiB, ~40 % of its CPU with the concurrent markers). A 4x
//   growing factor leaves ~10 per GiB: seed 186 → ~245 MB/s, receiver CPU 6.5 → 4.2 s/GiB,
//   RSS unchanged within noise.

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
