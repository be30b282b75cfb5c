/**
 * `vmesh failover VM [--to NODE] [--planned] [--force] [--point ID]`: asks the daemon to move a
 * VM's ownership, then follows status until the move is visible (or gives up after --timeout).
 * `vmesh failover VM --test [--point ID]` boots an isolated clone of a recovery point on this
 * node (it must hold a replica) without touching replication or ownership;
 * `vmesh failover VM --test --cleanup` removes it.
 * `vmesh failover --site S [--planned | --test [--cleanup]]` does that for every VM of site S
 * (daemon/ownership/site.ts) and prints a report per VM: where it started, the recovery point
 * and its age (RPO), the time to running (RTO).
 */
import type { Command } from 'commander'
import { loadConfig } from '../../../config/load.ts'
import { Progress, progressMode, type ProgressSample } from '../progress.ts'
import { ApiClient } from '../../api/client.ts'
import type { OperationStatus, StatusDocument } from '../../status.ts'
import type { TestFailoverRecord } from '../../test-failover/types.ts'
import type { SiteReport } from '../../ownership/site.ts'
import { VmeshError } from '../../../common/errors.ts'
import { exitCodeFor, printError, printResult, EXIT_OK, EXIT_FAILED, UsageError, type OutputOptions } from '../output.ts'

export interface FailoverFlags { to?: string, planned?: boolean, force?: boolean, test?: boolean, cleanup?: boolean, point?: string, site?: string }

/** What one `vmesh failover` invocation asks of the daemon. */
export type FailoverPlan =
  | { kind: 'move', body: { vm: string, to?: string, planned: boolean, force: boolean, point?: string } }
  | { kind: 'test', body: { vm: string, point?: string } }
  | { kind: 'cleanup', body: { vm: string } }
  | { kind: 'site', body: { site: string, planned: boolean, test: boolean, cleanup: boolean } }

/** `--site S`: every VM of the site; no VM name, no --to/--force/--point (each VM goes to its best holder). */
export function planSiteFailover (vm: string | undefined, o: FailoverFlags): FailoverPlan {
  if (vm !== undefined) throw new UsageError('--site moves every VM of the site: give no VM name')
  if (o.to !== undefined || o.force === true || o.point !== undefined) throw new UsageError('--site does not go with --to, --force or --point')
  if (o.cleanup === true && o.test !== true) throw new UsageError('--cleanup goes with --test (vmesh failover --site S --test --cleanup)')
  if (o.test === true && o.planned === true) throw new UsageError('--test does not go with --planned')
  return { kind: 'site', body: { site: o.site as string, planned: o.planned === true, test: o.test === true, cleanup: o.cleanup === true } }
}

/** The site report as text: one line per VM with where it started, its RPO and RTO. */
export function siteText (r: SiteReport): string {
  const lines = [`site ${r.site} (${r.mode}) from ${r.node}: ${r.vms.length} VM(s) in ${(r.tookMs / 1000).toFixed(1)} s`]
  for (const v of r.vms) {
    const where = v.node !== null ? `on ${v.node}` : ''
    const rpo = v.point === null ? '' : ` point gen ${v.point.generation}${v.point.ageMs !== null ? ` (RPO ${(v.point.ageMs / 1000).toFixed(1)} s)` : ''}`
    const rto = v.rtoMs !== null ? ` RTO ${(v.rtoMs / 1000).toFixed(1)} s` : ''
    lines.push(`  ${v.vm} (was on ${v.from}): ${v.state} ${where}${rpo}${rto}${v.detail !== undefined ? ` — ${v.detail}` : ''}`)
  }
  return lines.join('\n')
}

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

/** The final ship of this planned failover: the newest `final-ship` of VM to `to` begun after the request. */
export function plannedShip (ops: OperationStatus[], vm: string, to: string | undefined, earlier: ReadonlySet<string>): OperationStatus | undefined {
  return ops.filter(x => x.kind === 'final-ship' && x.vm === vm && !earlier.has(x.id) && (to === undefined || x.peer === to)).sort((a, b) => b.startedAtMs - a.startedAtMs)[0]
}

/** The bar's sample for a final ship: its bytes while it runs, then the start on the target. */
export function shipSample (ship: OperationStatus, moved: boolean, to: string | undefined): ProgressSample {
  const phase = moved ? 'started' : ship.state === 'running' ? ship.phase : ship.state === 'done' ? `final generation shipped; starting on ${to ?? '?'}` : `final ship failed: ${ship.error ?? 'unknown'}`
  return { doneBytes: ship.doneBytes, totalBytes: ship.totalBytes, phase, ...(ship.state === 'running' && ship.rateBytesPerSec !== null ? { rateBytesPerSec: ship.rateBytesPerSec } : {}) }
}

