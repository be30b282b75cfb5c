import { VmeshError } from '../../common/errors.ts'

/** A VM-spec message that is not JSON, too large, or not the schema; the driver drops it. */
export class VmSpecDecodeError extends VmeshError {
  constructor (detail: string, options?: { cause?: unknown }) { super('ERR_VMSPEC_DECODE', `bad VM spec message: ${detail}`, options) }
}
