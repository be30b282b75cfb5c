/**
 * AlertService: the thin driver around the pure AlertEngine. It reads the daemon's own views,
 * turns them into conditions, and hands the engine's notices to one SinkQueue per sink.
 *
 *   membership.onMember ──(at once)──┐
 *   evaluate timer (evaluateIntervalMs)┴─▶ status() ─▶ members / replication conditions ─┐
 *                                        statfs(dataDir) ─▶ disk conditions ──────────────┤
 *   event journal (typed ownership facts) ─▶ failover open/clear, refused/abandoned events ─┤─▶ AlertEngine ─▶ SinkQueue × sinks
 *   watchdog.onFence ─▶ fence-fired events ─────────────────────────────────────────────────┘
 *
 * Failovers come from the event journal's election/failover events, by their typed facts
 * (`data.type`, `owner`, `forced`: daemon/events/types.ts ownershipFacts), never by their text.
 * Nothing here waits on a sink: queues take notices synchronously and deliver on their own.
 * Routes: `GET /v1/alerts` (open incidents, per-sink counters), `POST /v1/alerts/test`
 * (one test notice straight through every sink, each sink's answer returned).
 */
import { readFile, statfs } from 'node:fs/promises'
import type { Clock, TimerHandle } from '../../common/clock.ts'
import type { Random } from '../../common/random.ts'
import { errorMessage } from '../../common/errors.ts'
import type { AlertsConfig } from '../../config/schema.ts'
import type { RouteRegistry } from '../api/routes.ts'
import type { Logger } from '../log.ts'
import type { Startable } from '../startable.ts'
import type { StatusDocument } from '../status.ts'
import { ownershipFacts, type MeshEvent } from '../events/types.ts'
import { AlertEngine } from './engine.ts'
import { ReplicationWatch, diskConditions, memberConditions, meshReporter, type DiskSpace } from './conditions.ts'
import { SinkQueue, type SinkQueueStats } from './queue.ts'
import type { AlertSink } from './sink.ts'
import type { AlertNotice, Condition } from './types.ts'
import { WebhookSink } from './webhook.ts'

export interface AlertComponents {
  clock: Clock
  random: Random
  log: Logger
  status: { status: () => StatusDocument }
  membership: { onMember: (fn: () => void) => () => void }
  ownership: { status: () => Array<{ vm: string, owner: string, epoch: number }> }
  /** The node's event history, live (daemon/events/journal.ts): ownership facts arrive here. */
  journal: { on: (e: 'event', fn: (ev: MeshEvent) => void) => unknown, off: (e: 'event', fn: (ev: MeshEvent) => void) => unknown }
  watchdog?: { onFence: (fn: (r: { vm: string, ok: boolean, final: boolean, by: string, error?: { code: string, message: string } }) => void) => () => void }
  api: Pick<RouteRegistry, 'route'>
  /** Free space of the file system holding `path` (default: fs.statfs). */
  diskSpace?: (path: string) => Promise<DiskSpace>
  /** Builds a sink from its settings (default: webhook / e-mail); tests pass their own. */
  makeSink?: (s: SinkSettings, secret: string | undefined) => Promise<AlertSink>
}

export type SinkSettings = AlertsConfig['sinks'][number]

export interface AlertSettings {
  node: { name: string, role: 'host' | 'witness', dataDir: string }
  vms: Array<{ name: string, rpoMs: number }>
  alerts: AlertsConfig
  /** Per sink name: webhook secret or SMTP password (config/load.ts `secrets.alerts`). */
  secrets: Record<string, string>
}

export class AlertService implements Startable<AlertSettings> {
  private engine: AlertEngine
  private readonly watch = new ReplicationWatch()
  private queues: SinkQueue[] = []
  private timer?: TimerHandle
  private soon?: TimerHandle
  private offMember?: () => void
  private offFence?: () => void
  private running = false
  private evaluating = false
  private diskBusy = false
  private readonly lastOwner = new Map<string, string>()
  private readonly ownerBefore = new Map<string, string>()
  private sent = 0
  private readonly onJournal = (e: MeshEvent): void => {
    if (!this.running || this.settings.alerts.sinks.length === 0) return
    try { this.ownershipEvent(e) } catch (err) { this.c.log.error({ error: errorMessage(err), seq: e.seq }, 'alert evaluation of an event failed') }
  }

