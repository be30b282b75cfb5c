/**
 * `vmesh failover --site S`: the flags it takes and the report it prints (text; `--json` prints
 * the daemon's SiteReport as is, through printResult).
 */
import assert from 'node:assert/strict'
import { planSiteFailover, siteText } from '../../../daemon/cli/commands/failover.ts'
import { exitCodeFor, EXIT_USAGE } from '../../../daemon/cli/output.ts'
import type { SiteReport } from '../../../daemon/ownership/site.ts'

describe('cli: vmesh failover --site', () => {
  it('asks for the whole site, unplanned, planned, drill or cleanup', () => {
    assert.deepEqual(planSiteFailover(undefined, { site: 'branch' }), { kind: 'site', body: { site: 'branch', planned: false, test: false, cleanup: false } })
    assert.deepEqual(planSiteFailover(undefined, { site: 'branch', test: true, cleanup: true }), { kind: 'site', body: { site: 'branch', planned: false, test: true, cleanup: true } })
  })

  it('bad combinations are usage errors (exit 2)', () => {
    for (const [vm, flags] of [['web01', { site: 'x' }], [undefined, { site: 'x', to: 'b' }], [undefined, { site: 'x', cleanup: true }], [undefined, { site: 'x', test: true, planned: true }]] as const) {
      assert.throws(() => planSiteFailover(vm, flags), (err: Error & { code?: string }) => err.name === 'UsageError' && exitCodeFor(err) === EXIT_USAGE, JSON.stringify(flags))
    }
  })

  it('prints one line per VM: state, where it started, the point and its age (RPO), the RTO', () => {
    const r: SiteReport = {
      site: 'branch', mode: 'unplanned', node: 'b', startedAtMs: 1_700_000_000_000, tookMs: 3940,
      vms: [
        { vm: 'db1', from: 'a', node: 'b', state: 'running', point: { generation: 4, createdAtMs: 1_699_999_982_000, ageMs: 18_000 }, rtoMs: 1046 },
        { vm: 'web1', from: 'a', node: 'c', state: 'running', point: { generation: 3, createdAtMs: null, ageMs: null }, rtoMs: 825 },
        { vm: 'big', from: 'a', node: null, state: 'no-room', point: null, rtoMs: null, detail: 'no replica holder outside branch has room (b, c)' }
      ]
    }
    const lines = siteText(r).split('\n')
    assert.equal(lines[0], 'site branch (unplanned) from b: 3 VM(s) in 3.9 s')
    assert.equal(lines[1], '  db1 (was on a): running on b point gen 4 (RPO 18.0 s) RTO 1.0 s')
    assert.equal(lines[2], '  web1 (was on a): running on c point gen 3 RTO 0.8 s')
    assert.match(lines[3] ?? '', /^ {2}big \(was on a\): no-room .*— no replica holder outside branch has room \(b, c\)$/)
  })
})
