/**
 * The vmesh daemon: loads nothing itself (the CLI hands it a validated config), wires the
 * components, starts them in order (API last, so a token on disk means "ready"), serves
 * status, and stops everything in reverse on SIGTERM/SIGINT.
 */
import { mkdir } from 'node:fs/promises'
import { loadConfig, type LoadedConfig } from '../config/load.ts'
import { systemClock, type Clock } from '../common/clock.ts'
import { systemRandom, type Random } from '../common/random.ts'
import type { Logger } from './log.ts'
import { createComponents, bandwidthSettings, type Components } from './components.ts'
import type { StatusDocument, MemberStatus } from './status.ts'
import { peerIdFromString } from '@libp2p/peer-id'
import { registerReplicationRoutes } from './replication/api.ts'
import { createOwnership, type OwnershipParts } from './ownership/wiring.ts'
import { TestFailoverService, registerTestFailoverRoutes, TEST_FAILOVER_CLIENT_ERROR_CODES } from './ownership/test-failover.ts'
import { ReplicationOwnershipHost } from './ownership/host.ts'
import { BadRequestError } from './api/errors.ts'
import type { VmStatus } from './status.ts'

export interface DaemonOptions {
  log: Logger
  clock?: Clock
  random?: Random
  /** Called on `POST /v1/stop` (`vmesh stop`: how a Windows daemon, which gets no SIGTERM, is stopped). */
  onStopRequested?: () => void
}

export class Daemon {
  private c?: Components
  private ownership?: OwnershipParts
  private ownershipHost?: ReplicationOwnershipHost
  private tests?: TestFailoverService
  private readonly clock: Clock
  private readonly random: Random
  private startedAt = 0
  private stopping?: Promise<void>
  private replicationReload = false

  constructor (private loaded: LoadedConfig, private readonly opts: DaemonOptions) {
    this.clock = opts.clock ?? systemClock
    this.random = opts.random ?? systemRandom()
  }

  get components (): Components | undefined { return this.c }

  async start (): Promise<void> {
    if (this.c !== undefined) return
    const { config } = this.loaded
    await mkdir(config.node.dataDir, { recursive: true, mode: 0o700 })
    const c = await createComponents(this.loaded, { clock: this.clock, random: this.random, log: this.opts.log })
    this.c = c
    this.startedAt = this.clock.now()
    await c.mesh.libp2p.start()
    await c.membership.start()
    c.dialer.start()
    await c.bandwidth.start()
    c.metrics.bandwidth.setLimit(c.bandwidth.currentLimit())
    c.bandwidth.onLimitChange((ch) => { c.metrics.bandwidth.setLimit(ch.limitBytesPerSec) })
    await c.replication.start()
    if (!this.replicationReload) {
      this.replicationReload = true
      this.onReload(async (next, prev) => {
        const cc = this.c
        if (cc === undefined) return []
        const applied: string[] = []
        const a = bandwidthSettings(next)
        const b = bandwidthSettings(prev)
        if (JSON.stringify(a) !== JSON.stringify(b)) {
          cc.bandwidth.reload(a)
          cc.metrics.bandwidth.setLimit(cc.bandwidth.currentLimit())
          // reported only when a limit changed (a peer or VM without one changes nothing)
          const limits = (x: typeof a): string => JSON.stringify([x.bandwidth, x.peers.filter(p => p.limitBytesPerSec !== undefined), (x.vms ?? []).filter(v => v.limitBytesPerSec !== undefined)])
          if (limits(a) !== limits(b)) applied.push('bandwidth')
        }
        return [...applied, ...await cc.replication.reload(next)]
      })
    }
    registerReplicationRoutes(c.api, c.replication)
    await this.startOwnership(c)
    c.api.rawRoute('GET', '/metrics', async (_req, res) => {
      c.replication.vmStatus() // refreshes the per-target gauges (lag ages with time)
      const text = await c.metrics.text()
      res.writeHead(200, { 'content-type': c.metrics.contentType, 'content-length': Buffer.byteLength(text) })
      res.end(text)
    })
    c.api.route('GET', '/v1/status', () => this.status())
    c.api.route('GET', '/v1/health', () => ({ ok: true }))
    c.api.route('POST', '/v1/reload', async () => await this.reload())
    const onStop = this.opts.onStopRequested
    if (onStop !== undefined) c.api.route('POST', '/v1/stop', () => { setImmediate(onStop); return { stopping: true } })
    await c.api.start()
    this.opts.log.info({
      peerId: this.loaded.secrets.peerId.toString(),
      listen: c.mesh.libp2p.getMultiaddrs().map(a => a.toString()),
      api: c.api.address,
      role: config.node.role,
      peers: config.mesh.peers.length,
      profile: config.mesh.profile
    }, 'vmesh daemon started')
  }

