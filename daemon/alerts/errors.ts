import { VmeshError } from '../../common/errors.ts'

/** A sink could not take a notice now (down, timed out, 5xx): it stays queued and is retried. */
export class SinkUnavailableError extends VmeshError {
  constructor (readonly sink: string, detail: string, options?: { cause?: unknown }) {
    super('ERR_ALERT_SINK_UNAVAILABLE', `alert sink ${sink}: ${detail}`, options)
  }
}

/** A sink refused a notice for good (4xx, SMTP 5xx): retrying cannot help, it is dropped. */
export class SinkRejectedError extends VmeshError {
  constructor (readonly sink: string, detail: string, options?: { cause?: unknown }) {
    super('ERR_ALERT_SINK_REJECTED', `alert sink ${sink}: ${detail}`, options)
  }
}
