/**
 * The composition root: the one place the daemon's service graph is built. Each service gets
 * only the interfaces it uses and its own slice of the config (the slice functions below), and
 * registers its own control API routes. The Daemon runs `services` in order — start in list
 * order, stop in reverse, reload each with its slice of the new and the old config.
 *
 *   status ─ mesh (libp2p) ─ membership ─ dialer ─ bandwidth ─ replication ─ watchdog
 *          ─ ownership store ─ ownership ─ test failover ─ ownership control ─ ownership host
 *          ─ control API (last: a token on disk means "ready")
 *
 * Ownership and replication meet at two interfaces: ownership calls its OwnershipHost
 * (replication/ownership-host.ts), which uses replication only through the ReplicaSeam and
 * reports replica generations back to ownership as they change.
 */
import { join } from 'node:path'
import { Level } from 'level'
import type { Config, LoadedConfig } from '../config/load.ts'
import { ownershipTiming } from '../config/profiles.ts'
import type { Clock } from '../common/clock.ts'
import type { Random } from '../common/random.ts'
import type { Logger } from './log.ts'
import type { Startable } from './startable.ts'
import { createMeshNode } from './mesh/node.ts'
import { Dialer } from './mesh/dialer.ts'
import { MeshService, type MeshSettings } from './mesh/service.ts'
import { MembershipService } from './membership/service.ts'
import { ApiServer } from './api/server.ts'
import { tokenPathFor } from './api/client.ts'
import { BandwidthService, type BandwidthSettings } from './bandwidth/service.ts'
import { createMetrics, type VmeshMetrics } from './metrics/registry.ts'
import { ReplicationService, type ReplicationSettings } from './replication/service.ts'
import { ReplicationOwnershipHost, type OwnershipHostSettings } from './replication/ownership-host.ts'
import { createDriver } from './hypervisor/index.ts'
import type { HypervisorDriver } from './hypervisor/driver.ts'
import { Watchdog } from './watchdog/client.ts'
import { OwnershipService } from './ownership/service.ts'
import { OwnershipControl, type OwnershipControlSettings } from './ownership/control.ts'
import { TestFailoverService } from './test-failover/service.ts'
import { NodeStatusService, type NodeStatusSettings } from './node-status.ts'

/** One service in the run list, with how it reloads from a whole config (its slice, new and old). */
export interface ServiceEntry {
  name: string
  service: Startable<never>
  reload?: (next: Config, prev: Config) => Promise<string[]> | string[]
}

export interface Components {
  clock: Clock
  random: Random
  log: Logger
  mesh: MeshService
  membership: MembershipService
  api: ApiServer
  bandwidth: BandwidthService
  metrics: VmeshMetrics
  replication: ReplicationService
  driver?: HypervisorDriver
  watchdog?: Watchdog
  ownership: OwnershipService
  ownershipHost: ReplicationOwnershipHost
  tests: TestFailoverService
  status: NodeStatusService
  /** Start order; stopped in reverse. */
  services: ServiceEntry[]
}

// ── config slices ────────────────────────────────────────────────────────────────────────

export function meshSettings (config: Config): MeshSettings {
  return { peers: config.mesh.peers }
}

/** The bandwidth service's view of the config (node limit and schedule, peer and VM limits). */
export function bandwidthSettings (config: Config): BandwidthSettings {
  return {
    bandwidth: config.bandwidth,
    peers: config.mesh.peers.map(p => ({ name: p.name, ...(p.limitBytesPerSec !== undefined ? { limitBytesPerSec: p.limitBytesPerSec } : {}) })),
    vms: config.vms.map(v => ({ name: v.name, ...(v.limitBytesPerSec !== undefined ? { limitBytesPerSec: v.limitBytesPerSec } : {}) }))
  }
}

export function replicationSettings (config: Config): ReplicationSettings {
  return { nodeName: config.node.name, dataDir: config.node.dataDir, peers: config.mesh.peers.map(p => ({ name: p.name, id: p.id })), vms: config.vms, scan: config.scan, hypervisorDriver: config.hypervisor.driver }
}

