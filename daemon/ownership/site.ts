/**
 * Site failover and DR drills: `POST /v1/failover/site {site, planned?, test?, cleanup?, timeoutMs?}`.
 *
 * A site is the `site:` label of nodes (node.site, mesh.peers[].site). The VMs of site S are
 * those whose current owner (as this node's election view says) is a node of S. They are taken
 * in start order (startAfter first, then startOrder, priority, name) and:
 *  - unplanned (default): each is asked of the best replica holder outside S that has room
 *    (this node when it is that holder), through the election's operator failover — which
 *    finalizes the replica at its latest consistent generation; hosts start them in start
 *    order themselves (startAfter is kept by the machine), and the report follows each until it
 *    runs. Run it where the election can still form a majority (a surviving node).
 *  - `planned`: zero loss, as for one VM: every VM of S owned by *this* node is handed to the
 *    best holder outside S (stop, ship the final generation, start there). Run it on each
 *    host of S; VMs owned by other hosts of S are listed with the node to run it on.
 *  - `test`: a drill: an isolated clone of each VM of S whose replica this node holds is booted
 *    here (daemon/test-failover), production and replication untouched; VMs held elsewhere
 *    are listed with the node to run it on. `test` + `cleanup` removes the clones.
 * The report, per VM: where it started, the recovery point used and its age (the RPO
 * achieved) when this node knows that generation's time, and the time to running (RTO)
 * measured here from the command.
 */
import { z } from 'zod'
import type { Clock } from '../../common/clock.ts'
import { errorMessage } from '../../common/errors.ts'
import { parseBody, type RouteRegistry } from '../api/routes.ts'
import type { Logger } from '../log.ts'
import type { GenerationRef, VmOwnershipStatus, VmSpec } from './types.ts'

export interface SiteFailoverComponents {
  clock: Clock
  log: Logger
  ownership: {
    status: () => VmOwnershipStatus[]
    specOf: (vm: string) => VmSpec | undefined
    runsOn: (vm: string) => string | null
    holders: (vm: string) => Array<{ id: string, generation: GenerationRef, fits: boolean }>
    operatorFailover: (vm: string, opts: { to?: string }) => Promise<void>
    plannedFailover: (vm: string, to: string) => Promise<void>
  }
  /** Recovery points held here (for the age of the generation a VM started from). */
  points?: (vm: string) => Promise<{ replicas: Array<{ points: Array<{ generation: number, createdAtMs: number }> }> }>
  tests?: {
    startTest: (vm: string, opts: { point?: string }) => Promise<{ node: string, point: string, generation: number, pointCreatedAt: number, testName: string }>
    cleanup: (vm: string) => Promise<{ removed: boolean, testName: string }>
  }
  api?: Pick<RouteRegistry, 'route'>
}

export interface SiteFailoverInit {
  self: string
  /** node name → site, for every node that has one (this one included). */
  sites: Record<string, string>
}

export interface SiteVmReport {
  vm: string
  /** The owner in site S when the command came. */
  from: string
  /** Where it started (or the test clone runs); null when it did not. */
  node: string | null
  state: 'running' | 'no-room' | 'timeout' | 'refused' | 'elsewhere' | 'removed' | 'absent'
  /** The recovery point used: generation, when it was made (wall ms) and its age at the command (= RPO achieved). */
  point: { generation: number, createdAtMs: number | null, ageMs: number | null } | null
  /** Command → running, ms, measured on this node (driver time included). */
  rtoMs: number | null
  detail?: string
}

export interface SiteReport {
  site: string
  mode: 'unplanned' | 'planned' | 'test' | 'cleanup'
  node: string
  startedAtMs: number
  /** Command → the last VM running (or the timeout), ms. */
  tookMs: number
  vms: SiteVmReport[]
}

const body = z.strictObject({
  site: z.string().min(1).max(63),
  planned: z.boolean().optional(),
  test: z.boolean().optional(),
  cleanup: z.boolean().optional(),
  timeoutMs: z.number().int().min(1000).max(3_600_000).optional()
})

export class SiteFailover {
  constructor (private readonly c: SiteFailoverComponents, private readonly init: SiteFailoverInit) {
    c.api?.route('POST', '/v1/failover/site', async (req) => {
      const b = parseBody(body, req.body)
      return await this.run(b.site, { planned: b.planned === true, test: b.test === true, cleanup: b.cleanup === true, ...(b.timeoutMs !== undefined ? { timeoutMs: b.timeoutMs } : {}) })
    })
  }

