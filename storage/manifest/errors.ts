/** Manifest errors: either means "the stored hashes say nothing", and a scanner starts over. */
import { VmeshError } from '../../common/errors.ts'

export class ManifestCorruptError extends VmeshError {
  constructor (message: string, options?: { cause?: unknown }) { super('ERR_MANIFEST_CORRUPT', message, options) }
}

/** The manifest was written in a layout this code does not read (e.g. per-block entries, v1). */
export class ManifestVersionError extends VmeshError {
  constructor (message: string, options?: { cause?: unknown }) { super('ERR_MANIFEST_VERSION', message, options) }
}
