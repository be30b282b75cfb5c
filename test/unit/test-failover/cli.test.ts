import assert from 'node:assert/strict'
import { planFailover } from '../../../daemon/cli/commands/failover.ts'
import { exitCodeFor, EXIT_USAGE } from '../../../daemon/cli/output.ts'

describe('cli: vmesh failover --test flags', () => {
  it('--test [--point ID] asks for a test on this node', () => {
    assert.deepEqual(planFailover('web01', { test: true }), { kind: 'test', body: { vm: 'web01' } })
    assert.deepEqual(planFailover('web01', { test: true, point: '42' }), { kind: 'test', body: { vm: 'web01', point: '42' } })
  })

  it('--test --cleanup removes it', () => {
    assert.deepEqual(planFailover('web01', { test: true, cleanup: true }), { kind: 'cleanup', body: { vm: 'web01' } })
  })

  it('bad combinations are usage errors (exit 2)', () => {
    for (const flags of [{ cleanup: true }, { test: true, to: 'hv-b' }, { test: true, planned: true }, { test: true, force: true }, { test: true, cleanup: true, point: '4' }, { planned: true }, { planned: true, to: 'hv-b', force: true }]) {
      assert.throws(() => planFailover('web01', flags), (err: Error & { code?: string }) => err.name === 'UsageError' && err.code === 'ERR_USAGE' && exitCodeFor(err) === EXIT_USAGE, JSON.stringify(flags))
    }
  })

  it('an ordinary failover keeps its options and passes --point through', () => {
    assert.deepEqual(planFailover('web01', {}), { kind: 'move', body: { vm: 'web01', planned: false, force: false } })
    assert.deepEqual(planFailover('web01', { to: 'hv-b', force: true }), { kind: 'move', body: { vm: 'web01', to: 'hv-b', planned: false, force: true } })
    assert.deepEqual(planFailover('web01', { to: 'hv-b', planned: true, point: '17' }), { kind: 'move', body: { vm: 'web01', to: 'hv-b', planned: true, force: false, point: '17' } })
  })
})