  private siteOf (node: string): string | undefined { return this.init.sites[node] }

  /** The VMs owned by nodes of `site`, in start order. */
  vmsOf (site: string): Array<{ vm: string, owner: string, epoch: number }> {
    const own = this.c.ownership.status().filter(s => s.owner !== '' && this.siteOf(s.owner) === site)
    return startOrder(own.map(s => ({ vm: s.vm, owner: s.owner, epoch: s.epoch, spec: this.c.ownership.specOf(s.vm) })))
  }

  async run (site: string, o: { planned: boolean, test: boolean, cleanup: boolean, timeoutMs?: number }): Promise<SiteReport> {
    const mode = o.test ? (o.cleanup ? 'cleanup' : 'test') : o.planned ? 'planned' : 'unplanned'
    const t0 = this.c.clock.now()
    const startedAtMs = this.c.clock.wallNow()
    const vms = this.vmsOf(site)
    this.c.log.warn({ site, mode, vms: vms.map(v => v.vm) }, 'site failover')
    let reports: SiteVmReport[]
    if (mode === 'test' || mode === 'cleanup') reports = await this.drill(vms, mode === 'cleanup', t0)
    else reports = await this.move(site, vms, mode === 'planned', t0, startedAtMs, o.timeoutMs ?? 120_000)
    const report: SiteReport = { site, mode, node: this.init.self, startedAtMs, tookMs: Math.round(this.c.clock.now() - t0), vms: reports }
    this.c.log.warn({ site, mode, tookMs: report.tookMs, vms: reports.map(r => ({ vm: r.vm, node: r.node, state: r.state, rtoMs: r.rtoMs, rpoMs: r.point?.ageMs ?? null })) }, 'site failover report')
    return report
  }

  private async drill (vms: Array<{ vm: string, owner: string }>, cleanup: boolean, t0: number): Promise<SiteVmReport[]> {
    const tests = this.c.tests
    const out: SiteVmReport[] = []
    for (const { vm, owner } of vms) {
      const held = this.c.ownership.holders(vm)
      if (!held.some(h => h.id === this.init.self)) {
        const elsewhere = held.find(h => this.siteOf(h.id) !== this.siteOf(owner))
        out.push({ vm, from: owner, node: null, state: 'elsewhere', point: null, rtoMs: null, detail: elsewhere !== undefined ? `no replica here; run the drill on ${elsewhere.id}` : 'no replica here' })
        continue
      }
      if (tests === undefined) { out.push({ vm, from: owner, node: null, state: 'refused', point: null, rtoMs: null, detail: 'test failover is not available on this node' }); continue }
      try {
        if (cleanup) {
          const r = await tests.cleanup(vm)
          out.push({ vm, from: owner, node: this.init.self, state: r.removed ? 'removed' : 'absent', point: null, rtoMs: null })
        } else {
          const r = await tests.startTest(vm, {})
          out.push({
            vm, from: owner, node: r.node, state: 'running',
            point: { generation: r.generation, createdAtMs: r.pointCreatedAt, ageMs: Math.max(0, Math.round(this.c.clock.wallNow() - r.pointCreatedAt)) },
            rtoMs: Math.round(this.c.clock.now() - t0),
            detail: `isolated clone ${r.testName}, recovery point ${r.point}`
          })
        }
      } catch (err) {
        out.push({ vm, from: owner, node: null, state: 'refused', point: null, rtoMs: null, detail: errorMessage(err) })
      }
    }
    return out
  }

