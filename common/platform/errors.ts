import { VmeshError } from '../errors.ts'

/** A rename kept failing with a transient error (a virus scanner or backup agent holding the file) past its time budget. */
export class RenameBusyError extends VmeshError {
  constructor (readonly from: string, readonly to: string, readonly attempts: number, options?: { cause?: unknown }) {
    super('ERR_RENAME_BUSY', `rename ${from} → ${to} still failing after ${attempts} attempts`, options)
  }
}

/** `icacls` failed or printed something we cannot read as an ACL. */
export class AclError extends VmeshError {
  constructor (readonly path: string, detail: string, options?: { cause?: unknown }) {
    super('ERR_ACL', `${path}: ${detail}`, options)
  }
}

/** A value that cannot be passed to cmd.exe as one literal argument. */
export class ShellQuoteError extends VmeshError {
  constructor (detail: string) {
    super('ERR_SHELL_QUOTE', detail)
  }
}
