/**
 * The composition root: the one place the daemon's service graph is built. Each service gets
 * only the interfaces it uses and its own slice of the config (the slice functions below), and
 * registers its own control API routes. The Daemon runs `services` in order — start in list
 * order, stop in reverse, reload each with its slice of the new and the old config.
 *
 *   status ─ mesh (libp2p) ─ membership ─ dialer ─ bandwidth ─ replication ─ watchdog
 *          ─ ownership store ─ ownership ─ test failover ─ ownership control ─ ownership host
 *          ─ event feeder ─ mesh status ─ dashboard ─ alerts (reads status, membership, ownership, watchdog) ─ control API (last: a token on disk means "ready")
 *   (the event journal starts right after status, so it holds its history before anything feeds it)
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
import { relayListenAddrs, peerDialAddrs } from './mesh/relay-addrs.ts'
import { MeshService, type MeshSettings } from './mesh/service.ts'
import { MembershipService } from './membership/service.ts'
import { ApiServer } from './api/server.ts'
import { tokenPathFor } from './api/client.ts'
import { BandwidthService, type BandwidthSettings } from './bandwidth/service.ts'
import { createMetrics, type VmeshMetrics } from './metrics/registry.ts'
import { levelMemoryBytes } from '../storage/manifest/db.ts'
import { ReplicationService, type ReplicationSettings } from './replication/service.ts'
import { ReplicationOwnershipHost, type OwnershipHostSettings } from './replication/ownership-host.ts'
import { createDriver } from './hypervisor/index.ts'
import { HypervDriver } from './hypervisor/hyperv.ts'
import type { HypervisorDriver } from './hypervisor/driver.ts'
import { Watchdog } from './watchdog/client.ts'
import { OwnershipService } from './ownership/service.ts'
import { OwnershipControl, type OwnershipControlSettings } from './ownership/control.ts'
import { homeVmSpec } from './ownership/spec.ts'
import { SiteFailover } from './ownership/site.ts'
import { TestFailoverService } from './test-failover/service.ts'
import { NodeStatusService, type NodeStatusSettings } from './node-status.ts'
import { EventJournal } from './events/journal.ts'
import { EventFeeder } from './events/feeder.ts'
import { registerEventRoutes } from './events/api.ts'
import { MeshStatusService } from './dashboard/mesh-status.ts'
import { DashboardService } from './dashboard/service.ts'
import { AlertService, type AlertSettings } from './alerts/service.ts'
import { loadAlertSecrets } from '../config/load.ts'

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
  /** The event history (deaths, elections, failovers, fences, verify results): dashboard and alerts read it. */
  journal: EventJournal
  meshStatus: MeshStatusService
  dashboard: DashboardService
  alerts: AlertService
  /** Start order; stopped in reverse. */
  services: ServiceEntry[]
}

// ── config slices ────────────────────────────────────────────────────────────────────────

export function meshSettings (config: Config): MeshSettings {
  const relays = relaysOf(config)
  // a reload may change peers and their addresses; the relays themselves (listen, services) need a restart
  return { peers: config.mesh.peers.map(p => ({ id: p.id, addrs: peerDialAddrs(p, relays) })) }
}

/** The peers named in `mesh.relay.via`, in that order. */
function relaysOf (config: Config): Config['mesh']['peers'] {
  return config.mesh.relay.via.map(n => config.mesh.peers.find(p => p.name === n)).filter(p => p !== undefined)
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
  return { nodeName: config.node.name, dataDir: config.node.dataDir, peers: config.mesh.peers.map(p => ({ name: p.name, id: p.id })), vms: config.vms, scan: config.scan, contentIndex: config.contentIndex, hypervisorDriver: config.hypervisor.driver }
}

export function ownershipHostSettings (config: Config): OwnershipHostSettings {
  return { node: config.node.name, runDir: join(config.node.dataDir, 'run'), vms: config.vms, hostPeers: config.mesh.peers.filter(p => p.role !== 'witness').map(p => p.name) }
}

export function ownershipControlSettings (config: Config): OwnershipControlSettings {
  return { node: config.node.name, vms: config.vms }
}

/** peer ID → node name, for events that name members. */
export function peerNames (config: Config): Record<string, string> {
  return Object.fromEntries(config.mesh.peers.map(p => [p.id, p.name]))
}

export function nodeStatusSettings (config: Config, peerId: string): NodeStatusSettings {
  return {
    node: { name: config.node.name, peerId, role: config.node.role },
    profile: config.mesh.profile,
    peers: config.mesh.peers.map(p => ({ name: p.name, id: p.id, role: p.role }))
  }
}