  constructor (private readonly c: AlertComponents, private settings: AlertSettings) {
    this.engine = this.newEngine(settings)
    c.api.route('GET', '/v1/alerts', () => ({ incidents: this.engine.incidents(), sinks: this.sinkStats(), notices: this.sent }))
    c.api.route('POST', '/v1/alerts/test', async () => await this.test())
  }

  async start (): Promise<void> {
    if (this.running) return
    this.queues = await this.buildQueues(this.settings, [])
    this.running = true
    for (const q of this.queues) q.start()
    for (const s of this.c.ownership.status()) if (s.owner !== '') this.lastOwner.set(s.vm, s.owner)
    // history from before this start is not alerted again: only events appended from now on
    this.c.journal.on('event', this.onJournal)
    this.offMember = this.c.membership.onMember(() => { this.evaluateSoon() })
    this.offFence = this.c.watchdog?.onFence((r) => {
      if (!r.ok && !r.final) return
      this.dispatch(this.engine.event(this.c.clock.now(), this.c.clock.wallNow(), r.ok
        ? { key: `fence-fired:${r.vm}`, kind: 'fence-fired', severity: 'critical', scope: 'local', vm: r.vm, summary: `${r.vm} was fenced (turned off by the ${r.by}): its lease could not be renewed`, detail: { by: r.by } }
        : { key: `fence-failed:${r.vm}`, kind: 'fence-fired', severity: 'critical', scope: 'local', vm: r.vm, summary: `${r.vm}: fencing FAILED (${r.error?.message ?? 'unknown'}); it may still run without a lease`, detail: { by: r.by, error: r.error } }))
    })
    this.arm()
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    this.c.clock.clearTimeout(this.timer)
    this.c.clock.clearTimeout(this.soon)
    this.offMember?.()
    this.offFence?.()
    this.c.journal.off('event', this.onJournal)
    await Promise.all(this.queues.map(async q => { await q.stop() }))
  }

  /** New sinks and thresholds; notices queued for a sink of the same name carry over. */
  async reload (next: AlertSettings, prev: AlertSettings): Promise<string[]> {
    this.settings = next
    if (JSON.stringify(next.alerts) === JSON.stringify(prev.alerts) && JSON.stringify(next.secrets) === JSON.stringify(prev.secrets)) return JSON.stringify(next.vms) === JSON.stringify(prev.vms) ? [] : ['alerts']
    if (!this.running) return ['alerts']
    const old = this.queues
    await Promise.all(old.map(async q => { await q.stop() }))
    this.queues = await this.buildQueues(next, old)
    for (const q of this.queues) q.start()
    this.arm()
    // the engine stays: open incidents stay open (a reload is not a recovery)
    return ['alerts']
  }

  /** Delivery counters of every sink. */
  sinkStats (): SinkQueueStats[] { return this.queues.map(q => q.stats()) }

  /** One test notice through every sink, bypassing the queues so the answer is the sink's own. */
  async test (): Promise<{ sinks: Array<{ sink: string, type: string, ok: boolean, error?: string }> }> {
    const now = this.c.clock.wallNow()
    const n: AlertNotice = { type: 'test', incident: `${this.settings.node.name}/test/${now}`, key: 'test', kind: 'test', severity: 'info', summary: `test alert from ${this.settings.node.name}`, node: this.settings.node.name, openedAtMs: now, atMs: now }
    const sinks = await Promise.all(this.settings.alerts.sinks.map(async (s) => {
      try {
        const sink = await this.makeSink(s)
        try { await sink.send(n) } finally { await sink.close?.() }
        return { sink: s.name, type: s.type, ok: true }
      } catch (err) {
        return { sink: s.name, type: s.type, ok: false, error: errorMessage(err) }
      }
    }))
    return { sinks }
  }

