/**
 * `GET /v1/events?since=SEQ&limit=N`: the event history after SEQ (default 0: all kept), oldest
 * first, with the journal's newest seq — so a script can follow it by asking again with that.
 */
import type { RouteRegistry } from '../api/routes.ts'
import { BadRequestError } from '../api/errors.ts'
import type { EventJournal } from './journal.ts'

export function registerEventRoutes (api: Pick<RouteRegistry, 'route'>, journal: Pick<EventJournal, 'since' | 'lastSeq'>): void {
  api.route('GET', '/v1/events', ({ query }) => {
    const since = Number(query.get('since') ?? '0')
    const limit = Number(query.get('limit') ?? '1000')
    if (!Number.isSafeInteger(since) || since < 0) throw new BadRequestError('since must be a non-negative integer (an event seq)')
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > 10_000) throw new BadRequestError('limit must be 1..10000')
    return { lastSeq: journal.lastSeq, events: journal.since(since, limit) }
  })
}
