import assert from 'node:assert/strict'
import { hasDesktop, renderMeshStatus } from '../../../daemon/cli/commands/dashboard.ts'
import type { MeshStatusView } from '../../../daemon/dashboard/mesh-status.ts'

describe('cli: vmesh dashboard and vmesh status --mesh', () => {
  it('opens a browser only where a desktop session exists', () => {
    assert.equal(hasDesktop({}, 'linux'), false)
    assert.equal(hasDesktop({ DISPLAY: '' }, 'linux'), false)
    assert.equal(hasDesktop({ DISPLAY: ':0' }, 'linux'), true)
    assert.equal(hasDesktop({ WAYLAND_DISPLAY: 'wayland-0' }, 'linux'), true)
    assert.equal(hasDesktop({}, 'win32'), true)
  })

  it('renders every node, marks a stale one with its age, and shows each member\'s view', () => {
    const summary = (node: string, members: Array<[string, 'alive' | 'dead']>): NonNullable<MeshStatusView['nodes'][number]['summary']> => ({
      v: 1, node, role: 'host', seq: 1, atWallMs: 1, uptimeMs: 1000, members: members.map(([name, state]) => ({ name, state, connected: state === 'alive', sinceMs: 0 })),
      vms: node === 'b' ? [{ name: 'vm1', owner: 'b', epoch: 2, runningHere: true, generation: 5, changeSource: 'hash-scan', rpoBoundMs: null, targets: [{ node: 'a', state: 'disconnected', ackedGeneration: 4, lagMs: null, rpoMs: null, bytesPending: 0, rateBytesPerSec: null, seedProgress: null }], replica: null }] : []
    })
    const text = renderMeshStatus({
      node: 'a',
      atWallMs: 1,
      nodes: [
        { name: 'a', role: 'host', self: true, state: 'self', connected: true, ageMs: 0, stale: false, summary: summary('a', [['b', 'alive'], ['c', 'dead']]) },
        { name: 'b', role: 'host', self: false, state: 'alive', connected: true, ageMs: 400, stale: false, summary: summary('b', [['a', 'alive'], ['c', 'dead']]) },
        { name: 'c', role: 'host', self: false, state: 'dead', connected: false, ageMs: 12_500, stale: true, summary: summary('c', [['a', 'alive'], ['b', 'alive']]) }
      ]
    })
    assert.match(text, /^c +host +dead +no +12\.5s ago +STALE \(as of 12\.5s ago\)$/m)
    assert.match(text, /^b +host +alive +yes +400ms ago +current$/m)
    assert.match(text, /^c +alive +alive +self +\(stale, 12\.5s\)$/m)
    assert.match(text, /^vm1 +b +b +2 +running; →a:disconnected$/m)
  })
})
