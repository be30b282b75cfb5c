/**
 * NAT traversal pieces that need no network: the allowlist as a relay's and a relayed peer's
 * gate, the addresses a NATed node listens and dials on, and `mesh.relay` in the config.
 */
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PeerId } from '@libp2p/interface'
import { allowlistGater } from '../../../daemon/mesh/gater.ts'
import { peerDialAddrs, relayListenAddrs } from '../../../daemon/mesh/relay-addrs.ts'
import { parseConfigText, normalizeConfig } from '../../../config/load.ts'

async function peer (): Promise<PeerId> { return peerIdFromPrivateKey(await generateKeyPair('Ed25519')) }

describe('mesh relay: the allowlist gates reservations and relayed connections', () => {
  it('a relay holds reservations and relays only between allowlisted peers', async () => {
    const [a, b, stranger] = await Promise.all([peer(), peer(), peer()])
    const denied: string[] = []
    const g = allowlistGater([a.toString(), b.toString()], (p) => { denied.push(p) })
    assert.equal(await g.denyInboundRelayReservation?.(a), false)
    assert.equal(await g.denyInboundRelayReservation?.(stranger), true)
    assert.equal(await g.denyOutboundRelayedConnection?.(a, b), false)
    assert.equal(await g.denyOutboundRelayedConnection?.(stranger, b), true, 'a stranger asks to be relayed to a member')
    assert.equal(await g.denyOutboundRelayedConnection?.(a, stranger), true, 'a member asks to be relayed to a stranger')
    assert.deepEqual(denied, [stranger.toString(), stranger.toString(), stranger.toString()])
  })

  it('a NATed node accepts relayed connections only through an allowlisted relay from an allowlisted peer', async () => {
    const [relay, a, stranger] = await Promise.all([peer(), peer(), peer()])
    const g = allowlistGater([relay.toString(), a.toString()])
    assert.equal(await g.denyInboundRelayedConnection?.(relay, a), false)
    assert.equal(await g.denyInboundRelayedConnection?.(relay, stranger), true)
    assert.equal(await g.denyInboundRelayedConnection?.(stranger, a), true)
    g.setAllowed([a.toString()])
    assert.equal(await g.denyInboundRelayedConnection?.(relay, a), true, 'a relay removed by reload is no longer trusted')
  })
})

describe('mesh relay: addresses', () => {
  const relay = { id: '12D3KooWRelay', addrs: ['/ip4/11.0.0.1/tcp/7400'] }
  it('one discovered reservation per relay; peers dialed directly first, then through each relay', () => {
    assert.deepEqual(relayListenAddrs([relay]), ['/p2p-circuit'])
    assert.deepEqual(relayListenAddrs([]), [])
    assert.deepEqual(peerDialAddrs({ id: 'B', addrs: [] }, [relay]), ['/ip4/11.0.0.1/tcp/7400/p2p/12D3KooWRelay/p2p-circuit/p2p/B'])
    assert.deepEqual(peerDialAddrs({ id: 'C', addrs: ['/ip4/10.0.0.3/tcp/7400'] }, [relay]), ['/ip4/10.0.0.3/tcp/7400', '/ip4/11.0.0.1/tcp/7400/p2p/12D3KooWRelay/p2p-circuit/p2p/C'])
    assert.deepEqual(peerDialAddrs(relay, [relay]), relay.addrs, 'the relay itself is dialed directly only')
    assert.deepEqual(peerDialAddrs({ id: 'B', addrs: [] }, [{ id: 'R', addrs: ['/ip4/1.2.3.4/tcp/1/p2p/R'] }]), ['/ip4/1.2.3.4/tcp/1/p2p/R/p2p-circuit/p2p/B'])
  })
})

describe('mesh relay: config', () => {
  const text = (relay: string, bAddrs = '[]'): string => `
node: { name: a, listen: ["/ip4/192.168.1.2/tcp/7400"] }
mesh:
  peers:
    - { name: dr, id: 12D3KooWF1XvGs24mitkz7ngPfJBh4nD9JV36xhTNdzw2Xmv4hyX, addrs: ["/ip4/11.0.0.1/tcp/7400"] }
    - { name: b, id: 12D3KooWAjUh2jAAU6qTR4p1gVLDUawMUnRuy6cWkAomL9meMrF2, addrs: ${bAddrs} }
${relay}`
  it('a peer behind NAT may have no address; mesh.relay defaults to off', () => {
    const c = normalizeConfig(parseConfigText(text(''), '/x/vmesh.yaml').raw, '/x/vmesh.yaml')
    assert.deepEqual(c.mesh.relay, { serve: false, via: [], holePunch: true })
    assert.deepEqual(c.mesh.peers.find(p => p.name === 'b')?.addrs, [])
    const r = normalizeConfig(parseConfigText(text('  relay: { via: [dr], holePunch: false }'), '/x/vmesh.yaml').raw, '/x/vmesh.yaml')
    assert.deepEqual(r.mesh.relay, { serve: false, via: ['dr'], holePunch: false })
  })
  it('a relay must be a listed peer with an address', () => {
    assert.throws(() => parseConfigText(text('  relay: { via: [nowhere] }'), '/x/vmesh.yaml'), (err: Error & { issues?: Array<{ path: string, message: string }> }) =>
      err.name === 'ConfigInvalidError' && /not a peer in mesh.peers/.test(err.message))
    assert.throws(() => parseConfigText(text('  relay: { via: [b] }'), '/x/vmesh.yaml'), (err: Error) =>
      err.name === 'ConfigInvalidError' && /needs an address/.test(err.message))
    assert.throws(() => parseConfigText(text('  relay: { serve: yes please }'), '/x/vmesh.yaml'), { name: 'ConfigInvalidError' })
  })
})
