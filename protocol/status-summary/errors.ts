import { VmeshError } from '../../common/errors.ts'

/** A status summary that is not JSON, too large, or not the schema; the driver drops it. */
export class StatusSummaryDecodeError extends VmeshError {
  constructor (detail: string, options?: { cause?: unknown }) { super('ERR_STATUS_SUMMARY_DECODE', `bad status summary: ${detail}`, options) }
}
