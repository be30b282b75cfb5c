import { strict as assert } from 'node:assert'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { daemonEnv, daemonNodeArgs } from '../../../daemon/cluster/local-cluster.ts'

describe('cluster: daemons started without the shebang get what it sets', () => {
  it('the V8 flags and MALLOC_ARENA_MAX=2 of bin/vmesh.js; a value in this environment wins', () => {
    const saved = process.env.MALLOC_ARENA_MAX
    try {
      delete process.env.MALLOC_ARENA_MAX
      assert.equal(daemonEnv().MALLOC_ARENA_MAX, '2')
      process.env.MALLOC_ARENA_MAX = '8'
      assert.equal(daemonEnv().MALLOC_ARENA_MAX, undefined)
    } finally {
      if (saved === undefined) delete process.env.MALLOC_ARENA_MAX; else process.env.MALLOC_ARENA_MAX = saved
    }
    if (process.env.VMESH_NODE_ARGS === undefined) assert.ok(daemonNodeArgs().includes('--max-semi-space-size=1'))
  })

  it('a fixed glibc mmap threshold (MALLOC_MMAP_THRESHOLD_=131072)', () => {
    const saved = process.env.MALLOC_MMAP_THRESHOLD_
    try {
      delete process.env.MALLOC_MMAP_THRESHOLD_
      assert.equal(daemonEnv().MALLOC_MMAP_THRESHOLD_, '131072')
    } finally {
      if (saved !== undefined) process.env.MALLOC_MMAP_THRESHOLD_ = saved
    }
  })

  // The daemons allocate many short-lived 1 MiB buffers (journal appenders, undo and read chunks).
  // With glibc's dynamic mmap threshold the first one freed raises the threshold past 1 MiB, and
  // from then on they come from the heap, where a few small allocations that outlive them pin the
  // freed megabytes: RSS keeps the high-water mark of the work a process once did.
  it('on glibc, the memory of freed 1 MiB buffers goes back to the system', function () {
    if (process.platform !== 'linux' || spawnSync('ldd', ['--version'], { encoding: 'utf8' }).stdout?.includes('GLIBC') !== true) this.skip()
    const script = `
      const { readFileSync } = require('node:fs')
      const rss = () => Number(/VmRSS:\\s+(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) >> 10
      const keep = []
      let b = Buffer.allocUnsafe(1 << 20); b.fill(1); b = null; gc()
      const before = rss()
      let bigs = []
      for (let i = 0; i < 64; i++) { const x = Buffer.allocUnsafe(1 << 20); x.fill(1); bigs.push(x); keep.push(Buffer.allocUnsafeSlow(256).fill(2)) }
      bigs = null; gc(); gc()
      console.log(JSON.stringify({ before, after: rss(), kept: keep.length }))`
    // a file, not `node -e`: the eval path allocates differently and hides the effect
    const dir = mkdtempSync(join(tmpdir(), 'vmesh-malloc-'))
    const file = join(dir, 'buffers.cjs')
    writeFileSync(file, script)
    const run = (env: Record<string, string>): { before: number, after: number } => {
      const r = spawnSync(process.execPath, ['--expose-gc', file], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '', ...env }, timeout: 30_000 })
      assert.equal(r.status, 0, r.stderr)
      return JSON.parse(r.stdout) as { before: number, after: number }
    }
    try {
      const withDaemonEnv = run(daemonEnv())
      assert.ok(withDaemonEnv.after - withDaemonEnv.before < 16, `64 MiB freed, RSS still ${withDaemonEnv.after - withDaemonEnv.before} MiB above: ${JSON.stringify(withDaemonEnv)}`)
      // the control: glibc's defaults (bar the arenas) keep them, so the check above means something
      const dynamic = run({ MALLOC_ARENA_MAX: '2' })
      assert.ok(dynamic.after - dynamic.before >= 48, `expected the dynamic threshold to keep the freed buffers: ${JSON.stringify(dynamic)}`)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
