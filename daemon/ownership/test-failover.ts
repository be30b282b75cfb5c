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
import { extname, join } from 'node:path'
import { z } from 'zod'
import type { Clock } from '../../common/clock.ts'
import { VmeshError, errorMessage, hasCode } from '../../common/errors.ts'
import type { Logger } from '../log.ts'
import type { ApiServer } from '../api/server.ts'
import { BadRequestError } from '../api/errors.ts'
import { supportsTestInstances, type HypervisorDriver, type TestInstanceOps, type VmStartFiles } from '../hypervisor/driver.ts'
import { HypervisorUnsupportedError } from '../hypervisor/errors.ts'
import { readState, writeState } from '../hypervisor/state-file.ts'
import { VM_NAME_RE } from '../../config/schema.ts'
import { NoReplicaError } from './host.ts'

/** A test of `web01` runs as `web01-test`. */
export const TEST_SUFFIX = '-test'
const STATE_FILE = 'test.json'
const VM_NAME = VM_NAME_RE
const DISK_EXT = new Set(['.vhd', '.vhdx', '.avhd', '.avhdx', '.img', '.raw', '.qcow2'])

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
}

export interface TestFailoverInit {
  /** The node's dataDir; tests live in `<dataDir>/test-failover/<vm>/`. */
  dataDir: string
  /** This node's name, reported with each test. */
  node: string
}

export type TestPhase = 'restoring' | 'starting' | 'running'

/** What test.json holds, and what start() returns. */
export interface TestFailoverRecord {
  vm: string
  testName: string
  node: string
  point: string
  /** The point's generation; 0 while restoring. */
  generation: number
  /** The node the replica (and so the point) came from. */
  from: string
  pointCreatedAt: number
  /** `<dataDir>/test-failover/<vm>`: test.json, files/ (the restored point), instance/ (the hypervisor's runtime files). */
  dir: string
  /** Wall-clock ms of the request. */
  startedAt: number
  phase: TestPhase
}

export type TestFailoverEntry =
  | (TestFailoverRecord & { running: boolean | null })
  | { vm: string, testName: string, dir: string, phase: 'damaged', error: string, running: null }

export class TestFailoverService {
  private readonly root: string
  private readonly busy = new Set<string>()
  private readonly records = new Map<string, TestFailoverRecord>()
  private started = false

  constructor (private readonly components: TestFailoverComponents, private readonly init: TestFailoverInit) {
    this.root = join(init.dataDir, 'test-failover')
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

/** Restored files as a driver wants them: disks by extension, the rest whole, source → copy. */
export function startFiles (restored: Record<string, string>, dir: string): VmStartFiles {
  const disks: string[] = []
  const files: string[] = []
  for (const [src, path] of Object.entries(restored)) {
    if (DISK_EXT.has(extname(src).toLowerCase())) disks.push(path); else files.push(path)
  }
  return { disks, files, dir, sourceMap: { ...restored } }
}

const startBody = z.strictObject({ vm: z.string().min(1), point: z.string().min(1).max(64).optional() })
const cleanupBody = z.strictObject({ vm: z.string().min(1) })

function parse<T> (schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body)
  if (!r.success) throw new BadRequestError(`bad request: ${r.error.issues.map(i => `${i.path.join('.')}: ${i.message}`).join('; ')}`)
  return r.data
}

/** POST /v1/failover/test {vm, point?}, POST /v1/failover/test/cleanup {vm}, GET /v1/failover/test. */
export function registerTestFailoverRoutes (api: Pick<ApiServer, 'route'>, service: TestFailoverService): void {
  api.route('POST', '/v1/failover/test', async ({ body }) => {
    const b = parse(startBody, body)
    return await service.startTest(b.vm, b.point !== undefined ? { point: b.point } : {})
  })
  api.route('POST', '/v1/failover/test/cleanup', async ({ body }) => await service.cleanup(parse(cleanupBody, body).vm))
  api.route('GET', '/v1/failover/test', async () => ({ tests: await service.list() }))
}
