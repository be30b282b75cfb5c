/**
 * Builds the libp2p node: TCP + (optional pnet PSK) + Noise + yamux, the allowlist gater, no
 * discovery, no DHT, no identify push — the mesh is exactly the configured peers, dialed by
 * the Dialer. The polyfill import must come first: libp2p 3 needs Promise.withResolvers.
 *
 * Branches behind NAT (`mesh.relay`): a node with a reachable address may serve as a circuit
 * relay v2 for the allowlisted peers only (reservations and hops both pass the gater), without
 * the protocol's default data/time limits — replication runs over it for hours. A NATed node
 * holds a reservation on its relays and is dialed through them; Noise (and the PSK, if any) run
 * end to end over the circuit, so the relay forwards ciphertext it cannot read. DCUtR then tries
 * to replace the relayed connection by a direct one (hole punching); identify runs only then,
 * because DCUtR needs the addresses peers observe.
 */
import '../../common/polyfill.ts'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@libp2p/noise'
import { yamux } from '@libp2p/yamux'
import { preSharedKey } from '@libp2p/pnet'
import { circuitRelayServer, circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { identify } from '@libp2p/identify'
import { dcutr } from '@libp2p/dcutr'
import type { PrivateKey } from '@libp2p/interface'
import { allowlistGater, type AllowlistGater } from './gater.ts'

export interface MeshNodeInit {
  privateKey: PrivateKey
  listen: string[]
  allowedPeerIds: string[]
  psk?: Uint8Array
  /** Called when the gater turns a peer away (for logs and metrics). */
  onDenied?: (peer: string, direction: 'inbound' | 'outbound') => void
  /**
   * Largest yamux window: big windows keep a 1 MiB-frame replication stream full on a
   * high-bandwidth link. @default 16 MiB
   */
  maxStreamWindowBytes?: number
  /** NAT traversal; absent: neither relay nor relayed dials. */
  relay?: MeshRelayInit
}

export interface MeshRelayInit {
  /** Serve as a circuit relay for the allowlisted peers. @default false */
  serve: boolean
  /** Dial and listen through relays (this node or its peers sit behind NAT). @default false */
  client: boolean
  /** Try DCUtR hole punching to replace a relayed connection by a direct one. @default true */
  holePunch: boolean
  /** Most reservations the relay holds (one per allowlisted peer is enough). */
  maxReservations: number
}

export interface MeshNode {
  libp2p: Libp2p
  gater: AllowlistGater
}

export async function createMeshNode (init: MeshNodeInit): Promise<MeshNode> {
  const gater = allowlistGater(init.allowedPeerIds, init.onDenied)
  const relay = init.relay
  const services: NonNullable<Parameters<typeof createLibp2p>[0]>['services'] & object = {}
  if (relay?.serve === true || relay?.client === true) services.identify = identify()
  if (relay?.serve === true) {
    services.relay = circuitRelayServer({
      // the relay is the DR site's own node relaying its own branches: the spec's default limits
      // (2 min, 128 KiB) would cut every replication session
      reservations: { applyDefaultLimit: false, maxReservations: relay.maxReservations }
    })
  }
  if (relay?.client === true && relay.holePunch) services.dcutr = dcutr()
  const libp2p = await createLibp2p({
    privateKey: init.privateKey,
    addresses: { listen: init.listen },
    transports: [
      tcp({ dialOpts: { noDelay: true, keepAlive: true, keepAliveInitialDelay: 5000 } }),
      ...(relay?.client === true ? [circuitRelayTransport()] : [])
    ],
    services,
    connectionEncrypters: [noise()],
    streamMuxers: [yamux({ streamOptions: { maxStreamWindowSize: init.maxStreamWindowBytes ?? 16 * 1024 * 1024 } })],
    ...(init.psk !== undefined ? { connectionProtector: preSharedKey({ psk: init.psk }) } : {}),
    connectionGater: gater,
    connectionManager: { maxConnections: 256, inboundUpgradeTimeout: 5000 },
    // libp2p's monitor aborts a connection whose ping waits ~5 s; behind a saturated link's
    // queue that killed healthy connections (and every session on them). Membership decides
    // who is dead, TCP keepalive finds dead sockets: the monitor only measures the RTT here.
    connectionMonitor: { abortConnectionOnPingFailure: false },
    start: false
  })
  return { libp2p, gater }
}
