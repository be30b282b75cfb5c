/**
 * `vmesh alert test`: the daemon sends one test notice through every configured sink at once
 * (not queued, so the answer is each sink's own) and reports which ones took it.
 * `vmesh alert status`: open incidents and per-sink delivery counters.
 */
import type { Command } from 'commander'
import { loadConfig } from '../../../config/load.ts'
import { ApiClient } from '../../api/client.ts'
import { EXIT_FAILED, EXIT_OK, printError, printResult, type OutputOptions } from '../output.ts'

interface TestAnswer { sinks: Array<{ sink: string, type: string, ok: boolean, error?: string }> }
interface StatusAnswer {
  incidents: Array<{ key: string, kind: string, summary: string, openedAtMs: number, clearing: boolean }>
  sinks: Array<{ sink: string, type: string, queued: number, delivered: number, dropped: number, rejected: number, failedAttempts: number, lastError?: string }>
  notices: number
}

export function registerAlert (program: Command): void {
  const alert = program.command('alert').description('alert sinks (webhook, e-mail) of the running daemon')
  alert.command('test')
    .description('send a test alert through every configured sink now; exit 1 if any sink did not take it')
    .option('--json', 'print JSON')
    .action(async (_o: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals() as OutputOptions & { config: string }
      try {
        const { config } = await loadConfig(o.config, { skipSecrets: true })
        const r = await ApiClient.forConfig(config).call<TestAnswer>('POST', '/v1/alerts/test', {}, { timeoutMs: 120_000 })
        printResult(o, r, () => r.sinks.length === 0 ? 'no alert sinks configured (alerts.sinks)' : r.sinks.map(s => `${s.sink} (${s.type}): ${s.ok ? 'sent' : `FAILED: ${s.error ?? ''}`}`).join('\n'))
        process.exitCode = r.sinks.every(s => s.ok) ? EXIT_OK : EXIT_FAILED
      } catch (err) { process.exitCode = printError(o, err) }
    })
  alert.command('status')
    .description('open incidents and each sink\'s queue and delivery counters')
    .option('--json', 'print JSON')
    .action(async (_o: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals() as OutputOptions & { config: string }
      try {
        const { config } = await loadConfig(o.config, { skipSecrets: true })
        const r = await ApiClient.forConfig(config).call<StatusAnswer>('GET', '/v1/alerts')
        printResult(o, r, () => [
          ...(r.incidents.length === 0 ? ['no open incidents'] : r.incidents.map(i => `open since ${new Date(i.openedAtMs).toISOString()}: ${i.summary}${i.clearing ? ' (clearing)' : ''}`)),
          ...r.sinks.map(s => `sink ${s.sink} (${s.type}): ${s.delivered} delivered, ${s.queued} queued, ${s.dropped} dropped, ${s.rejected} rejected${s.lastError !== undefined && s.queued > 0 ? `; last error: ${s.lastError}` : ''}`)
        ].join('\n'))
        process.exitCode = EXIT_OK
      } catch (err) { process.exitCode = printError(o, err) }
    })
}
