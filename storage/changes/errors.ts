/** Error conditions of change tracking: one class per condition, stable codes. */
import { VmeshError } from '../../common/errors.ts'

// the block-size and range conditions live beside their rules in common/
export { InvalidBlockSizeError, InvalidRangeError } from '../../common/errors.ts'

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
