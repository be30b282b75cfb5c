/**
 * Addresses for NAT traversal through circuit relays (`mesh.relay.via`): where this node listens
 * (a reservation on each relay) and how each peer can be dialed (its own addresses first, then
 * through each relay). libp2p dials relayed addresses after direct ones.
 */
export interface RelayPeer { id: string, addrs: string[] }

/**
 * One `/p2p-circuit` listen address per relay: each asks for a reservation on a connected peer
 * that serves as a relay (learned by identify, so only the allowlisted mesh). Not the relay's
 * own `/…/p2p/<relay>/p2p-circuit`: libp2p dials that once at start — a relay that is down
 * then fails the daemon's start, and a relay that restarts is never asked again — whereas a
 * discovered reservation is made again whenever the dialer reconnects to the relay.
 */
export function relayListenAddrs (relays: RelayPeer[]): string[] {
  return relays.map(() => '/p2p-circuit')
}

/** The peer's own addresses, then one circuit address through each relay that is not the peer. */
export function peerDialAddrs (peer: RelayPeer, relays: RelayPeer[]): string[] {
  const circuits = relays.filter(r => r.id !== peer.id).flatMap(r => r.addrs.map(a => `${withPeer(a, r.id)}/p2p-circuit/p2p/${peer.id}`))
  return [...peer.addrs, ...circuits]
}

function withPeer (addr: string, id: string): string {
  return addr.includes('/p2p/') ? addr : `${addr}/p2p/${id}`
}
