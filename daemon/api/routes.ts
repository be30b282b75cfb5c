/**
 * What a service needs from the control API to register its routes (ApiServer implements it),
 * and the one way request bodies are checked: a zod schema, a mistake answered 400 with a
 * BadRequestError naming each bad field.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { z } from 'zod'
import { BadRequestError } from './errors.ts'

/** A JSON route: returns the answer's body (or throws a VmeshError: 4xx/5xx with its code). */
export type Handler = (req: { body: unknown, query: URLSearchParams, signal: AbortSignal }) => Promise<unknown> | unknown
/** A route that writes its own response. */
export type RawHandler = (req: IncomingMessage, res: ServerResponse) => Promise<void> | void

export interface RouteRegistry {
  /** A JSON route, e.g. route('GET', '/v1/status', ...). */
  route: (method: 'GET' | 'POST', path: string, handler: Handler) => void
  /** A route that writes its own response (metrics text). */
  rawRoute: (method: 'GET' | 'POST', path: string, handler: RawHandler) => void
  /** Error codes a service raises for the caller's mistakes: answered 400 instead of 500. */
  clientErrors: (codes: Iterable<string>) => void
}

/** The body checked against `schema`; a mismatch throws BadRequestError listing every issue. */
export function parseBody<T> (schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body)
  if (!r.success) throw new BadRequestError(`bad request: ${r.error.issues.map(i => `${i.path.join('.')}: ${i.message}`).join('; ')}`)
  return r.data
}
