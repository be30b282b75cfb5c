/**
 * Error base for vmesh. Every condition has its own class with a stable `name` and `code`
 * (tests and scripts match on those, never on the message). Causes are wrapped with
 * `{ cause }` so the context chain survives.
 */
export class VmeshError extends Error {
  /** Stable machine-readable code, e.g. `ERR_CONFIG_INVALID`. */
  readonly code: string

  constructor (code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.name = new.target.name
  }

  /** A JSON-safe description for logs and the control API. */
  toJSON (): { name: string, code: string, message: string } {
    return { name: this.name, code: this.code, message: this.message }
  }
}

/** True when `err` is a VmeshError with the given code. */
export function hasCode (err: unknown, code: string): boolean {
  return err instanceof VmeshError && err.code === code
}

/** Raised when an AbortSignal fires during a vmesh operation. */
export class AbortedError extends VmeshError {
  constructor (message = 'operation aborted', options?: { cause?: unknown }) {
    super('ERR_ABORTED', message, options)
  }
}

/** Message of an unknown thrown value, for wrapping. */
export function errorMessage (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** A block size outside 4 KiB–4 MiB or not a power of two (see block-size.ts). */
export class InvalidBlockSizeError extends VmeshError {
  constructor (message: string, options?: { cause?: unknown }) {
    super('ERR_CHANGES_BLOCK_SIZE', message, options)
  }
}

/** A byte range that is negative, not a safe integer, or otherwise malformed (see ranges.ts). */
export class InvalidRangeError extends VmeshError {
  constructor (message: string, options?: { cause?: unknown }) {
    super('ERR_CHANGES_BAD_RANGE', message, options)
  }
}
