import { VmeshError } from '../../common/errors.ts'

/** A one-time login link that is unknown, already used or expired. */
export class LoginTokenInvalidError extends VmeshError {
  constructor (reason: 'unknown' | 'expired') { super('ERR_LOGIN_TOKEN_INVALID', `this login link is ${reason === 'expired' ? 'expired' : 'not valid (or was already used)'}; run \`vmesh dashboard\` for a new one`) }
}

/** A dashboard request without a valid session cookie. */
export class SessionRequiredError extends VmeshError {
  constructor () { super('ERR_SESSION_REQUIRED', 'no valid dashboard session; run `vmesh dashboard` for a login link') }
}

/** A state-changing request through a session without the dashboard's request header or from another origin. */
export class CsrfRefusedError extends VmeshError {
  constructor (detail: string) { super('ERR_CSRF_REFUSED', `request refused: ${detail}`) }
}

/** The dashboard asked for over plain HTTP from another host (only loopback or the TLS listener serve it). */
export class DashboardInsecureError extends VmeshError {
  constructor () { super('ERR_DASHBOARD_INSECURE', 'the dashboard is served over plain HTTP to loopback only; configure dashboard.listen with dashboard.tls for remote access') }
}
