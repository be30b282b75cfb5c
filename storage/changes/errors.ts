/** Error conditions of change tracking: one class per condition, stable codes. */
import { VmeshError } from '../../common/errors.ts'

/** A block size outside 4 KiB–4 MiB or not a power of two. */
export class InvalidBlockSizeError extends VmeshError {
  constructor (message: string, options?: { cause?: unknown }) {
    super('ERR_CHANGES_BLOCK_SIZE', message, options)
  }
}

/** A range that is negative, unaligned where alignment is required, or otherwise malformed. */
export class InvalidRangeError extends VmeshError {
  constructor (message: string, options?: { cause?: unknown }) {
    super('ERR_CHANGES_BAD_RANGE', message, options)
  }
}

/** The file to scan does not exist or is not a regular file. */
export class ScanTargetError extends VmeshError {
  constructor (message: string, options?: { cause?: unknown }) {
    super('ERR_CHANGES_NOT_A_FILE', message, options)
  }
}

/** A service method was called before start() or after stop(). */
export class NotRunningError extends VmeshError {
  constructor (message: string, options?: { cause?: unknown }) {
    super('ERR_CHANGES_NOT_RUNNING', message, options)
  }
}
