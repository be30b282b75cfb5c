/**
 * Control API routes of replication: recovery points and restore of the replicas held here,
 * verify of the VMs sourced here, and the progress of those long operations (`GET
 * /v1/operations`; a client that passes `op` with its request finds it there by that id).
 * Bodies are checked with zod; mistakes are 400s.
 */
import { z } from 'zod'
import { BadRequestError } from '../api/errors.ts'
import { parseBody, type RouteRegistry } from '../api/routes.ts'
import type { RestoreResult } from '../../storage/replica/index.ts'
import type { VerifyReport } from './sender.ts'
import type { ReplicaPoints } from './types.ts'
import type { OperationStatus } from '../status.ts'
import { OPERATION_ID_RE } from './operations.ts'

/** What the routes drive (ReplicationService implements it). */
export interface ReplicationOps {
  points: (vm: string) => Promise<ReplicaPoints>
  restore: (vm: string, pointId: string, toDir: string, from?: string, opId?: string) => Promise<RestoreResult & { from: string }>
  verify: (vm: string, repair: boolean, timeoutMs: number, opId?: string) => Promise<{ vm: string, ok: boolean, targets: VerifyReport[] }>
  operationStatus: () => OperationStatus[]
}

const opId = z.string().regex(OPERATION_ID_RE, 'letters, digits, "_", "." or "-", at most 64')

const restoreBody = z.strictObject({ vm: z.string().min(1), point: z.string().min(1), to: z.string().min(1), from: z.string().min(1).optional(), op: opId.optional() })
const verifyBody = z.strictObject({ vm: z.string().min(1), repair: z.boolean().default(false), timeoutMs: z.number().int().min(1000).max(3_600_000).default(120_000), op: opId.optional() })

export function registerReplicationRoutes (api: Pick<RouteRegistry, 'route'>, replication: ReplicationOps): void {
  api.route('GET', '/v1/replication/points', async ({ query }) => {
    const vm = query.get('vm')
    if (vm === null || vm === '') throw new BadRequestError('vm is required')
    return await replication.points(vm)
  })
  api.route('POST', '/v1/replication/restore', async ({ body }) => {
    const b = parseBody(restoreBody, body)
    return await replication.restore(b.vm, b.point, b.to, b.from, b.op)
  })
  api.route('POST', '/v1/replication/verify', async ({ body }) => {
    const b = parseBody(verifyBody, body)
    return await replication.verify(b.vm, b.repair, b.timeoutMs, b.op)
  })
  api.route('GET', '/v1/operations', ({ query }) => {
    const id = query.get('id')
    const list = replication.operationStatus()
    return { operations: id === null ? list : list.filter(o => o.id === id) }
  })
}
