/**
 * The vmesh daemon: loads nothing itself (the CLI hands it a validated config), wires the
 * components, starts them in order (API last, so a token on disk means "ready"), serves
 * status, and stops everything in reverse on SIGTERM/SIGINT.
 */
import { mkdir } from 'node:fs/promises'
import type { LoadedConfig } from '../config/load.ts'
import { systemClock, type Clock } from '../common/clock.ts'
import { systemRandom, type Random } from '../common/random.ts'
import type { Logger } from './log.ts'
import { createComponents, type Components } from './components.ts'
import type { StatusDocument, MemberStatus } from './status.ts'
import { peerIdFromString } from '@libp2p/peer-id'

export interface DaemonOptions {
  log: Logger
  clock?: Clock
  random?: Random
}

export class Daemon {
  private c?: Components
  private readonly clock: Clock
  private readonly random: Random
  private startedAt = 0
  private stopping?: Promise<void>

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
    c.api.route('GET', '/v1/status', () => this.status())
    c.api.route('GET', '/v1/health', () => ({ ok: true }))
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
      c.dialer.stop()
      await c.membership.stop()
      await c.mesh.libp2p.stop()
      this.c = undefined
      this.opts.log.info('vmesh daemon stopped')
    })()
    await this.stopping
    this.stopping = undefined
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
      vms: []
    }
  }
}
