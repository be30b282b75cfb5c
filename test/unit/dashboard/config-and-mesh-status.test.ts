import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import { ManualClock } from '../../../common/clock.ts'
import { parseConfigText, normalizeConfig } from '../../../config/load.ts'
import { silentLogger } from '../../../daemon/log.ts'
import { MeshStatusService, summarize } from '../../../daemon/dashboard/mesh-status.ts'
import { progressItems } from '../../../daemon/dashboard/progress.ts'
import { decodeStatusSummary, encodeStatusSummary } from '../../../protocol/status-summary/index.ts'
import type { StatusDocument } from '../../../daemon/status.ts'
import type { Handler } from '../../../daemon/api/routes.ts'

describe('dashboard: config, mesh-wide status view, progress', () => {
  const yaml = (extra: string): string => `node: { name: hv-a }\n${extra}`

  it('dashboard.listen needs tls and the other way round; paths resolve against the config folder', () => {
    const issues = (text: string): string => { try { parseConfigText(text, '/etc/vmesh/vmesh.yaml'); return '' } catch (err) { assert.equal((err as Error).name, 'ConfigInvalidError'); return (err as Error).message } }
    assert.match(issues(yaml('dashboard: { listen: "0.0.0.0:7443" }')), /dashboard\.tls: dashboard\.listen serves other hosts/)
    assert.match(issues(yaml('dashboard: { tls: { cert: a.crt, key: a.key } }')), /dashboard\.listen: dashboard\.tls needs/)
    assert.match(issues(yaml('dashboard: { publicUrl: "http://x" }')), /publicUrl: must be an https:\/\/ URL/)
    const { raw } = parseConfigText(yaml('dashboard: { listen: "0.0.0.0:7443", tls: { cert: tls/a.crt, key: /k/a.key }, loginTtl: 30s }'), '/etc/vmesh/vmesh.yaml')
    const c = normalizeConfig(raw, '/etc/vmesh/vmesh.yaml')
    assert.deepEqual(c.dashboard, { listen: { host: '0.0.0.0', port: 7443 }, tls: { certPath: '/etc/vmesh/tls/a.crt', keyPath: '/k/a.key' }, loginTtlMs: 30_000, sessionTtlMs: 43_200_000 })
    assert.deepEqual(normalizeConfig(parseConfigText(yaml(''), '/x/v.yaml').raw, '/x/v.yaml').dashboard, { loginTtlMs: 60_000, sessionTtlMs: 43_200_000 })
  })

  function own (members: StatusDocument['members']): StatusDocument {
    return { node: { name: 'a', peerId: 'PA', role: 'host', uptimeMs: 5000, profile: 'lan' }, members, vms: [], tests: [] }
  }
  function peerSummary (node: string, seq: number, uptimeMs: number): Uint8Array {
    return encodeStatusSummary({ ...summarize({ ...own([]), node: { name: node, peerId: 'x', role: 'host', uptimeMs, profile: 'lan' } }, seq, 1), members: [{ name: 'a', state: 'alive', connected: true, sinceMs: 1 }] })
  }

  it('keeps each peer\'s newest summary, ages it, marks it stale, and trusts a node only about itself', () => {
    const clock = new ManualClock(0)
    let members: StatusDocument['members'] = [
      { name: 'b', peerId: 'PB', role: 'host', state: 'alive', incarnation: 1, sinceMs: 0, everSeen: true, connected: true },
      { name: 'w', peerId: 'PW', role: 'witness', state: 'alive', incarnation: 1, sinceMs: 0, everSeen: true, connected: true }
    ]
    const routes = new Map<string, Handler>()
    const libp2p = Object.assign(new EventEmitter(), { handle: async () => {}, unhandle: async () => {}, getConnections: () => [], addEventListener: () => {}, removeEventListener: () => {} })
    const svc = new MeshStatusService({
      clock,
      log: silentLogger(),
      libp2p: libp2p as never,
      status: { status: () => own(members) },
      membership: { onMember: () => () => {} },
      api: { route: (m, p, h) => { routes.set(`${m} ${p}`, h) } }
    }, { node: 'a', role: 'host', peers: [{ name: 'b', id: 'PB', role: 'host' }, { name: 'w', id: 'PW', role: 'witness' }], staleMs: 3000 })
    const receive = (from: string, body: Uint8Array): void => { (svc as unknown as { receive: (f: string, b: Uint8Array) => void }).receive(from, body) }
    receive('PB', peerSummary('b', 5, 9000))
    receive('PB', peerSummary('b', 4, 9500)) // older seq of the same run: ignored
    receive('PW', peerSummary('b', 9, 1)) // w speaking for b: ignored
    receive('PW', new TextEncoder().encode('{"v":1')) // garbage: dropped, counted
    assert.equal(svc.stats.decodeErrors, 2)
    clock.advance(1000)
    let v = svc.view()
    assert.deepEqual(v.nodes.map(n => [n.name, n.state, n.ageMs, n.stale, n.summary?.seq ?? null]), [['a', 'self', 0, false, 0], ['b', 'alive', 1000, false, 5], ['w', 'alive', null, true, null]])
    receive('PB', peerSummary('b', 1, 200)) // b restarted: its seq starts again, its uptime went back
    clock.advance(3001)
    v = svc.view()
    assert.deepEqual([v.nodes[1]?.summary?.seq, v.nodes[1]?.ageMs, v.nodes[1]?.stale], [1, 3001, true], 'older than staleMs')
    members = members.map(m => m.name === 'b' ? { ...m, state: 'dead', connected: false } : m)
    receive('PB', peerSummary('b', 2, 300))
    assert.equal(svc.view().nodes[1]?.stale, true)
    assert.ok(routes.has('GET /v1/status/mesh'))
  })

  it('the summary carries each sourced VM\'s RPO target (vms[].rpo) for the VMs page, and decodes on a peer', () => {
    const doc = own([])
    doc.vms = [
      { name: 'vm1', owner: 'a', epoch: 1, runningHere: true, generation: 3, targets: [], replica: null, rpoTargetMs: 15_000 },
      { name: 'vm2', owner: 'b', epoch: 1, runningHere: false, generation: 2, targets: [], replica: { from: 'b', appliedGeneration: 2, files: {} } }
    ]
    const wire = decodeStatusSummary(encodeStatusSummary(summarize(doc, 1, 1)))
    assert.deepEqual(wire.vms.map(v => [v.name, v.rpoTargetMs]), [['vm1', 15_000], ['vm2', undefined]])
  })

  it('progress: seeding fraction and ETA from the rate, catch-up transfers, nothing for idle targets', () => {
    const base = summarize(own([]), 1, 1)
    const vm = { name: 'vm1', owner: 'a', epoch: 1, runningHere: true, generation: 3, changeSource: null, rpoBoundMs: null, replica: null }
    const items = progressItems([{ ...base, vms: [{ ...vm, targets: [
      { node: 'b', state: 'seeding', ackedGeneration: 0, lagMs: null, rpoMs: null, bytesPending: 10_000_000, rateBytesPerSec: 5_000_000, seedProgress: 0.5 },
      { node: 'c', state: 'behind', ackedGeneration: 2, lagMs: 900, rpoMs: 900, bytesPending: 1000, rateBytesPerSec: null, seedProgress: null },
      { node: 'd', state: 'in-sync', ackedGeneration: 3, lagMs: 0, rpoMs: 100, bytesPending: 0, rateBytesPerSec: 10, seedProgress: null }
    ] }] }, null])
    assert.deepEqual(items.map(i => [i.kind, i.to, i.fraction, i.etaMs]), [['seed', 'b', 0.5, 2000], ['transfer', 'c', null, null]])
  })
})
