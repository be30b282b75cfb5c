/** Error conditions of the per-target dirty maps: one class per condition, stable codes. */
import { VmeshError } from '../../common/errors.ts'

/** A target the maps do not know. */
export class UnknownTargetError extends VmeshError {
  constructor (message: string) { super('ERR_DIRTY_UNKNOWN_TARGET', message) }
}
/** A file the maps do not know. */
export class UnknownFileError extends VmeshError {
  constructor (message: string) { super('ERR_DIRTY_UNKNOWN_FILE', message) }
}
/** A generation out of order for a target's in-flight bookkeeping. */
export class BadGenerationError extends VmeshError {
  constructor (message: string) { super('ERR_DIRTY_BAD_GENERATION', message) }
}
/** A call before open() or after close(). */
export class DirtyMapsClosedError extends VmeshError {
  constructor (message = 'dirty maps are not open') { super('ERR_DIRTY_CLOSED', message) }
}
