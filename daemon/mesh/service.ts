/**
 * The mesh as a service: the libp2p node (its gater holds the allowlist); the dialer that keeps
 * a connection to every configured peer runs as its own service, after membership. A reload of `mesh.peers` swaps the allowlist,
 * the dialer's peer set and the failure detector's member list, then closes connections to
 * peers no longer listed (in that order: no removed peer is reported failing on the way out).
 */
import { peerIdFromString } from '@libp2p/peer-id'
import type { Startable } from '../startable.ts'
import type { Dialer } from './dialer.ts'
import type { MeshNode } from './node.ts'

/** The slice of the config the mesh uses live (identity, listen and PSK need a restart). */
export interface MeshSettings {
  peers: Array<{ id: string, addrs: string[] }>
}

export interface MeshServiceComponents {
  node: MeshNode
  dialer: Dialer
  /** The failure detector's member list (MembershipService). */
  members?: { setPeers: (peerIds: string[]) => void }
}

export class MeshService implements Startable<MeshSettings> {
  private running = false

  constructor (private readonly components: MeshServiceComponents) {}

  get libp2p (): MeshNode['libp2p'] { return this.components.node.libp2p }

  async start (): Promise<void> {
    if (this.running) return
    this.running = true
    await this.components.node.libp2p.start()
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    await this.components.node.libp2p.stop()
  }

  async reload (next: MeshSettings, prev: MeshSettings): Promise<string[]> {
    if (JSON.stringify(next.peers) === JSON.stringify(prev.peers)) return []
    const ids = next.peers.map(p => p.id)
    const { node, dialer, members } = this.components
    node.gater.setAllowed(ids)
    dialer.setPeers(next.peers.map(p => ({ id: p.id, addrs: p.addrs })))
    members?.setPeers(ids)
    for (const conn of node.libp2p.getConnections()) if (!ids.includes(conn.remotePeer.toString())) await conn.close().catch(() => {})
    return ['mesh.peers']
  }

  /** True while at least one connection to `peerId` is open. */
  isConnected (peerId: string): boolean {
    return this.components.node.libp2p.getConnections(peerIdFromString(peerId)).length > 0
  }

  /** `direct` when any open connection to `peerId` is direct, `relayed` when all go through a relay. */
  path (peerId: string): 'direct' | 'relayed' | undefined {
    const conns = this.components.node.libp2p.getConnections(peerIdFromString(peerId))
    if (conns.length === 0) return undefined
    return conns.some(c => !c.remoteAddr.toString().includes('/p2p-circuit')) ? 'direct' : 'relayed'
  }

  listenAddrs (): string[] { return this.components.node.libp2p.getMultiaddrs().map(a => a.toString()) }
}
