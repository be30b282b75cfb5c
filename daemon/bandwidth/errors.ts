/** Typed errors of the bandwidth limiter: caller bugs (bad rates or amounts), never peer input. */
import { VmeshError } from '../../common/errors.ts'

/** A rate that is not a positive number of bytes per second (Infinity means unlimited). */
export class BandwidthInvalidRateError extends VmeshError {
  constructor (message: string) { super('ERR_BANDWIDTH_INVALID_RATE', message) }
}

/** A take() of a negative, NaN or infinite number of bytes. */
export class BandwidthInvalidAmountError extends VmeshError {
  constructor (message: string) { super('ERR_BANDWIDTH_INVALID_AMOUNT', message) }
}
