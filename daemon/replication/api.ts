/**
 * Control API routes of replication: recovery points and restore of the replicas held here,
 * and verify of the VMs sourced here. Bodies are checked with zod; mistakes are 400s.
 */
import { z } from 'zod'
import { BadRequestError } from '../api/errors.ts'
import { parseBody, type RouteRegistry } from '../api/routes.ts'
import type { RestoreResult } from '../../storage/replica/index.ts'
import type { VerifyReport } from './sender.ts'
import type { ReplicaPoints } from './types.ts'

/** What the routes drive (ReplicationService implements it). */
export interface ReplicationOps {
  points: (vm: string) => Promise<ReplicaPoints>
  restore: (vm: string, pointId: string, toDir: string, from?: string) => Promise<RestoreResult & { from: string }>
  verify: (vm: string, repair: boolean, timeoutMs: number) => Promise<{ vm: string, ok: boolean, targets: VerifyReport[] }>
}

const restoreBody = z.strictObject({ vm: z.string().min(1), point: z.string().min(1), to: z.string().min(1), from: z.string().min(1).optional() })
const verifyBody = z.strictObject({ vm: z.string().min(1), repair: z.boolean().default(false), timeoutMs: z.number().int().min(1000).max(3_600_000).default(120_000) })

export function registerReplicationRoutes (api: Pick<RouteRegistry, 'route'>, replication: ReplicationOps): void {
  api.route('GET', '/v1/replication/points', async ({ query }) => {
    const vm = query.get('vm')
    if (vm === null || vm === '') throw new BadRequestError('vm is required')
    return await replication.points(vm)
  })
  api.route('POST', '/v1/replication/restore', async ({ body }) => {
    const b = parseBody(restoreBody, body)
    return await replication.restore(b.vm, b.point, b.to, b.from)
  })
  api.route('POST', '/v1/replication/verify', async ({ body }) => {
    const b = parseBody(verifyBody, body)
    return await replication.verify(b.vm, b.repair, b.timeoutMs)
  })
}