/** Restoring a large disk without reflinks takes a while: wait up to an hour, like `vmesh restore`. */
const TEST_TIMEOUT_MS = 3_600_000

export function registerFailover (program: Command): void {
  program.command('failover')
    .description('move a VM\'s ownership: unplanned (to this node or --to), --planned (zero data loss), --force (no quorum: read the README first); --test boots an isolated clone here')
    .argument('[vm]', 'VM name (none with --site)')
    .option('--site <site>', 'every VM owned by the nodes of this site (their site: label), in start order')
    .option('--to <node>', 'the node that should run it (default: this node, or the best replica holder)')
    .option('--planned', 'stop it on its owner, ship the final generation, start it on --to')
    .option('--force', 'take it without a majority of voters (risks a double start when the owner is not really down)')
    .option('--test', 'boot an isolated clone (<vm>-test, no network) of a recovery point on this node; replication and ownership go on')
    .option('--cleanup', 'with --test: turn the clone off and remove its files')
    .option('--point <id>', 'recovery point to use (see vmesh points; default: the latest consistent one)')
    .option('--timeout <ms>', 'how long to wait for the move', '30000')
    .option('--json', 'print JSON')
    .action(async (vmArg: string | undefined, _o: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals() as OutputOptions & FailoverFlags & { config: string, timeout: string }
      const vm = vmArg ?? ''
      try {
        if (o.site === undefined && vmArg === undefined) throw new UsageError('name a VM, or --site S')
        const plan = o.site !== undefined ? planSiteFailover(vmArg, o) : planFailover(vm, o)
        const { config } = await loadConfig(o.config, { skipSecrets: true })
        const client = ApiClient.forConfig(config)
        if (plan.kind === 'site') {
          const timeoutMs = Math.max(1000, Number(o.timeout) || 30000)
          const r = await client.call<SiteReport>('POST', '/v1/failover/site', { ...plan.body, timeoutMs }, { timeoutMs: plan.body.test ? TEST_TIMEOUT_MS : timeoutMs + 60_000 })
          printResult(o, r, () => siteText(r))
          const ok = r.vms.every(v => v.state === 'running' || v.state === 'removed' || v.state === 'absent' || v.state === 'elsewhere')
          process.exitCode = ok ? EXIT_OK : EXIT_FAILED
          return
        }
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
        const first = await client.call<StatusDocument>('GET', '/v1/status')
        const before = first.vms.find(v => v.name === vm)
        // a planned failover shows its final shipment as this node (the VM's source) counts it
        // (its `final-ship` operation: bytes of the final change set read and sent, rate, ETA),
        // then the start on the target
        const progress = plan.body.planned ? new Progress(progressMode(o)) : undefined
        const task = progress?.task(`planned failover ${vm} → ${o.to ?? '?'}`)
        const earlier = new Set((first.operations ?? []).map(x => x.id))
        let shipTotal = 0
        await client.call('POST', '/v1/failover', plan.body)
        const deadline = Date.now() + Math.max(1000, Number(o.timeout) || 30000)
        for (;;) {
          const doc = await client.call<StatusDocument>('GET', '/v1/status')
          const v = doc.vms.find(x => x.name === vm)
          const moved = v !== undefined && before !== undefined && v.epoch > before.epoch && (o.to === undefined || v.owner === o.to)
          if (task !== undefined) {
            const ship = plannedShip(doc.operations ?? [], vm, o.to, earlier)
            if (ship !== undefined) {
              task.update(shipSample(ship, moved, o.to))
            } else {
              // a daemon that lists no final ship (yet): the bytes the target still lacks
              const t = v?.targets.find(x => x.node === o.to)
              const pending = t?.bytesPending ?? 0
              shipTotal = Math.max(shipTotal, pending)
              task.update({ doneBytes: shipTotal - pending, totalBytes: shipTotal, phase: moved ? 'started' : v?.runningHere === true ? `stopping ${vm}` : `starting on ${o.to ?? '?'}`, ...(t?.rateBytesPerSec !== undefined ? { rateBytesPerSec: t.rateBytesPerSec } : {}) })
            }
            if (moved || Date.now() > deadline) { if (moved) task.finish(`running on ${v?.owner ?? '?'}`); progress?.stop() }
          }
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
