/**
 * Webhook sink: each notice is one JSON POST. With a shared secret the body is signed:
 * `X-Vmesh-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>`; the receiver
 * recomputes it over the raw body and compares in constant time. The body carries `atMs`, so
 * a receiver can refuse replays of old notices. 2xx: delivered. 408, 429, 5xx, a timeout or a
 * refused connection: retried (SinkUnavailableError). Any other answer: dropped (SinkRejectedError).
 */
import { createHmac } from 'node:crypto'
import { errorMessage } from '../../common/errors.ts'
import { SinkRejectedError, SinkUnavailableError } from './errors.ts'
import type { AlertSink } from './sink.ts'
import type { AlertNotice } from './types.ts'

export const SIGNATURE_HEADER = 'x-vmesh-signature'

export interface WebhookSinkInit {
  name: string
  url: string
  /** Shared secret of the signature header (none: unsigned). */
  secret?: string
  /** One attempt's time limit. @default 10000 */
  timeoutMs?: number
}

/** `sha256=<hex>` over `body` with `secret` (what the receiver recomputes). */
export function signBody (secret: string, body: string | Uint8Array): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`
}

export class WebhookSink implements AlertSink {
  readonly type = 'webhook'
  readonly name: string

  constructor (private readonly init: WebhookSinkInit) { this.name = init.name }

  async send (n: AlertNotice, signal?: AbortSignal): Promise<void> {
    const body = JSON.stringify(n)
    const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'vmesh-alerts/1' }
    if (this.init.secret !== undefined) headers[SIGNATURE_HEADER] = signBody(this.init.secret, body)
    const timeout = AbortSignal.timeout(this.init.timeoutMs ?? 10_000)
    let res: Response
    try {
      res = await fetch(this.init.url, { method: 'POST', headers, body, signal: signal !== undefined ? AbortSignal.any([signal, timeout]) : timeout, redirect: 'error' })
    } catch (err) {
      throw new SinkUnavailableError(this.name, timeout.aborted ? `no answer within ${this.init.timeoutMs ?? 10_000} ms` : errorMessage((err as Error).cause ?? err), { cause: err })
    }
    await res.body?.cancel().catch(() => {})
    if (res.ok) return
    const detail = `${this.init.url} answered ${res.status}`
    if (res.status === 408 || res.status === 429 || res.status >= 500) throw new SinkUnavailableError(this.name, detail)
    throw new SinkRejectedError(this.name, detail)
  }
}