export function alertSettings (config: Config, secrets: Record<string, string>): AlertSettings {
  return { node: { name: config.node.name, role: config.node.role, dataDir: config.node.dataDir }, vms: config.vms.map(v => ({ name: v.name, rpoMs: v.rpoMs })), alerts: config.alerts, secrets }
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
  const relays = relaysOf(config)
  const node = await createMeshNode({
    privateKey: secrets.privateKey,
    listen: [...config.node.listen, ...relayListenAddrs(relays)],
    allowedPeerIds: peerIds,
    relay: {
      serve: config.mesh.relay.serve,
      client: relays.length > 0,
      holePunch: config.mesh.relay.holePunch,
      maxReservations: Math.max(1, config.mesh.peers.length)
    },
    ...(secrets.psk !== undefined ? { psk: secrets.psk } : {}),
    onDenied: (peer, direction) => { meshLog.warn({ peer, direction }, 'connection from a peer not in mesh.peers refused') }
  })
  const dialer = new Dialer({ libp2p: node.libp2p, clock, random, log: (msg, fields) => { meshLog.debug(fields ?? {}, msg) } }, {
    peers: meshSettings(config).peers,
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

  // the hypervisor driver (hosts only) comes first: `changeSource: rct` VMs capture through it
  const driver = config.node.role === 'host' ? createDriver(config.hypervisor, { cwd: config.dir, stateDir: join(dataDir, 'hypervisor'), clock }) : undefined
  const replication = new ReplicationService({ clock, log: log.child({ svc: 'replication' }), libp2p: node.libp2p, bandwidth, metrics, api, ...(driver instanceof HypervDriver ? { hyperv: driver } : {}) }, replicationSettings(config))

  // failover: the watchdog process (hosts only), the durable record store and the election,
  // with replication behind the ownership host
  const ownershipLog = log.child({ svc: 'ownership' })
  const watchdog = driver !== undefined
    ? new Watchdog({ clock, log: ownershipLog.child({ svc: 'watchdog' }), fenceAction: async (vm) => await driver.fenceAction(vm) }, { logFile: join(dataDir, 'watchdog.log'), stateFile: join(dataDir, 'watchdog-state.json') })
    : undefined
  const ownershipDb = new Level<string, string>(join(dataDir, 'ownership'), { valueEncoding: 'utf8' })
  metrics.storage.watchDb('ownership', () => levelMemoryBytes(ownershipDb))
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
    vms: config.vms.map(v => homeVmSpec(v, config.node.name)),
    timing: ownershipTiming(config.ownership),
    maxConcurrentStarts: config.ownership.maxConcurrentStarts,
    ...(config.node.capacity !== undefined ? { capacity: config.node.capacity } : {})
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

  // site failover and drills (POST /v1/failover/site): routes only, nothing to start
  new SiteFailover({ clock, log: ownershipLog, ownership, points: async (vm) => await replication.points(vm), tests, api }, { // eslint-disable-line no-new
    self: config.node.name,
    sites: Object.fromEntries([[config.node.name, config.node.site], ...config.mesh.peers.map(p => [p.name, p.site])].filter((e): e is [string, string] => e[1] !== undefined))
  })

  const status = new NodeStatusService({ clock, membership, mesh, replication, ownership, tests, metrics, api }, nodeStatusSettings(config, peerId))

  // the event history, mesh-wide status and the web dashboard (daemon/events, daemon/dashboard)
  const journal = new EventJournal({ clock, log: log.child({ svc: 'events' }) }, { node: config.node.name, path: join(dataDir, 'events.jsonl') })
  registerEventRoutes(api, journal)
  const feeder = new EventFeeder({ clock, journal, membership, ownership, replication }, { names: peerNames(config) })
  const meshStatusSettings = (c: Config): ConstructorParameters<typeof MeshStatusService>[1] => ({ node: c.node.name, role: c.node.role, peers: c.mesh.peers.map(p => ({ name: p.name, id: p.id, role: p.role })) })
  const meshStatus = new MeshStatusService({ clock, log: log.child({ svc: 'mesh-status' }), libp2p: node.libp2p, status, membership, api, requestDial }, meshStatusSettings(config))
  const dashboard = new DashboardService({ clock, log: log.child({ svc: 'dashboard' }), api, status, meshStatus, journal }, {
    apiHost: config.node.api.host,
    ...config.dashboard.listen !== undefined ? { listen: config.dashboard.listen } : {},
    ...config.dashboard.tls !== undefined ? { tls: config.dashboard.tls } : {},
    ...config.dashboard.publicUrl !== undefined ? { publicUrl: config.dashboard.publicUrl } : {},
    loginTtlMs: config.dashboard.loginTtlMs,
    sessionTtlMs: config.dashboard.sessionTtlMs
  })
  // alerts read the other services' views; a reload re-reads the sinks' secret files
  let alertSecrets = secrets.alerts ?? {}
  const alerts = new AlertService({ clock, random, log: log.child({ svc: 'alerts' }), status, membership, ownership, journal, ...(watchdog !== undefined ? { watchdog } : {}), api }, alertSettings(config, alertSecrets))
  const alertsEntry: ServiceEntry = {
    name: 'alerts',
    service: alerts,
    reload: async (n, p) => {
      const prevSecrets = alertSecrets
      alertSecrets = await loadAlertSecrets(n.alerts)
      return await alerts.reload(alertSettings(n, alertSecrets), alertSettings(p, prevSecrets))
    }
  }

  const services: ServiceEntry[] = [
    { name: 'status', service: status, reload: (n, p) => status.reload(nodeStatusSettings(n, peerId), nodeStatusSettings(p, peerId)) },
    { name: 'events', service: journal },
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
    { name: 'event-feeder', service: feeder, reload: (n) => { feeder.setNames(peerNames(n)); return [] } },
    { name: 'mesh-status', service: meshStatus, reload: (n, p) => meshStatus.reload(meshStatusSettings(n), meshStatusSettings(p)) },
    { name: 'dashboard', service: dashboard },
    alertsEntry,
    { name: 'api', service: api }
  ]
  return { clock, random, log, mesh, membership, api, bandwidth, metrics, replication, ...(driver !== undefined ? { driver } : {}), ...(watchdog !== undefined ? { watchdog } : {}), ownership, ownershipHost, tests, status, journal, meshStatus, dashboard, alerts, services }
}
