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

/** A reply of the Hyper-V driver's PowerShell session (recorded output as `out`). */
export interface PsReplyLike { code: number, out: string, err: string, errorId: string }
export function psOk (out = ''): PsReplyLike { return { code: 0, out, err: '', errorId: '' } }
export function psFail (code: number, err = '', errorId = ''): PsReplyLike { return { code, out: '', err, errorId } }

/** A PsTransport that replays recorded replies and logs every script body it was given. */
export function fakeTransport (respond: (script: string, n: number) => PsReplyLike | Promise<PsReplyLike>): { transport: (script: string, opts: { timeoutMs: number, signal?: AbortSignal }) => Promise<PsReplyLike>, scripts: string[] } {
  const scripts: string[] = []
  const transport = async (script: string): Promise<PsReplyLike> => {
    scripts.push(script)
    return await respond(script, scripts.length - 1)
  }
  return { transport, scripts }
}
