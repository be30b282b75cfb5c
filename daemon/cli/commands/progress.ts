/**
 * `vmesh progress VM`: follows the initial copy (seed) of VM to each of its targets, on the
 * VM's source, with a bar per target (bytes, rate, ETA) until every target is in sync. The
 * numbers are the daemon's own (`vmesh status`: `seedProgress`, `rateBytesPerSec`, and the
 * VM's file sizes as the total); the CLI only polls them.
 */
import type { Command } from 'commander'
import { VmeshError } from '../../../common/errors.ts'
import { loadConfig } from '../../../config/load.ts'
import { ApiClient } from '../../api/client.ts'
import type { StatusDocument, TargetStatus } from '../../status.ts'
import { EXIT_FAILED, EXIT_OK, UsageError, printError, printResult, type OutputOptions } from '../output.ts'
import { Progress, progressMode, type ProgressTask } from '../progress.ts'

/** The VM is not sourced on this node: its seed can only be followed where it runs. */
export class NotSourceHereError extends VmeshError {
  constructor (vm: string, owner: string | null) { super('ERR_NOT_SOURCE_HERE', `${vm} does not run on this node${owner !== null ? `; run this on ${owner}` : ''}`) }
}

export function seedSample (t: TargetStatus, totalBytes: number): { doneBytes: number, totalBytes: number, phase: string, rateBytesPerSec?: number } {
  const doneBytes = t.state === 'seeding' ? Math.round((t.seedProgress ?? 0) * totalBytes) : t.state === 'in-sync' ? totalBytes : Math.max(0, totalBytes - t.bytesPending)
  return { doneBytes, totalBytes, phase: t.state, ...(t.rateBytesPerSec !== undefined ? { rateBytesPerSec: t.rateBytesPerSec } : {}) }
}

export function registerProgress (program: Command): void {
  program.command('progress')
    .description('follow VM\'s initial copy to each target (run on its source): progress bar, rate and ETA until all are in sync')
    .argument('<vm>', 'VM name')
    .option('--interval <ms>', 'poll period', '500')
    .option('--timeout <ms>', 'give up after this long (0: never)', '0')
    .option('--json', 'print JSON (progress as JSON lines on stderr)')
    .action(async (vm: string, _o: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals() as OutputOptions & { config: string, interval: string, timeout: string }
      try {
        const period = Number(o.interval)
        const timeoutMs = Number(o.timeout)
        if (!Number.isInteger(period) || period < 100) throw new UsageError(`--interval "${o.interval}" must be an integer number of ms >= 100`)
        if (!Number.isInteger(timeoutMs) || timeoutMs < 0) throw new UsageError(`--timeout "${o.timeout}" must be an integer number of ms >= 0`)
        const { config } = await loadConfig(o.config, { skipSecrets: true })
        const client = ApiClient.forConfig(config)
        const progress = new Progress(progressMode(o))
        const tasks = new Map<string, ProgressTask>()
        const done = new Set<string>()
        const started = Date.now()
        try {
          for (;;) {
            const v = (await client.call<StatusDocument>('GET', '/v1/status')).vms.find(x => x.name === vm)
            if (v === undefined || !v.runningHere) throw new NotSourceHereError(vm, v?.owner ?? null)
            const total = v.capture?.scanBytes ?? 0
            for (const t of v.targets) {
              let task = tasks.get(t.node)
              if (task === undefined) { task = progress.task(`${vm} → ${t.node}`); tasks.set(t.node, task) }
              if (done.has(t.node)) continue
              if (t.state === 'in-sync') { task.update(seedSample(t, total)); task.finish('in sync'); done.add(t.node) } else task.update(seedSample(t, total))
            }
            if (v.targets.length > 0 && done.size === v.targets.length) {
              progress.stop()
              printResult(o, { vm, targets: v.targets.map(t => ({ node: t.node, state: t.state, ackedGeneration: t.ackedGeneration })), seconds: (Date.now() - started) / 1000 }, () => `${vm}: every target in sync (${v.targets.map(t => t.node).join(', ')})`)
              process.exitCode = EXIT_OK
              return
            }
            if (timeoutMs > 0 && Date.now() - started > timeoutMs) {
              progress.stop()
              printResult(o, { vm, inSync: false, targets: v.targets.map(t => ({ node: t.node, state: t.state, seedProgress: t.seedProgress ?? null })) }, () => `${vm}: not every target in sync after ${timeoutMs} ms`)
              process.exitCode = EXIT_FAILED
              return
            }
            await new Promise(resolve => setTimeout(resolve, period))
          }
        } finally { progress.stop() }
      } catch (err) { process.exitCode = printError(o, err) }
    })
}
