/**
 * How every command ends: with --json exactly one JSON document on stdout (errors included, as
 * `{ "error": { name, code, message } }`), otherwise text; and the exit code contract —
 * 0 success, 1 operation failed, 2 bad usage or invalid config.
 */
import { VmeshError, errorMessage } from '../../common/errors.ts'

export const EXIT_OK = 0
export const EXIT_FAILED = 1
export const EXIT_USAGE = 2

export class UsageError extends VmeshError {
  constructor (message: string) { super('ERR_USAGE', message) }
}

const USAGE_CODES = new Set(['ERR_CONFIG_NOT_FOUND', 'ERR_CONFIG_PARSE', 'ERR_CONFIG_INVALID', 'ERR_CONFIG_KEY_FILE', 'ERR_USAGE'])

export function exitCodeFor (err: unknown): number {
  return err instanceof VmeshError && USAGE_CODES.has(err.code) ? EXIT_USAGE : EXIT_FAILED
}

export interface OutputOptions { json?: boolean }

export function printResult (opts: OutputOptions, value: unknown, text: () => string): void {
  if (opts.json === true) process.stdout.write(JSON.stringify(value, null, 2) + '\n')
  else process.stdout.write(text() + '\n')
}

export function printError (opts: OutputOptions, err: unknown): number {
  const body = err instanceof VmeshError
    ? { name: err.name, code: err.code, message: err.message }
    : { name: err instanceof Error ? err.name : 'Error', code: 'ERR_INTERNAL', message: errorMessage(err) }
  if (opts.json === true) process.stdout.write(JSON.stringify({ error: body }, null, 2) + '\n')
  process.stderr.write(`vmesh: ${body.message}\n`)
  return exitCodeFor(err)
}
