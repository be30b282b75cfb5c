import type { AlertNotice } from './types.ts'

/**
 * Where notices go. `send` resolves once the sink accepted the notice, throws
 * SinkUnavailableError to be retried or SinkRejectedError to be dropped. One call at a time.
 */
export interface AlertSink {
  readonly name: string
  readonly type: 'webhook' | 'email' | string
  send: (n: AlertNotice, signal?: AbortSignal) => Promise<void>
  close?: () => Promise<void> | void
}
