/**
 * The vmesh daemon: loads nothing itself (the CLI hands it a validated config), has the
 * composition root (components.ts) build the services, starts them in its order (the control
 * API last, so a token on disk means "ready"), and stops them in reverse on SIGTERM/SIGINT.
 * `vmesh reload` re-reads the config file and hands each service its slice of the new and the
 * old config.
 */
import { mkdir } from 'node:fs/promises'
import { loadConfig, type LoadedConfig } from '../config/load.ts'
import { systemClock, type Clock } from '../common/clock.ts'
import { systemRandom, type Random } from '../common/random.ts'
import type { Logger } from './log.ts'
import { createComponents, type Components } from './components.ts'
import type { StatusDocument } from './status.ts'

export interface DaemonOptions {
  log: Logger
  clock?: Clock
  random?: Random
  /** Called on `POST /v1/stop` (`vmesh stop`: how a Windows daemon, which gets no SIGTERM, is stopped). */
  onStopRequested?: () => void
}

export class Daemon {
  private c?: Components
  /** Services whose start was called (a failed start stops these, the failing one included). */
  private started: Components['services'] = []
  private readonly clock: Clock
  private readonly random: Random
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
    c.api.route('POST', '/v1/reload', async () => await this.reload())
    const onStop = this.opts.onStopRequested
    if (onStop !== undefined) c.api.route('POST', '/v1/stop', () => { setImmediate(onStop); return { stopping: true } })
    for (const s of c.services) {
      this.started.push(s)
      await s.service.start()
    }
    this.opts.log.info({
      peerId: this.loaded.secrets.peerId.toString(),
      listen: c.mesh.listenAddrs(),
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
      for (const s of this.started.splice(0).reverse()) await s.service.stop()
      this.c = undefined
      this.opts.log.info('vmesh daemon stopped')
    })()
    await this.stopping
    this.stopping = undefined
  }

  /**
   * Re-reads the config file and applies what can change live: the allowlist (gater, dialer,
   * detector), log level, bandwidth limits, replication targets and VMs, VMs added to
   * ownership. Identity, listen addresses, API address, dataDir, role, PSK and detector timings
   * need a restart; they are reported, not applied. An invalid file changes nothing.
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
    if (!same(prev.contentIndex, cfg.contentIndex)) restartRequired.push('contentIndex')
    const applied: string[] = []
    // keep the secrets we run with; adopt the rest
    this.loaded = { config: cfg, secrets: this.loaded.secrets }
    for (const s of c.services) if (s.reload !== undefined) applied.push(...await s.reload(cfg, prev))
    if (prev.log.level !== cfg.log.level) { this.opts.log.level = cfg.log.level; applied.push('log.level') }
    this.opts.log.info({ applied, restartRequired }, 'config reloaded')
    return { applied, restartRequired }
  }

  status (): StatusDocument | undefined { return this.c?.status.status() }
}
