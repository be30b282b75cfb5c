/** The error conditions of a test failover, each with a stable code (tests assert on the name). */
import { VmeshError } from '../../common/errors.ts'

export class TestFailoverExistsError extends VmeshError {
  constructor (readonly vm: string) { super('ERR_TEST_FAILOVER_EXISTS', `a test failover of ${vm} exists on this node; remove it first with \`vmesh failover ${vm} --test --cleanup\``) }
}

export class TestFailoverBusyError extends VmeshError {
  constructor (readonly vm: string) { super('ERR_TEST_FAILOVER_BUSY', `a test failover of ${vm} is being started or removed; try again when it is done`) }
}

export class VmRunsHereError extends VmeshError {
  constructor (readonly vm: string) { super('ERR_TEST_FAILOVER_RUNS_HERE', `${vm} runs on this node (production); a test failover runs on a node that holds a replica of it`) }
}

export class NoRecoveryPointError extends VmeshError {
  constructor (readonly vm: string) { super('ERR_TEST_FAILOVER_NO_POINT', `the replica of ${vm} here has no recovery point yet (still seeding, or no consistent generation)`) }
}

export class RecoveryPointNotFoundError extends VmeshError {
  constructor (readonly vm: string, readonly point: string) { super('ERR_TEST_FAILOVER_POINT_NOT_FOUND', `no recovery point ${JSON.stringify(point)} of ${vm} here (see \`vmesh points ${vm}\`)`) }
}

export class TestFailoverStateError extends VmeshError {
  constructor (readonly file: string, detail: string, options?: { cause?: unknown }) { super('ERR_TEST_FAILOVER_STATE', `${file}: ${detail}`, options) }
}

/** Codes that are the caller's situation, not a daemon fault (for the API's 4xx mapping). */
export const TEST_FAILOVER_CLIENT_ERROR_CODES: readonly string[] = [
  'ERR_TEST_FAILOVER_EXISTS', 'ERR_TEST_FAILOVER_BUSY', 'ERR_TEST_FAILOVER_RUNS_HERE', 'ERR_TEST_FAILOVER_NO_POINT',
  'ERR_TEST_FAILOVER_POINT_NOT_FOUND', 'ERR_NO_REPLICA', 'ERR_HYPERVISOR_UNSUPPORTED'
]
