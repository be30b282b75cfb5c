/**
 * Test failover (`vmesh failover VM --test`): boots a clone of one recovery point of a VM whose
 * replica this node holds, cut off from the network, while replication and ownership go on
 * untouched; `--test --cleanup` removes it. Like Hyper-V Replica's Test Failover.
 *
 *   start    checks (driver can test, VM not running here, replica held, no test yet)
 *            → test.json {phase: restoring} → replication.restore(point) into files/
 *            → {phase: starting} → driver.startTest(vm, '<vm>-test', files, instance/)
 *            → {phase: running}
 *   cleanup  driver.stopTest('<vm>-test') unless nothing was started → rm -r the folder
 *
 * Everything lives in <dataDir>/test-failover/<vm>/, and test.json is replaced atomically
 * before each step acts, so a daemon restarted mid-way still knows what to clean up. Nothing
 * here touches ownership, leases, epochs or the replica: restore copies (reflinks where it can)
 * out of the store while the store keeps applying generations.
 */
import { mkdir, readdir, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import type { Clock } from '../../common/clock.ts'
import { errorMessage, hasCode } from '../../common/errors.ts'
import type { Logger } from '../log.ts'
import { BadRequestError } from '../api/errors.ts'
import { supportsTestInstances, type HypervisorDriver, type TestInstanceOps } from '../hypervisor/driver.ts'
import { HypervisorUnsupportedError } from '../hypervisor/errors.ts'
import { readState, writeState } from '../hypervisor/state-file.ts'
import { VM_NAME_RE } from '../../common/names.ts'
import { NoReplicaError } from '../replication/errors.ts'
import { startFiles } from '../replication/start-files.ts'
import { NoRecoveryPointError, RecoveryPointNotFoundError, TestFailoverBusyError, TestFailoverExistsError, TestFailoverStateError, VmRunsHereError } from './errors.ts'
import type { TestFailoverEntry, TestFailoverOps, TestFailoverRecord } from './types.ts'
import { registerTestFailoverRoutes } from './api.ts'
import type { RouteRegistry } from '../api/routes.ts'
import type { Startable } from '../startable.ts'

/** A test of `web01` runs as `web01-test`. */
export const TEST_SUFFIX = '-test'
const STATE_FILE = 'test.json'
const VM_NAME = VM_NAME_RE

/** The slice of ReplicationService this needs (it matches structurally). */
export interface TestFailoverReplication {
  points: (vm: string) => Promise<{ replicas: Array<{ from: string, points: Array<{ id: string, generation: number, createdAtMs: number }> }> }>
  restore: (vm: string, pointId: string, toDir: string, from?: string) => Promise<{ pointId: string, generation: number, files: Record<string, string>, from: string }>
}

export interface TestFailoverComponents {
  clock: Clock
  log: Logger
  replication: TestFailoverReplication
  /** The same driver instance ownership uses (drivers cache their runtime state). */
  driver?: HypervisorDriver
  /** True while the VM runs on this node as production (ownership's view). */
  runsHere?: (vm: string) => boolean
  /** Where its control API routes are registered (the daemon's API server). */
  api?: Pick<RouteRegistry, 'route' | 'clientErrors'>
}

export interface TestFailoverInit {
  /** The node's dataDir; tests live in `<dataDir>/test-failover/<vm>/`. */
  dataDir: string
  /** This node's name, reported with each test. */
  node: string
}

export class TestFailoverService implements TestFailoverOps, Startable {
  private readonly root: string
  private readonly busy = new Set<string>()
  private readonly records = new Map<string, TestFailoverRecord>()
  private started = false

  constructor (private readonly components: TestFailoverComponents, private readonly init: TestFailoverInit) {
    this.root = join(init.dataDir, 'test-failover')
    if (components.api !== undefined) registerTestFailoverRoutes(components.api, this)
  }

  /** Loads the tests left by an earlier run (they outlive daemon restarts, like VMs). */
  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    for (const e of await this.list({ probe: false })) {
      if (e.phase !== 'damaged') this.records.set(e.vm, stripRunning(e))
      this.components.log.info({ vm: e.vm, testName: e.testName, phase: e.phase }, 'a test failover from an earlier run is still here (vmesh failover VM --test --cleanup removes it)')
    }
  }

  /** Running test instances are left alone: a daemon restart must not end an operator's test. */
  async stop (): Promise<void> { this.started = false }

  dirOf (vm: string): string { return join(this.root, vm) }

  /** The tests this node knows of, from memory (for the status document). */
  snapshot (): TestFailoverRecord[] { return [...this.records.values()].sort((a, b) => a.vm.localeCompare(b.vm)) }

  /** Boots an isolated clone of `opts.point` (default: the newest recovery point here). */
  async startTest (vm: string, opts: { point?: string } = {}): Promise<TestFailoverRecord> {
    checkName(vm)
    return await this.exclusive(vm, async () => {
      const { driver, log, clock } = this.components
      const dir = this.dirOf(vm)
      if (await exists(dir)) throw new TestFailoverExistsError(vm)
      const d = this.testDriver()
      if (this.components.runsHere?.(vm) === true || await d.isRunning(vm)) throw new VmRunsHereError(vm)
      const point = await this.choosePoint(vm, opts.point)
      await mkdir(this.root, { recursive: true, mode: 0o700 })
      await mkdir(dir, { mode: 0o700 })
      let rec: TestFailoverRecord = {
        vm, testName: `${vm}${TEST_SUFFIX}`, node: this.init.node, point: point.id, generation: 0, from: point.from,
        pointCreatedAt: point.createdAtMs, dir, startedAt: clock.wallNow(), phase: 'restoring'
      }
      await this.save(rec)
      try {
        const r = await this.components.replication.restore(vm, point.id, join(dir, 'files'), point.from)
        rec = { ...rec, point: r.pointId, generation: r.generation, from: r.from, phase: 'starting' }
        await this.save(rec)
        await d.startTest(vm, rec.testName, startFiles(r.files, join(dir, 'instance')))
        rec = { ...rec, phase: 'running' }
        await this.save(rec)
      } catch (err) {
        await this.undo(rec, err)
        throw err
      }
      log.warn({ vm, testName: rec.testName, point: rec.point, generation: rec.generation, from: rec.from, dir, driver: driver?.kind }, 'test failover started (isolated clone; replication and ownership untouched)')
      return rec
    })
  }

  /** Turns the clone off and removes its folder. Idempotent: nothing to remove is success. */
  async cleanup (vm: string): Promise<{ vm: string, testName: string, removed: boolean }> {
    checkName(vm)
    return await this.exclusive(vm, async () => {
      const dir = this.dirOf(vm)
      const testName = `${vm}${TEST_SUFFIX}`
      if (!(await exists(dir))) { this.records.delete(vm); return { vm, testName, removed: false } }
      let rec: TestFailoverRecord | undefined | 'damaged'
      try { rec = await this.read(vm) } catch (err) { rec = 'damaged'; this.components.log.warn({ vm, error: errorMessage(err) }, 'test failover state unreadable; turning the clone off by name') }
      // no test.json: the start died before it wrote one, so nothing was started
      const mayRun = rec === 'damaged' || (rec !== undefined && rec.phase !== 'restoring')
      if (mayRun) await this.testDriver().stopTest(rec === 'damaged' || rec === undefined ? testName : rec.testName)
      await rm(dir, { recursive: true, force: true })
      this.records.delete(vm)
      this.components.log.warn({ vm, testName }, 'test failover removed')
      return { vm, testName, removed: true }
    })
  }

  /** Every test folder here, with whether its clone runs (null: the driver could not say). */
  async list (opts: { probe?: boolean } = {}): Promise<TestFailoverEntry[]> {
    let names: string[]
    try { names = await readdir(this.root) } catch { return [] }
    const out: TestFailoverEntry[] = []
    for (const vm of names.filter(n => VM_NAME.test(n)).sort()) {
      const dir = this.dirOf(vm)
      let rec: TestFailoverRecord | undefined
      try { rec = await this.read(vm) } catch (err) {
        out.push({ vm, testName: `${vm}${TEST_SUFFIX}`, dir, phase: 'damaged', error: errorMessage(err), running: null })
        continue
      }
      if (rec === undefined) continue
      let running: boolean | null = rec.phase === 'restoring' ? false : null
      const d = this.components.driver
      if (running === null && opts.probe !== false && d !== undefined && supportsTestInstances(d)) {
        try { running = await d.isTestRunning(rec.testName) } catch { running = null }
      }
      out.push({ ...rec, running })
    }
    return out
  }

  private testDriver (): HypervisorDriver & TestInstanceOps {
    const d = this.components.driver
    if (d === undefined) throw new HypervisorUnsupportedError('none', 'start an isolated test instance', 'this node has no hypervisor driver')
    if (!supportsTestInstances(d)) throw new HypervisorUnsupportedError(d.kind, 'start an isolated test instance')
    return d
  }

  private async choosePoint (vm: string, wanted: string | undefined): Promise<{ id: string, generation: number, createdAtMs: number, from: string }> {
    let reps
    try { reps = (await this.components.replication.points(vm)).replicas } catch (err) {
      if (hasCode(err, 'ERR_REPLICATION_UNKNOWN_VM')) throw new NoReplicaError(vm)
      throw err
    }
    if (reps.length === 0) throw new NoReplicaError(vm)
    const all = reps.flatMap(r => r.points.map(p => ({ id: p.id, generation: p.generation, createdAtMs: p.createdAtMs, from: r.from })))
    const candidates = wanted === undefined ? all : all.filter(p => p.id === wanted)
    // replicas from several sources (after a failback) number generations separately: newest by time
    const best = candidates.sort((a, b) => b.createdAtMs - a.createdAtMs || b.generation - a.generation)[0]
    if (best === undefined) throw wanted === undefined ? new NoRecoveryPointError(vm) : new RecoveryPointNotFoundError(vm, wanted)
    return best
  }

  /** After a failed start: turn off what may have started, then remove the folder — unless the clone may still run. */
  private async undo (rec: TestFailoverRecord, cause: unknown): Promise<void> {
    const { log } = this.components
    // a VM already running under the test name is not ours to stop
    if (rec.phase === 'starting' && !hasCode(cause, 'ERR_VM_ALREADY_RUNNING')) {
      try { await this.testDriver().stopTest(rec.testName) } catch (err) {
        log.error({ vm: rec.vm, testName: rec.testName, error: errorMessage(err) }, 'test failover failed and its clone could not be turned off; kept for vmesh failover --test --cleanup')
        return
      }
    }
    await rm(rec.dir, { recursive: true, force: true }).catch((err) => { log.error({ dir: rec.dir, error: errorMessage(err) }, 'could not remove a failed test failover') })
    this.records.delete(rec.vm)
  }

  private async exclusive<T> (vm: string, fn: () => Promise<T>): Promise<T> {
    if (this.busy.has(vm)) throw new TestFailoverBusyError(vm)
    this.busy.add(vm)
    try { return await fn() } finally { this.busy.delete(vm) }
  }

  private async save (rec: TestFailoverRecord): Promise<void> {
    await writeState(join(rec.dir, STATE_FILE), { version: 1, ...rec })
    this.records.set(rec.vm, rec)
  }

  /** The record of `vm`'s test, or undefined when its folder has no test.json. */
  private async read (vm: string): Promise<TestFailoverRecord | undefined> {
    const file = join(this.dirOf(vm), STATE_FILE)
    let doc: unknown
    try { doc = await readState(file) } catch (err) { throw new TestFailoverStateError(file, 'unreadable', { cause: err }) }
    if (doc === undefined) return undefined
    const r = recordSchema.safeParse(doc)
    if (!r.success || r.data.vm !== vm) throw new TestFailoverStateError(file, 'not a test failover record')
    const { version: _v, ...rec } = r.data
    return { ...rec, dir: this.dirOf(vm) }
  }
}

const recordSchema = z.object({
  version: z.literal(1),
  vm: z.string(),
  testName: z.string().min(1),
  node: z.string(),
  point: z.string(),
  generation: z.number().int().min(0),
  from: z.string(),
  pointCreatedAt: z.number(),
  dir: z.string(),
  startedAt: z.number(),
  phase: z.enum(['restoring', 'starting', 'running'])
})

function checkName (vm: string): void {
  if (!VM_NAME.test(vm)) throw new BadRequestError(`bad VM name ${JSON.stringify(vm)}`)
}

async function exists (p: string): Promise<boolean> {
  try { await stat(p); return true } catch { return false }
}

function stripRunning (e: TestFailoverRecord & { running: boolean | null }): TestFailoverRecord {
  const { running: _r, ...rec } = e
  return rec
}
