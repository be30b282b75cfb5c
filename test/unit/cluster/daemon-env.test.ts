import { strict as assert } from 'node:assert'
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
})
