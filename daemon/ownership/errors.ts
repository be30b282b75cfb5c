import { VmeshError } from '../../common/errors.ts'

/** Ownership timings that cannot be safe (e.g. a watchdog deadline outside the lease). */
export class OwnershipTimingError extends VmeshError {
  constructor (message: string) { super('ERR_OWNERSHIP_TIMING', message) }
}

/** The ownership machine was built from an inconsistent configuration (unknown home, duplicate voter, ...). */
export class OwnershipConfigError extends VmeshError {
  constructor (message: string) { super('ERR_OWNERSHIP_CONFIG', message) }
}
