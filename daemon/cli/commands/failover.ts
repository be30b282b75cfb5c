/**
 * `vmesh failover VM [--to NODE] [--planned] [--force] [--point ID]`: asks the daemon to move a
 * VM's ownership, then follows status until the move is visible (or gives up after --timeout).
 * `vmesh failover VM --test [--point ID]` boots an isolated clone of a recovery point on this
 * node (it must hold a replica) without touching replication or ownership;
 * `vmesh failover VM --test --cleanup` removes it.
 */
import type { Command } from 'commander'
import { loadConfig } from '../../../config/load.ts'
import { ApiClient } from '../../api/client.ts'
import type { StatusDocument } from '../../status.ts'
import type { TestFailoverRecord } from '../../test-failover/types.ts'
import { VmeshError } from '../../../common/errors.ts'
import { exitCodeFor, printError, printResult, EXIT_OK, EXIT_FAILED, UsageError, type OutputOptions } from '../output.ts'

export interface FailoverFlags { to?: string, planned?: boolean, force?: boolean, test?: boolean, cleanup?: boolean, point?: string }

/** What one `vmesh failover` invocation asks of the daemon. */
export type FailoverPlan =
  | { kind: 'move', body: { vm: string, to?: string, planned: boolean, force: boolean, point?: string } }
  | { kind: 'test', body: { vm: string, point?: string } }
  | { kind: 'cleanup', body: { vm: string } }

/** Checks the flag combination (UsageError → exit 2) and builds the request. */
export function planFailover (vm: string, o: FailoverFlags): FailoverPlan {
  if (o.cleanup === true && o.test !== true) throw new UsageError('--cleanup goes with --test (vmesh failover VM --test --cleanup)')
  if (o.test === true) {
    // a test boots here, on this node's replica: the operator picks the node by running the CLI there
    if (o.to !== undefined) throw new UsageError('--test runs on this node; run it on the node that holds the replica instead of passing --to')
    if (o.planned === true || o.force === true) throw new UsageError('--test does not go with --planned or --force')
    if (o.cleanup === true) {
      if (o.point !== undefined) throw new UsageError('--cleanup does not take --point')
      return { kind: 'cleanup', body: { vm } }
    }
    return { kind: 'test', body: { vm, ...(o.point !== undefined ? { point: o.point } : {}) } }
  }
  if (o.planned === true && o.to === undefined) throw new UsageError('--planned needs --to NODE')
  if (o.planned === true && o.force === true) throw new UsageError('--planned and --force do not go together')
  return { kind: 'move', body: { vm, ...(o.to !== undefined ? { to: o.to } : {}), planned: o.planned === true, force: o.force === true, ...(o.point !== undefined ? { point: o.point } : {}) } }
}

/** Restoring a large disk without reflinks takes a while: wait up to an hour, like `vmesh restore`. */
const TEST_TIMEOUT_MS = 3_600_000

export function registerFailover (program: Command): void {
  program.command('failover')
    .description('move a VM\'s ownership: unplanned (to this node or --to), --planned (zero data loss), --force (no quorum: read the README first); --test boots an isolated clone here')
    .argument('<vm>', 'VM name')
    .option('--to <node>', 'the node that should run it (default: this node, or the best replica holder)')
    .option('--planned', 'stop it on its owner, ship the final generation, start it on --to')
    .option('--force', 'take it without a majority of voters (risks a double start when the owner is not really down)')
    .option('--test', 'boot an isolated clone (<vm>-test, no network) of a recovery point on this node; replication and ownership go on')
    .option('--cleanup', 'with --test: turn the clone off and remove its files')
    .option('--point <id>', 'recovery point to use (see vmesh points; default: the latest consistent one)')
    .option('--timeout <ms>', 'how long to wait for the move', '30000')
    .option('--json', 'print JSON')
    .action(async (vm: string, _o: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals() as OutputOptions & FailoverFlags & { config: string, timeout: string }
      try {
        const plan = planFailover(vm, o)
        const { config } = await loadConfig(o.config, { skipSecrets: true })
        const client = ApiClient.forConfig(config)
        if (plan.kind === 'test') {
          const r = await client.call<TestFailoverRecord>('POST', '/v1/failover/test', plan.body, { timeoutMs: TEST_TIMEOUT_MS })
          printResult(o, r, () => [
            `${vm}: test instance ${r.testName} running on ${r.node}, isolated from the network`,
            `  recovery point ${r.point} (generation ${r.generation} from ${r.from}, ${new Date(r.pointCreatedAt).toISOString()})`,
            `  files in ${r.dir}`,
            `  replication and ownership of ${vm} are unchanged; remove it with: vmesh failover ${vm} --test --cleanup`
          ].join('\n'))
          process.exitCode = EXIT_OK
          return
        }
        if (plan.kind === 'cleanup') {
          const r = await client.call<{ vm: string, testName: string, removed: boolean }>('POST', '/v1/failover/test/cleanup', plan.body, { timeoutMs: 600_000 })
          printResult(o, r, () => r.removed ? `${vm}: test instance ${r.testName} turned off and removed` : `${vm}: no test failover here (nothing to remove)`)
          process.exitCode = EXIT_OK
          return
        }
        const before = (await client.call<StatusDocument>('GET', '/v1/status')).vms.find(v => v.name === vm)
        await client.call('POST', '/v1/failover', plan.body)
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
      } catch (err) {
        // text mode names the code too: scripts that do not use --json still branch on it
        if (o.json !== true && err instanceof VmeshError) {
          process.stderr.write(`vmesh: ${err.message} [${err.code}]\n`)
          process.exitCode = exitCodeFor(err)
        } else {
          process.exitCode = printError(o, err)
        }
      }
    })
}
