/**
 * Builds the libp2p node: TCP + (optional pnet PSK) + Noise + yamux, the allowlist gater, no
 * discovery, no DHT, no identify push — the mesh is exactly the configured peers, dialed by
 * the Dialer. The polyfill import must come first: libp2p 3 needs Promise.withResolvers.
 */
import '../../common/polyfill.ts'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@libp2p/noise'
import { yamux } from '@libp2p/yamux'
import { preSharedKey } from '@libp2p/pnet'
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
}

export interface MeshNode {
  libp2p: Libp2p
  gater: AllowlistGater
}

export async function createMeshNode (init: MeshNodeInit): Promise<MeshNode> {
  const gater = allowlistGater(init.allowedPeerIds, init.onDenied)
  const libp2p = await createLibp2p({
    privateKey: init.privateKey,
    addresses: { listen: init.listen },
    transports: [tcp({ dialOpts: { noDelay: true, keepAlive: true, keepAliveInitialDelay: 5000 } })],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux({ streamOptions: { maxStreamWindowSize: init.maxStreamWindowBytes ?? 16 * 1024 * 1024 } })],
    ...(init.psk !== undefined ? { connectionProtector: preSharedKey({ psk: init.psk }) } : {}),
    connectionGater: gater,
    connectionManager: { maxConnections: 256, inboundUpgradeTimeout: 5000 },
    start: false
  })
  return { libp2p, gater }
}
