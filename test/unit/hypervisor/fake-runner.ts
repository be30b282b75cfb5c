/**
 * A CommandRunner that replays recorded output: each call is logged (argv and options) and
 * answered by `respond`, so tests assert exact argv sequences without the real tool.
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { CommandRunner, RunOptions, RunResult } from '../../../daemon/hypervisor/run.ts'

export const FIXTURES = fileURLToPath(new URL('../../fixtures/hypervisor/', import.meta.url))

export function fixture (rel: string): string {
  return readFileSync(`${FIXTURES}${rel}`, 'utf8')
}

export interface Call { argv: string[], opts: RunOptions }

export function ok (stdout = ''): RunResult { return { code: 0, stdout, stderr: '', truncated: false } }
export function fail (code: number, stderr = '', stdout = ''): RunResult { return { code, stdout, stderr, truncated: false } }

export function fakeRunner (respond: (argv: string[], n: number) => RunResult | Promise<RunResult>): { run: CommandRunner, calls: Call[] } {
  const calls: Call[] = []
  const run: CommandRunner = async (argv, opts) => {
    calls.push({ argv: [...argv], opts })
    return await respond(argv, calls.length - 1)
  }
  return { run, calls }
}
