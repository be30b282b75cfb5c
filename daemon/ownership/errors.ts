import { VmeshError } from '../../common/errors.ts'
import { BadRequestError } from '../api/errors.ts'

/** Ownership timings that cannot be safe (e.g. a watchdog deadline outside the lease). */
export class OwnershipTimingError extends VmeshError {
  constructor (message: string) { super('ERR_OWNERSHIP_TIMING', message) }
}

/** The ownership machine was built from an inconsistent configuration (unknown home, duplicate voter, ...). */
export class OwnershipConfigError extends VmeshError {
  constructor (message: string) { super('ERR_OWNERSHIP_CONFIG', message) }
}

/** An operator's failover request the ownership machine refused (reason: FailoverRefusal). */
export class FailoverRefusedError extends VmeshError {
  constructor (readonly vm: string, readonly reason: string, hint = '') {
    super('ERR_FAILOVER_REFUSED', `failover of ${vm} refused: ${reason}${hint !== '' ? ` (${hint})` : ''}`)
  }
}

/** A `POST /v1/failover` body that does not fit its schema (answered 400, code ERR_BAD_REQUEST). */
export class FailoverRequestError extends BadRequestError {}