  private newEngine (s: AlertSettings): AlertEngine {
    return new AlertEngine({ node: s.node.name, clearAfterMs: s.alerts.clearAfterMs })
  }

  private async makeSink (s: SinkSettings): Promise<AlertSink> {
    const secret = this.settings.secrets[s.name]
    if (this.c.makeSink !== undefined) return await this.c.makeSink(s, secret)
    if (s.type === 'webhook') return new WebhookSink({ name: s.name, url: s.url, timeoutMs: s.timeoutMs, ...(secret !== undefined ? { secret } : {}) })
    const ca = s.caFile !== undefined ? await readFile(s.caFile, 'utf8') : undefined
    // loaded only where an e-mail sink is configured (nodemailer is large)
    const { EmailSink } = await import('./email.ts')
    return new EmailSink({ name: s.name, host: s.host, port: s.port, starttls: s.starttls, from: s.from, to: s.to, timeoutMs: s.timeoutMs, ...(ca !== undefined ? { ca } : {}), ...(s.user !== undefined && secret !== undefined ? { user: s.user, password: secret } : {}) })
  }

  private async buildQueues (s: AlertSettings, old: SinkQueue[]): Promise<SinkQueue[]> {
    const out: SinkQueue[] = []
    for (const sink of s.alerts.sinks) {
      const q = new SinkQueue({ clock: this.c.clock, random: this.c.random, log: this.c.log, sink: await this.makeSink(sink) }, { queueMax: sink.queueMax, retryMinMs: sink.retryMinMs, retryMaxMs: sink.retryMaxMs })
      for (const n of old.find(o => o.name === sink.name)?.pending() ?? []) q.push(n)
      out.push(q)
    }
    return out
  }

  /** Evaluates every `evaluateIntervalMs` while there is a sink to tell (none: no work at all). */
  private arm (): void {
    this.c.clock.clearTimeout(this.timer)
    this.timer = undefined
    if (this.settings.alerts.sinks.length === 0) return
    this.timer = this.c.clock.setTimeout(() => {
      if (!this.running) return
      this.evaluate()
      this.arm()
    }, this.settings.alerts.evaluateIntervalMs)
  }

  private evaluateSoon (): void {
    if (!this.running || this.soon !== undefined || this.settings.alerts.sinks.length === 0) return
    this.soon = this.c.clock.setTimeout(() => { this.soon = undefined; if (this.running) this.evaluate() }, 0)
  }

  /** Reads every view once and feeds the engine; never throws (a bad view is logged). */
  evaluate (): void {
    if (this.evaluating) return
    this.evaluating = true
    try {
      const { clock } = this.c
      const now = clock.now()
      const wall = clock.wallNow()
      const s = this.settings
      const doc = this.c.status.status()
      const reporter = (c: Condition): boolean => meshReporter({ name: s.node.name, role: s.node.role }, doc.members, c.subject) === s.node.name
      const rpo = new Map(s.vms.map(v => [v.name, v.rpoMs]))
      this.dispatch(this.engine.observe(now, wall, 'members', memberConditions(doc.members, doc.node.uptimeMs), reporter))
      this.dispatch(this.engine.observe(now, wall, 'replication', this.watch.conditions(now, doc.vms, { rpoMsOf: vm => rpo.get(vm) ?? 60_000, stalledAfterMs: s.alerts.stalledAfterMs }), reporter))
      // owners as the election knows them (a voter learns them from renewals, without a
      // timeline entry): what a later "elected here" is compared with. Not this node: its own
      // claim shows in status before its `owner` event reaches the journal, and only that event
      // may record it (it keeps the owner before us for the `elected` that follows)
      for (const o of this.c.ownership.status()) if (o.owner !== '' && o.owner !== s.node.name) this.lastOwner.set(o.vm, o.owner)
      this.checkDisk()
    } catch (err) {
      this.c.log.error({ error: errorMessage(err) }, 'alert evaluation failed')
    } finally {
      this.evaluating = false
    }
  }