  async stop (): Promise<void> {
    if (this.stopping !== undefined) return await this.stopping
    const c = this.c
    if (c === undefined) return
    this.stopping = (async () => {
      await c.api.stop()
      this.ownershipHost?.stopReporting()
      await this.tests?.stop()
      this.tests = undefined
      await this.ownership?.stop()
      this.ownership = undefined
      await c.replication.stop()
      await c.bandwidth.stop()
      c.dialer.stop()
      await c.membership.stop()
      await c.mesh.libp2p.stop()
      this.c = undefined
      this.opts.log.info('vmesh daemon stopped')
    })()
    await this.stopping
    this.stopping = undefined
  }

  /**
   * Re-reads the config file and applies what can change live: the allowlist (gater, dialer,
   * detector), log level, and (through listeners) bandwidth and VM policy. Identity, listen
   * addresses, API address, dataDir, role and PSK need a restart; they are reported, not applied.
   * An invalid file changes nothing.
   */
  async reload (): Promise<{ applied: string[], restartRequired: string[] }> {
    const c = this.c
    if (c === undefined) throw new Error('daemon not running')
    const next = await loadConfig(this.loaded.config.file)
    const prev = this.loaded.config
    const cfg = next.config
    const restartRequired: string[] = []
    const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b)
    if (next.secrets.peerId.toString() !== this.loaded.secrets.peerId.toString()) restartRequired.push('node.identity')
    for (const k of ['name', 'listen', 'dataDir', 'api', 'role'] as const) if (!same(prev.node[k], cfg.node[k])) restartRequired.push(`node.${k}`)
    if (!same(prev.mesh.pskPath, cfg.mesh.pskPath) || !same(this.loaded.secrets.psk, next.secrets.psk)) restartRequired.push('mesh.psk')
    if (!same(prev.mesh.detector, cfg.mesh.detector)) restartRequired.push('mesh.detector')
    const applied: string[] = []
    if (!same(prev.mesh.peers, cfg.mesh.peers)) {
      const ids = cfg.mesh.peers.map(p => p.id)
      c.mesh.gater.setAllowed(ids)
      c.dialer.setPeers(cfg.mesh.peers.map(p => ({ id: p.id, addrs: p.addrs })))
      c.membership.setPeers(ids)
      for (const conn of c.mesh.libp2p.getConnections()) if (!ids.includes(conn.remotePeer.toString())) await conn.close().catch(() => {})
      applied.push('mesh.peers')
    }
    if (prev.log.level !== cfg.log.level) { this.opts.log.level = cfg.log.level; applied.push('log.level') }
    // keep the secrets we run with; adopt the rest
    this.loaded = { config: cfg, secrets: this.loaded.secrets }
    for (const l of this.reloadListeners) applied.push(...await l(cfg, prev))
    this.opts.log.info({ applied, restartRequired }, 'config reloaded')
    return { applied, restartRequired }
  }

  private readonly reloadListeners: Array<(next: LoadedConfig['config'], prev: LoadedConfig['config']) => Promise<string[]>> = []

  /** Services that can apply config changes live register here. */
  onReload (fn: (next: LoadedConfig['config'], prev: LoadedConfig['config']) => Promise<string[]>): void { this.reloadListeners.push(fn) }

  /**
   * Failover: the hypervisor driver, the watchdog process and the lease/election machine. The
   * failure detector feeds it member states; replication feeds it replica generations and
   * follows it (a home node stops sourcing a VM it no longer owns).
   */
  private async startOwnership (c: Components): Promise<void> {
    const host = new ReplicationOwnershipHost({ config: () => this.loaded.config, replication: c.replication, clock: this.clock, log: this.opts.log.child({ svc: 'ownership' }) })
    const parts = createOwnership(this.loaded.config, { clock: this.clock, random: this.random, log: this.opts.log, libp2p: c.mesh.libp2p, requestDial: (id) => { c.dialer.nudge(id) } }, host)
    this.ownership = parts
    this.ownershipHost = host
    host.setSpecSource((vm) => parts.service.specOf(vm))
    await parts.start()
    const tests = new TestFailoverService({ clock: this.clock, log: this.opts.log.child({ svc: 'test-failover' }), replication: c.replication, runsHere: (vm) => parts.service.isRunningHere(vm), ...(parts.driver !== undefined ? { driver: parts.driver } : {}) }, { dataDir: this.loaded.config.node.dataDir, node: this.loaded.config.node.name })
    await tests.start()
    this.tests = tests
    registerTestFailoverRoutes(c.api, tests)
    c.api.clientErrors(['ERR_FAILOVER_REFUSED', ...TEST_FAILOVER_CLIENT_ERROR_CODES])
    for (const m of c.membership.members()) parts.service.memberChanged(m.id, m.state)
    c.membership.onMember((e) => { parts.service.memberChanged(e.id, e.state) })
    host.startReporting((vm, gen) => { parts.service.replicaApplied(vm, gen) })
    c.api.route('POST', '/v1/failover', async (req) => {
      const b = req.body as { vm?: unknown, to?: unknown, force?: unknown, planned?: unknown, point?: unknown }
      if (typeof b.vm !== 'string' || b.vm === '') throw new BadRequestError('vm is required')
      if (b.to !== undefined && typeof b.to !== 'string') throw new BadRequestError('to must be a node name')
      if (b.point !== undefined && (typeof b.point !== 'string' || !/^[0-9]{1,15}$/.test(b.point))) throw new BadRequestError('point must be a recovery point ID (see vmesh points VM)')
      if (b.planned === true) {
        if (typeof b.to !== 'string') throw new BadRequestError('a planned failover needs "to"')
        if (b.point !== undefined) throw new BadRequestError('a planned failover ships the final generation; it takes no point')
        await parts.service.plannedFailover(b.vm, b.to)
      } else {
        if (typeof b.point === 'string') {
          const pts = await c.replication.points(b.vm)
          if (!pts.replicas.some(r => r.points.some(p => p.id === b.point))) throw new BadRequestError(`no recovery point ${b.point} of ${b.vm} on this node (see vmesh points ${b.vm})`)
        }
        await parts.service.operatorFailover(b.vm, { ...(typeof b.to === 'string' ? { to: b.to } : {}), force: b.force === true, ...(typeof b.point === 'string' ? { point: b.point } : {}) })
      }
      return { accepted: true }
    })
    this.onReload(async (next, prev) => {
      const added = next.vms.filter(v => !prev.vms.some(p => p.name === v.name))
      for (const v of added) parts.service.addHomeVm({ name: v.name, home: next.node.name, replicateTo: v.replicateTo, failover: v.failover, startOrder: v.startOrder, priority: v.priority })
      // replication sources what this node owns: a VM added here is owned here from epoch 0
      host.refreshSources()
      return added.length > 0 ? ['ownership.vms'] : []
    })
    c.api.route('GET', '/v1/ownership', () => ({ vms: parts.service.status(), timeline: parts.service.timeline, stats: parts.service.stats }))
  }

  /** Replication's per-VM view with ownership's owner, epoch and runningHere laid over it. */
  private vmStatus (): VmStatus[] {
    const c = this.c
    if (c === undefined) return []
    const list = c.replication.vmStatus()
    const own = this.ownership?.service
    if (own === undefined) return list
    const byName = new Map(list.map(v => [v.name, v]))
    for (const o of own.status()) {
      let v = byName.get(o.vm)
      if (v === undefined) {
        v = { name: o.vm, owner: null, epoch: 0, runningHere: false, generation: 0, targets: [], replica: null }
        list.push(v)
        byName.set(o.vm, v)
      }
      v.owner = o.owner === '' ? null : o.owner
      v.epoch = o.epoch
      v.runningHere = own.isRunningHere(o.vm) && o.ownedHere
    }
    return list
  }

  status (): StatusDocument {
    const { config, secrets } = this.loaded
    const c = this.c
    const now = this.clock.now()
    const byId = new Map((c?.membership.members() ?? []).map(m => [m.id, m]))
    const members: MemberStatus[] = config.mesh.peers.map(p => {
      const m = byId.get(p.id)
      return {
        name: p.name,
        peerId: p.id,
        role: p.role,
        state: m?.state ?? 'dead',
        incarnation: m?.incarnation ?? 0,
        sinceMs: m === undefined ? 0 : Math.max(0, Math.round(now - m.sinceMs)),
        everSeen: m?.everSeen ?? false,
        connected: c !== undefined && c.mesh.libp2p.getConnections(peerIdFromString(p.id)).length > 0
      }
    })
    const self = c?.membership.self()
    return {
      node: {
        name: config.node.name,
        peerId: secrets.peerId.toString(),
        role: config.node.role,
        ...(self !== undefined ? { incarnation: self.incarnation, awareness: self.awareness } : {}),
        uptimeMs: Math.round(now - this.startedAt),
        profile: config.mesh.profile
      },
      members,
      vms: this.vmStatus(),
      tests: this.tests?.snapshot() ?? []
    }
  }
}
