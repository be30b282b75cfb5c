import assert from 'node:assert/strict'
import { ManualClock } from '../../../common/clock.ts'
import { NodeStatusService } from '../../../daemon/node-status.ts'
import { createMetrics } from '../../../daemon/metrics/registry.ts'
import type { Handler } from '../../../daemon/api/server.ts'
import type { StatusDocument, VmStatus } from '../../../daemon/status.ts'

describe('daemon/node-status: the status document from the services\' views', () => {
  it('lists configured peers with the detector\'s view and lays ownership over replication', async () => {
    const clock = new ManualClock(1000)
    const routes = new Map<string, Handler>()
    const repl: VmStatus[] = [{ name: 'vm1', owner: 'a', epoch: 0, runningHere: false, generation: 4, targets: [], replica: null }]
    const s = new NodeStatusService({
      clock,
      membership: { members: () => [{ id: 'P2', state: 'suspect', incarnation: 3, sinceMs: 400, everSeen: true }], self: () => ({ incarnation: 1, awareness: 0 }) },
      mesh: { isConnected: (id) => id === 'P2' },
      replication: { vmStatus: () => repl.map(v => ({ ...v })) },
      ownership: {
        status: () => [{ vm: 'vm1', owner: 'a', epoch: 2, ownedHere: true }, { vm: 'vm2', owner: '', epoch: 0, ownedHere: false }],
        isRunningHere: (vm) => vm === 'vm1'
      },
      tests: { snapshot: () => [] },
      metrics: createMetrics({ labels: { node: 'a' } }),
      api: { route: (m, p, h) => { routes.set(`${m} ${p}`, h) }, rawRoute: () => {} }
    }, { node: { name: 'a', peerId: 'P1', role: 'host' }, profile: 'lan', peers: [{ name: 'b', id: 'P2', role: 'host' }, { name: 'w', id: 'P3', role: 'witness' }] })
    s.start()
    clock.advance(500)
    const doc = await (routes.get('GET /v1/status') as Handler)({ body: undefined, query: new URLSearchParams(), signal: new AbortController().signal }) as StatusDocument
    assert.deepEqual(doc.node, { name: 'a', peerId: 'P1', role: 'host', incarnation: 1, awareness: 0, uptimeMs: 500, profile: 'lan' })
    assert.deepEqual(doc.members.map(m => [m.name, m.state, m.sinceMs, m.connected]), [['b', 'suspect', 1100, true], ['w', 'dead', 0, false]])
    assert.deepEqual(doc.vms.map(v => [v.name, v.owner, v.epoch, v.runningHere, v.generation]), [['vm1', 'a', 2, true, 4], ['vm2', null, 0, false, 0]])
    assert.ok(routes.has('GET /v1/health'))
  })
})
