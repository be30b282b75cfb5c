/**
 * The one place the service graph is wired. Each service gets only the interfaces it uses;
 * the Daemon starts them in dependency order and stops them in reverse.
 */
import type { LoadedConfig } from '../config/load.ts'
import type { Clock } from '../common/clock.ts'
import type { Random } from '../common/random.ts'
import type { Logger } from './log.ts'
import { createMeshNode, type MeshNode } from './mesh/node.ts'
import { Dialer } from './mesh/dialer.ts'
import { MembershipService } from './membership/service.ts'
import { ApiServer } from './api/server.ts'
import { tokenPathFor } from './api/client.ts'
import { BandwidthService, type BandwidthSettings } from './bandwidth/service.ts'
import { createMetrics, type VmeshMetrics } from './metrics/registry.ts'
import { ReplicationService } from './replication/service.ts'

export interface Components {
  clock: Clock
  random: Random
  log: Logger
  mesh: MeshNode
  dialer: Dialer
  membership: MembershipService
  api: ApiServer
  bandwidth: BandwidthService
  metrics: VmeshMetrics
  replication: ReplicationService
}

/** The bandwidth service's view of the config (node limit and schedule, peer and VM limits). */
export function bandwidthSettings (config: LoadedConfig['config']): BandwidthSettings {
  return {
    bandwidth: config.bandwidth,
    peers: config.mesh.peers.map(p => ({ name: p.name, ...(p.limitBytesPerSec !== undefined ? { limitBytesPerSec: p.limitBytesPerSec } : {}) })),
    vms: config.vms.map(v => ({ name: v.name, ...(v.limitBytesPerSec !== undefined ? { limitBytesPerSec: v.limitBytesPerSec } : {}) }))
  }
}

export async function createComponents (loaded: LoadedConfig, base: { clock: Clock, random: Random, log: Logger }): Promise<Components> {
  const { config, secrets } = loaded
  const { clock, random, log } = base
  const peerIds = config.mesh.peers.map(p => p.id)
  const meshLog = log.child({ svc: 'mesh' })
  const mesh = await createMeshNode({
    privateKey: secrets.privateKey,
    listen: config.node.listen,
    allowedPeerIds: peerIds,
    ...(secrets.psk !== undefined ? { psk: secrets.psk } : {}),
    onDenied: (peer, direction) => { meshLog.warn({ peer, direction }, 'connection from a peer not in mesh.peers refused') }
  })
  const dialer = new Dialer({ libp2p: mesh.libp2p, clock, random, log: (msg, fields) => { meshLog.debug(fields ?? {}, msg) } }, {
    peers: config.mesh.peers.map(p => ({ id: p.id, addrs: p.addrs })),
    minBackoffMs: config.mesh.dialBackoffMinMs,
    maxBackoffMs: config.mesh.dialBackoffMaxMs
  })
  const membership = new MembershipService({ libp2p: mesh.libp2p, clock, random, log: log.child({ svc: 'membership' }), requestDial: (id) => { dialer.nudge(id) } }, {
    selfId: secrets.peerId.toString(),
    peerIds,
    timings: config.mesh.detector
  })
  const api = new ApiServer({ log: log.child({ svc: 'api' }) }, { host: config.node.api.host, port: config.node.api.port, tokenPath: tokenPathFor(config) })
  const bandwidth = new BandwidthService({ clock }, bandwidthSettings(config))
  const metrics = createMetrics({ labels: { node: config.node.name } })
  const replication = new ReplicationService({ clock, log: log.child({ svc: 'replication' }), libp2p: mesh.libp2p, bandwidth, metrics }, { config })
  return { clock, random, log, mesh, dialer, membership, api, bandwidth, metrics, replication }
}
