/**
 * `vmesh discover` and `vmesh protect`: what the hypervisor driver sees on this host, and
 * adding one of those VMs to the config (comments kept, validated before the file changes).
 */
import { join } from 'node:path'
import type { Command } from 'commander'
import { loadConfig } from '../../../config/load.ts'
import { systemClock } from '../../../common/clock.ts'
import { createDriver } from '../../hypervisor/index.ts'
import { discover, protectVm } from '../../hypervisor/discover.ts'
import { printError, printResult, EXIT_OK, UsageError, type OutputOptions } from '../output.ts'

async function driverFor (configPath: string): Promise<{ driver: NonNullable<ReturnType<typeof createDriver>>, protectedNames: string[] }> {
  const { config } = await loadConfig(configPath, { skipSecrets: true })
  const driver = createDriver(config.hypervisor, { cwd: config.dir, stateDir: join(config.node.dataDir, 'hypervisor'), clock: systemClock })
  if (driver === undefined) throw new UsageError('hypervisor.driver is "none" in the config; set a driver to discover VMs')
  return { driver, protectedNames: config.vms.map(v => v.name) }
}

export function registerDiscover (program: Command): void {
  program.command('discover')
    .description('list this host\'s VMs with their disks and files (through the hypervisor driver)')
    .option('--json', 'print JSON')
    .action(async (_o: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals() as OutputOptions & { config: string }
      try {
        const { driver, protectedNames } = await driverFor(o.config)
        const vms = await discover(driver, { protectedNames })
        printResult(o, { vms }, () => vms.length === 0
          ? 'no VMs found'
          : vms.map(v => `${v.name.padEnd(16)} ${v.state.padEnd(8)} ${v.protected ? 'protected' : '-'.padEnd(9)}  disks: ${v.disks.join(', ') || '-'}  files: ${v.files.join(', ') || '-'}`).join('\n'))
        process.exitCode = EXIT_OK
      } catch (err) { process.exitCode = printError(o, err) }
    })

  program.command('protect')
    .description('add a discovered VM to the config, replicating to the given peers (priority order)')
    .argument('<vm>', 'VM name as `vmesh discover` shows it')
    .requiredOption('--to <peer...>', 'peers to replicate to, in failover priority order')
    .option('--json', 'print JSON')
    .action(async (vm: string, _o: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals() as OutputOptions & { config: string, to: string[] }
      try {
        const { driver } = await driverFor(o.config)
        const inventory = await driver.list()
        const r = await protectVm(o.config, vm, inventory, o.to, { driver })
        printResult(o, r, () => `protected ${r.vm.name} → ${r.vm.replicateTo.join(', ')} in ${r.config}; run \`vmesh reload\``)
        process.exitCode = EXIT_OK
      } catch (err) { process.exitCode = printError(o, err) }
    })
}