export function ownershipHostSettings (config: Config): OwnershipHostSettings {
  return { node: config.node.name, runDir: join(config.node.dataDir, 'run'), vms: config.vms, hostPeers: config.mesh.peers.filter(p => p.role !== 'witness').map(p => p.name) }
}

export function ownershipControlSettings (config: Config): OwnershipControlSettings {
  return { node: config.node.name, vms: config.vms }
}

export function nodeStatusSettings (config: Config, peerId: string): NodeStatusSettings {
  return {
    node: { name: config.node.name, peerId, role: config.node.role },
    profile: config.mesh.profile,
    peers: config.mesh.peers.map(p => ({ name: p.name, id: p.id, role: p.role }))
  }
}

// ── the graph ────────────────────────────────────────────────────────────────────────────

export async function createComponents (loaded: LoadedConfig, base: { clock: Clock, random: Random, log: Logger }): Promise<Components> {
  const { config, secrets } = loaded
  const { clock, random, log } = base
  const peerIds = config.mesh.peers.map(p => p.id)
  const peerId = secrets.peerId.toString()
  const dataDir = config.node.dataDir

  const api = new ApiServer({ log: log.child({ svc: 'api' }) }, { host: config.node.api.host, port: config.node.api.port, tokenPath: tokenPathFor(config) })
  const metrics = createMetrics({ labels: { node: config.node.name } })

  const meshLog = log.child({ svc: 'mesh' })
  const node = await createMeshNode({
    privateKey: secrets.privateKey,
    listen: config.node.listen,
    allowedPeerIds: peerIds,
    ...(secrets.psk !== undefined ? { psk: secrets.psk } : {}),
    onDenied: (peer, direction) => { meshLog.warn({ peer, direction }, 'connection from a peer not in mesh.peers refused') }
  })
  const dialer = new Dialer({ libp2p: node.libp2p, clock, random, log: (msg, fields) => { meshLog.debug(fields ?? {}, msg) } }, {
    peers: config.mesh.peers.map(p => ({ id: p.id, addrs: p.addrs })),
    minBackoffMs: config.mesh.dialBackoffMinMs,
    maxBackoffMs: config.mesh.dialBackoffMaxMs
  })
  const requestDial = (id: string): void => { dialer.nudge(id) }
  const membership = new MembershipService({ libp2p: node.libp2p, clock, random, log: log.child({ svc: 'membership' }), requestDial }, {
    selfId: peerId,
    peerIds,
    timings: config.mesh.detector
  })
  const mesh = new MeshService({ node, dialer, members: membership })

  const bandwidth = new BandwidthService({ clock }, bandwidthSettings(config))
  bandwidth.onLimitChange((ch) => { metrics.bandwidth.setLimit(ch.limitBytesPerSec) })
  /** The bandwidth service with the node-limit gauge kept in step (at start and on reload). */
  const bandwidthEntry: ServiceEntry = {
    name: 'bandwidth',
    service: {
      start: async () => { await bandwidth.start(); metrics.bandwidth.setLimit(bandwidth.currentLimit()) },
      stop: async () => { await bandwidth.stop() }
    },
    reload: (n, p) => {
      const a = bandwidthSettings(n)
      const b = bandwidthSettings(p)
      if (JSON.stringify(a) === JSON.stringify(b)) return []
      bandwidth.reload(a)
      metrics.bandwidth.setLimit(bandwidth.currentLimit())
      // reported only when a limit changed (a peer or VM without one changes nothing)
      const limits = (x: BandwidthSettings): string => JSON.stringify([x.bandwidth, x.peers.filter(q => q.limitBytesPerSec !== undefined), (x.vms ?? []).filter(v => v.limitBytesPerSec !== undefined)])
      return limits(a) !== limits(b) ? ['bandwidth'] : []
    }
  }

  const replication = new ReplicationService({ clock, log: log.child({ svc: 'replication' }), libp2p: node.libp2p, bandwidth, metrics, api }, replicationSettings(config))

  // failover: the hypervisor driver and the watchdog process (hosts only), the durable record
  // store and the election, with replication behind the ownership host
  const ownershipLog = log.child({ svc: 'ownership' })
  const driver = config.node.role === 'host' ? createDriver(config.hypervisor, { cwd: config.dir, stateDir: join(dataDir, 'hypervisor'), clock }) : undefined
  const watchdog = driver !== undefined
    ? new Watchdog({ clock, log: ownershipLog.child({ svc: 'watchdog' }), fenceAction: async (vm) => await driver.fenceAction(vm) }, { logFile: join(dataDir, 'watchdog.log'), stateFile: join(dataDir, 'watchdog-state.json') })
    : undefined
  const ownershipDb = new Level<string, string>(join(dataDir, 'ownership'), { valueEncoding: 'utf8' })
  const ownershipHost = new ReplicationOwnershipHost({
    log: ownershipLog,
    replication,
    // late-bound: the ownership service is built next, with this host; both are only called after start
    ownership: { replicaApplied: (vm, g) => { ownership.replicaApplied(vm, g) }, specOf: (vm) => ownership.specOf(vm) }
  }, ownershipHostSettings(config))
  const ownership: OwnershipService = new OwnershipService({
    clock,
    random,
    log: ownershipLog,
    libp2p: node.libp2p,
    db: ownershipDb,
    ...(driver !== undefined ? { driver } : {}),
    ...(watchdog !== undefined ? { watchdog } : {}),
    host: ownershipHost,
    requestDial
  }, {
    self: config.node.name,
    voters: [{ id: config.node.name, role: config.node.role }, ...config.mesh.peers.map(p => ({ id: p.name, role: p.role }))],
    peerIds: Object.fromEntries(config.mesh.peers.map(p => [p.name, p.id])),
    vms: config.vms.map(v => ({ name: v.name, home: config.node.name, replicateTo: v.replicateTo, failover: v.failover, startOrder: v.startOrder, priority: v.priority })),
    timing: ownershipTiming(config.ownership),
    maxConcurrentStarts: config.ownership.maxConcurrentStarts
  })
  const ownershipControl = new OwnershipControl({ ownership, membership, points: async (vm) => await replication.points(vm), api })

  const tests = new TestFailoverService({
    clock,
    log: log.child({ svc: 'test-failover' }),
    replication,
    runsHere: (vm) => ownership.isRunningHere(vm),
    ...(driver !== undefined ? { driver } : {}),
    api
  }, { dataDir, node: config.node.name })

  const status = new NodeStatusService({ clock, membership, mesh, replication, ownership, tests, metrics, api }, nodeStatusSettings(config, peerId))

  const services: ServiceEntry[] = [
    { name: 'status', service: status, reload: (n, p) => status.reload(nodeStatusSettings(n, peerId), nodeStatusSettings(p, peerId)) },
    { name: 'mesh', service: mesh, reload: async (n, p) => await mesh.reload(meshSettings(n), meshSettings(p)) },
    { name: 'membership', service: membership },
    { name: 'dialer', service: dialer },
    bandwidthEntry,
    { name: 'replication', service: replication, reload: async (n, p) => await replication.reload(replicationSettings(n), replicationSettings(p)) },
    ...(watchdog !== undefined ? [{ name: 'watchdog', service: watchdog }] : []),
    { name: 'ownership-store', service: { start: async () => { await ownershipDb.open() }, stop: async () => { await ownershipDb.close() } } },
    { name: 'ownership', service: ownership },
    { name: 'test-failover', service: tests },
    // member states reach the election after its records are restored, replica generations last
    { name: 'ownership-control', service: ownershipControl, reload: (n, p) => ownershipControl.reload(ownershipControlSettings(n), ownershipControlSettings(p)) },
    { name: 'ownership-host', service: ownershipHost, reload: (n, p) => ownershipHost.reload(ownershipHostSettings(n), ownershipHostSettings(p)) },
    { name: 'api', service: api }
  ]
  return { clock, random, log, mesh, membership, api, bandwidth, metrics, replication, ...(driver !== undefined ? { driver } : {}), ...(watchdog !== undefined ? { watchdog } : {}), ownership, ownershipHost, tests, status, services }
}
