import { VmeshError } from '../../common/errors.ts'

export class DaemonNotRunningError extends VmeshError {
  constructor (readonly address: string, options?: { cause?: unknown }) {
    super('ERR_DAEMON_NOT_RUNNING', `no vmesh daemon answers at ${address} (is \`vmesh start\` running with this config?)`, options)
  }
}

export class ApiUnauthorizedError extends VmeshError {
  constructor () { super('ERR_API_UNAUTHORIZED', 'the control API refused the token (is the CLI using the daemon\'s config and dataDir?)') }
}

export class ApiRequestError extends VmeshError {
  constructor (readonly status: number, readonly remote: { name?: string, code?: string, message?: string }) {
    super(remote.code ?? 'ERR_API_REQUEST', remote.message ?? `control API answered ${status}`)
  }
}

export class NotFoundError extends VmeshError {
  constructor (what: string) { super('ERR_NOT_FOUND', what) }
}

export class BadRequestError extends VmeshError {
  constructor (what: string) { super('ERR_BAD_REQUEST', what) }
}
