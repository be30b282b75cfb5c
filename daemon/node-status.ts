/**
 * The node's status surface: `GET /v1/status` (the `vmesh status --json` document, README
 * "vmesh status --json"), `GET /v1/health` and `GET /metrics`. It only reads the other
 * services' views: members from the failure detector, per-VM replication state with
 * ownership's owner, epoch and runningHere laid over it, and the test failovers held here.
 */
import type { Clock } from '../common/clock.ts'
import type { RouteRegistry } from './api/routes.ts'
import type { VmeshMetrics } from './metrics/registry.ts'
import type { Startable } from './startable.ts'
import type { MemberStatus, OperationStatus, StatusDocument, VmStatus } from './status.ts'
import type { TestFailoverRecord } from './test-failover/types.ts'
import type { ProbeRttView } from './membership/probe-rtt.ts'

export interface NodeStatusComponents {
  clock: Clock
  membership: {
    members: () => Array<{ id: string, state: 'alive' | 'suspect' | 'dead', incarnation: number, sinceMs: number, everSeen: boolean, probeRtt?: ProbeRttView }>
    self: () => { incarnation: number, awareness: number } | undefined
  }
  mesh: { isConnected: (peerId: string) => boolean, path?: (peerId: string) => 'direct' | 'relayed' | undefined }
  replication: { vmStatus: () => VmStatus[], operationStatus?: () => OperationStatus[] }
  ownership?: {
    status: () => Array<{ vm: string, owner: string, epoch: number, ownedHere: boolean, placement?: 'placed' | 'reserved' | 'no-room' | null, waitingFor?: string[] }>
    isRunningHere: (vm: string) => boolean
  }
  tests?: { snapshot: () => TestFailoverRecord[] }
  metrics: VmeshMetrics
  api: Pick<RouteRegistry, 'route' | 'rawRoute'>
}

/** The slice of the config the status shows. */
export interface NodeStatusSettings {
  node: { name: string, peerId: string, role: 'host' | 'witness' }
  profile: string
  peers: Array<{ name: string, id: string, role: 'host' | 'witness' }>
}

export class NodeStatusService implements Startable<NodeStatusSettings> {
  private settings: NodeStatusSettings
  private startedAt: number

  constructor (private readonly components: NodeStatusComponents, init: NodeStatusSettings) {
    this.settings = init
    this.startedAt = components.clock.now()
    const { api, metrics, replication } = components
    api.rawRoute('GET', '/metrics', async (_req, res) => {
      replication.vmStatus() // refreshes the per-target gauges (lag ages with time)
      const text = await metrics.text()
      res.writeHead(200, { 'content-type': metrics.contentType, 'content-length': Buffer.byteLength(text) })
      res.end(text)
    })
    api.route('GET', '/v1/status', () => this.status())
    api.route('GET', '/v1/health', () => ({ ok: true }))
  }

  /** Uptime counts from here (the daemon starts this first of the services it reports on). */
  start (): void { this.startedAt = this.components.clock.now() }
  stop (): void {}

  reload (next: NodeStatusSettings, _prev?: NodeStatusSettings): string[] {
    this.settings = next
    return []
  }

  status (): StatusDocument {
    const { clock, membership, mesh, tests } = this.components
    const { node, peers, profile } = this.settings
    const now = clock.now()
    const byId = new Map(membership.members().map(m => [m.id, m]))
    const members: MemberStatus[] = peers.map(p => {
      const m = byId.get(p.id)
      return {
        name: p.name,
        peerId: p.id,
        role: p.role,
        state: m?.state ?? 'dead',
        incarnation: m?.incarnation ?? 0,
        sinceMs: m === undefined ? 0 : Math.max(0, Math.round(now - m.sinceMs)),
        everSeen: m?.everSeen ?? false,
        connected: mesh.isConnected(p.id),
        ...(m?.probeRtt !== undefined ? { probeRtt: m.probeRtt } : {}),
        ...(mesh.path?.(p.id) !== undefined ? { path: mesh.path(p.id) } : {})
      }
    })
    const self = membership.self()
    return {
      node: {
        ...node,
        ...(self !== undefined ? { incarnation: self.incarnation, awareness: self.awareness } : {}),
        uptimeMs: Math.round(now - this.startedAt),
        profile
      },
      members,
      vms: this.vmStatus(),
      tests: tests?.snapshot() ?? [],
      operations: this.components.replication.operationStatus?.() ?? []
    }
  }

  /** Replication's per-VM view with ownership's owner, epoch and runningHere laid over it. */
  private vmStatus (): VmStatus[] {
    const list = this.components.replication.vmStatus()
    const own = this.components.ownership
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
      if (o.placement === 'no-room') v.placement = 'no-room'
      if (o.waitingFor !== undefined && o.waitingFor.length > 0) v.waitingFor = o.waitingFor
    }
    return list
  }
}
