/**
 * The ownership service's place in the daemon: it feeds the OwnershipService what the rest of
 * the daemon learns (the failure detector's member states; VMs added to the config on reload)
 * and serves its control API — `POST /v1/failover` (body checked by a zod schema, a mistake is
 * a FailoverRequestError) and `GET /v1/ownership`.
 */
import { z } from 'zod'
import type { RouteRegistry } from '../api/routes.ts'
import type { Startable } from '../startable.ts'
import type { VmConfig } from '../../config/load.ts'
import { FailoverRequestError } from './errors.ts'
import { homeVmSpec } from './spec.ts'
import type { OwnershipService } from './service.ts'

/** What the control drives (OwnershipService implements it). */
export type OwnershipOps = Pick<OwnershipService, 'memberChanged' | 'addHomeVm' | 'plannedFailover' | 'operatorFailover' | 'status' | 'timeline' | 'stats'> & Partial<Pick<OwnershipService, 'room'>>

export interface OwnershipControlComponents {
  ownership: OwnershipOps
  /** The failure detector (MembershipService). */
  membership: {
    members: () => Array<{ id: string, state: 'alive' | 'suspect' | 'dead' }>
    onMember: (fn: (e: { id: string, state: 'alive' | 'suspect' | 'dead' }) => void) => () => void
  }
  /** Recovery points held here, to refuse an unknown `point` before the failover starts. */
  points: (vm: string) => Promise<{ replicas: Array<{ points: Array<{ id: string }> }> }>
  api: Pick<RouteRegistry, 'route' | 'clientErrors'>
}

/** The slice of the config it applies live. */
export interface OwnershipControlSettings {
  node: string
  vms: VmConfig[]
}

const failoverBody = z.object({
  vm: z.string().min(1, 'vm is required'),
  to: z.string().min(1, 'to must be a node name').optional(),
  force: z.boolean().optional(),
  planned: z.boolean().optional(),
  point: z.string().regex(/^[0-9]{1,15}$/, 'point must be a recovery point ID (see vmesh points VM)').optional()
}).superRefine((b, ctx) => {
  if (b.planned === true && b.to === undefined) ctx.addIssue({ code: 'custom', path: ['to'], message: 'a planned failover needs "to"' })
  if (b.planned === true && b.point !== undefined) ctx.addIssue({ code: 'custom', path: ['point'], message: 'a planned failover ships the final generation; it takes no point' })
})

export type FailoverRequest = z.infer<typeof failoverBody>

/** The request, or a FailoverRequestError naming every field that is wrong. */
export function parseFailoverRequest (body: unknown): FailoverRequest {
  const r = failoverBody.safeParse(body)
  if (!r.success) throw new FailoverRequestError(`bad failover request: ${r.error.issues.map(i => `${i.path.join('.')}: ${i.message}`).join('; ')}`)
  return r.data
}

export class OwnershipControl implements Startable<OwnershipControlSettings> {
  private unsubscribe?: () => void

  constructor (private readonly components: OwnershipControlComponents) {
    const { api, ownership } = components
    api.clientErrors(['ERR_FAILOVER_REFUSED'])
    api.route('POST', '/v1/failover', async (req) => { await this.failover(parseFailoverRequest(req.body)); return { accepted: true } })
    api.route('GET', '/v1/ownership', () => ({ vms: ownership.status(), room: ownership.room?.() ?? null, timeline: ownership.timeline, stats: ownership.stats }))
  }

  /** Member states from now on, starting with the detector's current view. */
  start (): void {
    if (this.unsubscribe !== undefined) return
    const { ownership, membership } = this.components
    for (const m of membership.members()) ownership.memberChanged(m.id, m.state)
    this.unsubscribe = membership.onMember((e) => { ownership.memberChanged(e.id, e.state) })
  }

  stop (): void {
    this.unsubscribe?.()
    this.unsubscribe = undefined
  }

  /** VMs added to this node's config are owned here from epoch 0 and announced. */
  reload (next: OwnershipControlSettings, prev: OwnershipControlSettings): string[] {
    const added = next.vms.filter(v => !prev.vms.some(p => p.name === v.name))
    for (const v of added) this.components.ownership.addHomeVm(homeVmSpec(v, next.node))
    return added.length > 0 ? ['ownership.vms'] : []
  }

  private async failover (b: FailoverRequest): Promise<void> {
    const { ownership, points } = this.components
    if (b.planned === true) {
      await ownership.plannedFailover(b.vm, b.to as string)
      return
    }
    if (b.point !== undefined) {
      const pts = await points(b.vm)
      if (!pts.replicas.some(r => r.points.some(p => p.id === b.point))) throw new FailoverRequestError(`no recovery point ${b.point} of ${b.vm} on this node (see vmesh points ${b.vm})`)
    }
    await ownership.operatorFailover(b.vm, { ...(b.to !== undefined ? { to: b.to } : {}), force: b.force === true, ...(b.point !== undefined ? { point: b.point } : {}) })
  }
}