  private checkDisk (): void {
    if (this.diskBusy || this.settings.node.role !== 'host') return
    this.diskBusy = true
    const path = this.settings.node.dataDir
    const read = this.c.diskSpace ?? defaultDiskSpace
    read(path).then((d) => {
      if (!this.running) return
      const a = this.settings.alerts
      this.dispatch(this.engine.observe(this.c.clock.now(), this.c.clock.wallNow(), 'disk', diskConditions(d, a.diskLowPercent, a.diskFullPercent), true))
    }, (err) => { this.c.log.warn({ path, error: errorMessage(err) }, 'free disk space unknown') }).finally(() => { this.diskBusy = false })
  }

  /** An ownership event from the journal: a failover won here opens an incident its start closes. */
  private ownershipEvent (e: MeshEvent): void {
    const f = ownershipFacts(e)
    if (f === undefined || e.vm === undefined) return
    const vm = e.vm
    const self = this.settings.node.name
    const now = this.c.clock.now()
    const wall = this.c.clock.wallNow()
    switch (f.type) {
      case 'owner':
        if (f.owner === undefined) return
        if (f.owner === self) this.ownerBefore.set(vm, this.lastOwner.get(vm) ?? '')
        this.lastOwner.set(vm, f.owner)
        return
      case 'elected': {
        const before = this.ownerBefore.get(vm) ?? ''
        // another owner before us, or none known at a later epoch (epoch 1 is the VM's first owner)
        if ((before !== '' && before !== self) || (before === '' && (e.epoch ?? 0) > 1)) {
          this.dispatch(this.engine.open(now, wall, failoverCondition(vm, before === '' ? 'its previous owner' : before, self, e.epoch, f.forced === true)))
        }
        return
      }
      case 'started':
        this.dispatch(this.engine.clear(wall, `failover:${vm}`, `failover of ${vm} done: running on ${self}${e.epoch !== undefined ? ` (epoch ${e.epoch})` : ''}`))
        return
      case 'demoted':
        this.dispatch(this.engine.clear(wall, `failover:${vm}`, `failover of ${vm} ended here: demoted; new owner ${f.owner ?? 'unknown'}`))
        return
      case 'failoverRefused':
      case 'failoverAbandoned': {
        const refused = f.type === 'failoverRefused'
        this.dispatch(this.engine.event(now, wall, { key: `${refused ? 'failover-refused' : 'failover-abandoned'}:${vm}:${e.atWallMs}`, kind: refused ? 'failover-refused' : 'failover-abandoned', severity: 'warning', scope: 'local', vm, summary: `failover of ${vm} ${refused ? 'refused' : 'abandoned'}: ${f.detail ?? 'no reason given'}`, detail: { reason: f.detail } }))
      }
    }
  }

  private dispatch (notices: AlertNotice[]): void {
    for (const n of notices) {
      this.sent++
      this.c.log.info({ alert: n.type, kind: n.kind, key: n.key, vm: n.vm, subject: n.subject, summary: n.summary }, 'alert notice')
      for (const q of this.queues) q.push(n)
    }
  }
}

function failoverCondition (vm: string, from: string, to: string, epoch: number | undefined, forced: boolean): Condition {
  return { key: `failover:${vm}`, kind: 'failover', severity: 'critical', scope: 'local', vm, subject: to, summary: `failover of ${vm} started: ${from} → ${to}${epoch !== undefined ? ` (epoch ${epoch})` : ''}${forced ? ', forced or planned takeover' : ''}`, detail: { from, to, ...(epoch !== undefined ? { epoch } : {}), forced } }
}

async function defaultDiskSpace (path: string): Promise<DiskSpace> {
  const s = await statfs(path)
  return { path, freeBytes: s.bavail * s.bsize, totalBytes: s.blocks * s.bsize }
}