  private async move (site: string, vms: Array<{ vm: string, owner: string, epoch: number }>, planned: boolean, t0: number, wallT0: number, timeoutMs: number): Promise<SiteVmReport[]> {
    const { ownership, clock } = this.c
    // The recovery points held here, read before anything moves: a VM that starts on this node
    // has its replica finalized into the running copy, whose points are then no longer listed
    // — read afterwards, the age of the point it started from (its RPO) would be unknown.
    const pointsBefore = new Map<string, Array<{ generation: number, createdAtMs: number }>>()
    const points = this.c.points
    if (points !== undefined) {
      await Promise.all(vms.map(async ({ vm }) => {
        try { pointsBefore.set(vm, (await points(vm)).replicas.flatMap(r => r.points)) } catch { /* no replica here */ }
      }))
    }
    const pending = new Map<string, SiteVmReport & { epoch: number, target: string | null }>()
    const out: Array<SiteVmReport & { epoch: number, target: string | null }> = []
    for (const { vm, owner, epoch } of vms) {
      const holders = ownership.holders(vm).filter(h => this.siteOf(h.id) !== site)
      const best = holders.find(h => h.fits) ?? null
      const rep: SiteVmReport & { epoch: number, target: string | null } = { vm, from: owner, node: null, state: 'timeout', point: null, rtoMs: null, epoch, target: best?.id ?? null }
      out.push(rep)
      if (best === null) {
        rep.state = holders.length > 0 ? 'no-room' : 'refused'
        rep.detail = holders.length > 0 ? `no replica holder outside ${site} has room (${holders.map(h => h.id).join(', ')})` : `no replica holder outside ${site}`
        continue
      }
      rep.point = { generation: best.generation.generation, createdAtMs: null, ageMs: null }
      try {
        if (planned) {
          if (owner !== this.init.self) { rep.state = 'elsewhere'; rep.detail = `a planned failover runs on the owner: run it on ${owner}`; continue }
          await ownership.plannedFailover(vm, best.id)
        } else {
          await ownership.operatorFailover(vm, best.id === this.init.self ? {} : { to: best.id })
        }
        pending.set(vm, rep)
      } catch (err) {
        rep.state = 'refused'
        rep.detail = errorMessage(err)
      }
    }
    // follow each VM until it runs outside the site (with a higher epoch), or the timeout
    const deadline = t0 + timeoutMs
    while (pending.size > 0 && clock.now() < deadline) {
      const st = new Map(ownership.status().map(s => [s.vm, s]))
      for (const [vm, rep] of pending) {
        const s = st.get(vm)
        const on = ownership.runsOn(vm)
        if (s !== undefined && s.epoch > rep.epoch && on !== null && this.siteOf(on) !== site) {
          rep.node = on
          rep.state = 'running'
          rep.rtoMs = Math.round(clock.now() - t0)
          pending.delete(vm)
        } else if (s?.placement === 'no-room' && rep.target === this.init.self) {
          rep.detail = 'waiting for room here'
        }
      }
      if (pending.size > 0) await new Promise<void>(resolve => clock.setTimeout(resolve, 100))
    }
    for (const rep of pending.values()) { rep.state = 'timeout'; rep.detail ??= `not running outside ${site} within ${timeoutMs} ms` }
    // the age of the generation each started from, where this node holds (or held) that point;
    // read again for a point made after the command (a planned move's final generation)
    if (points !== undefined) {
      for (const rep of out) {
        if (rep.point === null) continue
        const gen = rep.point.generation
        let p = pointsBefore.get(rep.vm)?.find(x => x.generation === gen)
        if (p === undefined) {
          try { p = (await points(rep.vm)).replicas.flatMap(r => r.points).find(x => x.generation === gen) } catch { /* no replica here: the age stays unknown */ }
        }
        if (p !== undefined) rep.point = { generation: p.generation, createdAtMs: p.createdAtMs, ageMs: Math.max(0, Math.round(wallT0 - p.createdAtMs)) }
      }
    }
    return out.map(({ epoch: _e, target: _t, ...r }) => r)
  }
}

/** startAfter first (within the set), then startOrder, priority (higher first), name. */
export function startOrder<T extends { vm: string, spec: VmSpec | undefined }> (items: T[]): T[] {
  const byName = new Map(items.map(i => [i.vm, i]))
  const base = [...items].sort((a, b) =>
    (a.spec?.startOrder ?? 0) - (b.spec?.startOrder ?? 0) || (b.spec?.priority ?? 0) - (a.spec?.priority ?? 0) || (a.vm < b.vm ? -1 : a.vm > b.vm ? 1 : 0))
  const out: T[] = []
  const state = new Map<string, 'visiting' | 'done'>()
  const visit = (i: T): void => {
    if (state.get(i.vm) !== undefined) return // done, or a cycle (the machine's timeout breaks those)
    state.set(i.vm, 'visiting')
    for (const d of i.spec?.startAfter ?? []) { const dep = byName.get(d); if (dep !== undefined) visit(dep) }
    state.set(i.vm, 'done')
    out.push(i)
  }
  for (const i of base) visit(i)
  return out
}
