/**
 * `vmesh failover VM [--to NODE] [--planned] [--force]`: asks the daemon to move a VM's
 * ownership, then follows status until the move is visible (or gives up after --timeout).
 */
import type { Command } from 'commander'
import { loadConfig } from '../../../config/load.ts'
import { ApiClient } from '../../api/client.ts'
import type { StatusDocument } from '../../status.ts'
import { printError, printResult, EXIT_OK, EXIT_FAILED, UsageError, type OutputOptions } from '../output.ts'

export function registerFailover (program: Command): void {
  program.command('failover')
    .description('move a VM\'s ownership: unplanned (to this node or --to), --planned (zero data loss), --force (no quorum: read the README first)')
    .argument('<vm>', 'VM name')
    .option('--to <node>', 'the node that should run it (default: this node, or the best replica holder)')
    .option('--planned', 'stop it on its owner, ship the final generation, start it on --to')
    .option('--force', 'take it without a majority of voters (risks a double start when the owner is not really down)')
    .option('--timeout <ms>', 'how long to wait for the move', '30000')
    .option('--json', 'print JSON')
    .action(async (vm: string, _o: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals() as OutputOptions & { config: string, to?: string, planned?: boolean, force?: boolean, timeout: string }
      try {
        if (o.planned === true && o.to === undefined) throw new UsageError('--planned needs --to NODE')
        if (o.planned === true && o.force === true) throw new UsageError('--planned and --force do not go together')
        const { config } = await loadConfig(o.config, { skipSecrets: true })
        const client = ApiClient.forConfig(config)
        const before = (await client.call<StatusDocument>('GET', '/v1/status')).vms.find(v => v.name === vm)
        await client.call('POST', '/v1/failover', { vm, ...(o.to !== undefined ? { to: o.to } : {}), planned: o.planned === true, force: o.force === true })
        const deadline = Date.now() + Math.max(1000, Number(o.timeout) || 30000)
        for (;;) {
          const v = (await client.call<StatusDocument>('GET', '/v1/status')).vms.find(x => x.name === vm)
          const moved = v !== undefined && before !== undefined && v.epoch > before.epoch && (o.to === undefined || v.owner === o.to)
          if (moved && v !== undefined) {
            printResult(o, { vm, owner: v.owner, epoch: v.epoch, previousOwner: before?.owner ?? null }, () => `${vm}: owner ${v.owner} at epoch ${v.epoch} (was ${before?.owner ?? '?'} at epoch ${before?.epoch ?? '?'})`)
            process.exitCode = EXIT_OK
            return
          }
          if (Date.now() > deadline) {
            printResult(o, { vm, moved: false, owner: v?.owner ?? null, epoch: v?.epoch ?? null }, () => `${vm}: not moved within the timeout (owner ${v?.owner ?? '?'}, epoch ${v?.epoch ?? '?'}); see the daemon log`)
            process.exitCode = EXIT_FAILED
            return
          }
          await new Promise(resolve => setTimeout(resolve, 250))
        }
      } catch (err) { process.exitCode = printError(o, err) }
    })
}
