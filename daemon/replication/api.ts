/**
 * Control API routes of replication: recovery points and restore of the replicas held here,
 * and verify of the VMs sourced here. Bodies are checked with zod; mistakes are 400s.
 */
import { z } from 'zod'
import type { ApiServer } from '../api/server.ts'
import { BadRequestError } from '../api/errors.ts'
import type { ReplicationService } from './service.ts'

const restoreBody = z.strictObject({ vm: z.string().min(1), point: z.string().min(1), to: z.string().min(1), from: z.string().min(1).optional() })
const verifyBody = z.strictObject({ vm: z.string().min(1), repair: z.boolean().default(false), timeoutMs: z.number().int().min(1000).max(3_600_000).default(120_000) })

function parse<T> (schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body)
  if (!r.success) throw new BadRequestError(`bad request: ${r.error.issues.map(i => `${i.path.join('.')}: ${i.message}`).join('; ')}`)
  return r.data
}

export function registerReplicationRoutes (api: ApiServer, replication: ReplicationService): void {
  api.route('GET', '/v1/replication/points', async ({ query }) => {
    const vm = query.get('vm')
    if (vm === null || vm === '') throw new BadRequestError('vm is required')
    return await replication.points(vm)
  })
  api.route('POST', '/v1/replication/restore', async ({ body }) => {
    const b = parse(restoreBody, body)
    return await replication.restore(b.vm, b.point, b.to, b.from)
  })
  api.route('POST', '/v1/replication/verify', async ({ body }) => {
    const b = parse(verifyBody, body)
    return await replication.verify(b.vm, b.repair, b.timeoutMs)
  })
}
