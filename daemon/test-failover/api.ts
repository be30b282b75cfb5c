/**
 * Control API routes of test failover: `POST /v1/failover/test {vm, point?}`,
 * `POST /v1/failover/test/cleanup {vm}`, `GET /v1/failover/test`. Bodies are checked with zod.
 */
import { z } from 'zod'
import { parseBody, type RouteRegistry } from '../api/routes.ts'
import type { TestFailoverOps } from './types.ts'
import { TEST_FAILOVER_CLIENT_ERROR_CODES } from './errors.ts'

const startBody = z.strictObject({ vm: z.string().min(1), point: z.string().min(1).max(64).optional() })
const cleanupBody = z.strictObject({ vm: z.string().min(1) })

/** POST /v1/failover/test {vm, point?}, POST /v1/failover/test/cleanup {vm}, GET /v1/failover/test. */
export function registerTestFailoverRoutes (api: Pick<RouteRegistry, 'route' | 'clientErrors'>, service: TestFailoverOps): void {
  api.clientErrors(TEST_FAILOVER_CLIENT_ERROR_CODES)
  api.route('POST', '/v1/failover/test', async ({ body }) => {
    const b = parseBody(startBody, body)
    return await service.startTest(b.vm, b.point !== undefined ? { point: b.point } : {})
  })
  api.route('POST', '/v1/failover/test/cleanup', async ({ body }) => await service.cleanup(parseBody(cleanupBody, body).vm))
  api.route('GET', '/v1/failover/test', async () => ({ tests: await service.list() }))
}
