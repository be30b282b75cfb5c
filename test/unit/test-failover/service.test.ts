import assert from 'node:assert/strict'
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ManualClock } from '../../../common/clock.ts'
import { VmeshError } from '../../../common/errors.ts'
import { silentLogger } from '../../../daemon/log.ts'
import type { HypervisorDriver, TestInstanceOps, VmStartFiles } from '../../../daemon/hypervisor/driver.ts'
import { VmAlreadyRunningError } from '../../../daemon/hypervisor/errors.ts'
import { TestFailoverService, type TestFailoverReplication } from '../../../daemon/test-failover/service.ts'
import { registerTestFailoverRoutes } from '../../../daemon/test-failover/api.ts'
import type { Handler } from '../../../daemon/api/server.ts'
import { tempDir } from '../../helpers/tmp.ts'

/** A driver that only records: production operations fail the test if anything calls them. */
class FakeDriver implements HypervisorDriver, TestInstanceOps {
  readonly kind = 'command' as const
  readonly calls: string[] = []
  readonly running = new Set<string>()
  readonly started: Array<{ vm: string, testName: string, files: VmStartFiles }> = []
  failStart?: Error
  failStop?: Error
  async list (): Promise<never[]> { return [] }
  async start (): Promise<void> { throw new Error('production start must not be called') }
  async turnOff (): Promise<void> { throw new Error('production turnOff must not be called') }
  async isRunning (vm: string): Promise<boolean> { this.calls.push(`isRunning ${vm}`); return this.running.has(vm) }
  async fenceAction (): Promise<never> { throw new Error('fenceAction must not be called') }
  async startTest (vm: string, testName: string, files: VmStartFiles): Promise<void> {
    this.calls.push(`startTest ${vm} ${testName}`)
    this.started.push({ vm, testName, files })
    if (this.failStart !== undefined) throw this.failStart
    this.running.add(testName)
  }

  async stopTest (testName: string): Promise<void> {
    this.calls.push(`stopTest ${testName}`)
    if (this.failStop !== undefined) throw this.failStop
    this.running.delete(testName)
  }

  async isTestRunning (testName: string): Promise<boolean> { return this.running.has(testName) }
}

class UnknownVm extends VmeshError { constructor () { super('ERR_REPLICATION_UNKNOWN_VM', 'unknown') } }

/** Points per VM; restore writes one real file per source path, as the replica store does. */
class FakeReplication implements TestFailoverReplication {
  readonly replicas = new Map<string, Array<{ from: string, points: Array<{ id: string, generation: number, createdAtMs: number }> }>>()
  readonly restores: Array<{ vm: string, pointId: string, toDir: string, from?: string }> = []
  failRestore?: Error
  gate?: Promise<void>
  async points (vm: string): Promise<{ replicas: Array<{ from: string, points: Array<{ id: string, generation: number, createdAtMs: number }> }> }> {
    const r = this.replicas.get(vm)
    if (r === undefined) throw new UnknownVm()
    return { replicas: r }
  }

  async restore (vm: string, pointId: string, toDir: string, from?: string): Promise<{ pointId: string, generation: number, files: Record<string, string>, from: string }> {
    this.restores.push({ vm, pointId, toDir, ...(from !== undefined ? { from } : {}) })
    if (this.gate !== undefined) await this.gate
    if (this.failRestore !== undefined) throw this.failRestore
    await mkdir(toDir, { recursive: false })
    const files: Record<string, string> = {}
    for (const src of [`/vms/${vm}/${vm}.vhdx`, `/vms/${vm}/${vm}.vmcx`]) {
      const name = src.split('/').pop() as string
      await writeFile(join(toDir, name), `point ${pointId} of ${src}`)
      files[src] = join(toDir, name)
    }
    return { pointId, generation: Number(pointId), files, from: from ?? 'hv-a' }
  }
}

async function exists (p: string): Promise<boolean> { try { await stat(p); return true } catch { return false } }

describe('ownership/test-failover service', () => {
  let dir: string
  let cleanupTmp: () => Promise<void>
  let clock: ManualClock
  let driver: FakeDriver
  let repl: FakeReplication
  let runsHere: Set<string>
  const make = (over: { driver?: HypervisorDriver | null } = {}): TestFailoverService => new TestFailoverService({
    clock,
    log: silentLogger(),
    replication: repl,
    ...(over.driver === null ? {} : { driver: over.driver ?? driver }),
    runsHere: (vm) => runsHere.has(vm)
  }, { dataDir: join(dir, 'data'), node: 'hv-b' })

  beforeEach(async () => {
    ({ dir, cleanup: cleanupTmp } = await tempDir('vmesh-testfo-'))
    clock = new ManualClock(0, 1_800_000_000_000)
    driver = new FakeDriver()
    repl = new FakeReplication()
    runsHere = new Set()
    repl.replicas.set('web01', [{ from: 'hv-a', points: [{ id: '40', generation: 40, createdAtMs: 1000 }, { id: '42', generation: 42, createdAtMs: 2000 }, { id: '41', generation: 41, createdAtMs: 1500 }] }])
  })
  afterEach(async () => { await cleanupTmp() })

  it('boots the latest point as <vm>-test from restored files in its own folder; production untouched', async () => {
    const s = make()
    await s.start()
    const rec = await s.startTest('web01')
    const tdir = join(dir, 'data', 'test-failover', 'web01')
    assert.deepEqual(rec, { vm: 'web01', testName: 'web01-test', node: 'hv-b', point: '42', generation: 42, from: 'hv-a', pointCreatedAt: 2000, dir: tdir, startedAt: 1_800_000_000_000, phase: 'running' })
    assert.deepEqual(repl.restores, [{ vm: 'web01', pointId: '42', toDir: join(tdir, 'files'), from: 'hv-a' }])
    assert.equal(driver.started.length, 1)
    assert.deepEqual(driver.started[0], {
      vm: 'web01',
      testName: 'web01-test',
      files: {
        disks: [join(tdir, 'files', 'web01.vhdx')],
        files: [join(tdir, 'files', 'web01.vmcx')],
        dir: join(tdir, 'instance'),
        sourceMap: { '/vms/web01/web01.vhdx': join(tdir, 'files', 'web01.vhdx'), '/vms/web01/web01.vmcx': join(tdir, 'files', 'web01.vmcx') }
      }
    })
    assert.equal(await readFile(join(tdir, 'files', 'web01.vhdx'), 'utf8'), 'point 42 of /vms/web01/web01.vhdx')
    // only the test instance was touched: the production VM was asked about, never started or stopped
    assert.deepEqual(driver.calls, ['isRunning web01', 'startTest web01 web01-test'])
    const onDisk = JSON.parse(await readFile(join(tdir, 'test.json'), 'utf8')) as Record<string, unknown>
    assert.equal(onDisk.phase, 'running')
    assert.equal(onDisk.point, '42')
    assert.deepEqual((await s.list()).map(e => [e.vm, e.phase, e.running]), [['web01', 'running', true]])
    assert.deepEqual(s.snapshot().map(r => r.testName), ['web01-test'])
  })

  it('--point picks that point; an unknown point, no points, no replica are typed errors', async () => {
    const s = make()
    const rec = await s.startTest('web01', { point: '40' })
    assert.equal(rec.point, '40')
    assert.equal(rec.pointCreatedAt, 1000)
    await s.cleanup('web01')
    await assert.rejects(s.startTest('web01', { point: '7' }), { name: 'RecoveryPointNotFoundError', code: 'ERR_TEST_FAILOVER_POINT_NOT_FOUND' })
    repl.replicas.set('db01', [{ from: 'hv-a', points: [] }])
    await assert.rejects(s.startTest('db01'), { name: 'NoRecoveryPointError', code: 'ERR_TEST_FAILOVER_NO_POINT' })
    await assert.rejects(s.startTest('ghost'), { name: 'NoReplicaError', code: 'ERR_NO_REPLICA' })
    // nothing was left behind by the refusals
    assert.deepEqual(await readdir(join(dir, 'data', 'test-failover')), [])
  })

  it('with replicas from two sources, the newest point by time wins and is restored from its source', async () => {
    repl.replicas.set('web01', [
      { from: 'hv-a', points: [{ id: '90', generation: 90, createdAtMs: 1000 }] },
      { from: 'hv-c', points: [{ id: '5', generation: 5, createdAtMs: 3000 }] }
    ])
    const rec = await make().startTest('web01')
    assert.equal(rec.point, '5')
    assert.equal(repl.restores[0]?.from, 'hv-c')
  })

  it('refuses a second test of the same VM, and any operation while one is in flight', async () => {
    const s = make()
    await s.startTest('web01')
    await assert.rejects(s.startTest('web01'), { name: 'TestFailoverExistsError', code: 'ERR_TEST_FAILOVER_EXISTS' })
    assert.equal(driver.started.length, 1)

    let open!: () => void
    repl.gate = new Promise<void>(resolve => { open = resolve })
    repl.replicas.set('db01', [{ from: 'hv-a', points: [{ id: '3', generation: 3, createdAtMs: 1 }] }])
    const first = s.startTest('db01')
    await assert.rejects(s.startTest('db01'), { name: 'TestFailoverBusyError', code: 'ERR_TEST_FAILOVER_BUSY' })
    await assert.rejects(s.cleanup('db01'), { name: 'TestFailoverBusyError' })
    open()
    assert.equal((await first).phase, 'running')
  })

  it('refuses when the VM runs here as production (ownership says so, or the hypervisor does)', async () => {
    runsHere.add('web01')
    await assert.rejects(make().startTest('web01'), { name: 'VmRunsHereError', code: 'ERR_TEST_FAILOVER_RUNS_HERE' })
    runsHere.clear()
    driver.running.add('web01')
    await assert.rejects(make().startTest('web01'), { name: 'VmRunsHereError' })
    assert.equal(driver.started.length, 0)
    assert.equal(repl.restores.length, 0)
  })

  it('without a driver, or with one that cannot isolate a clone: HypervisorUnsupportedError', async () => {
    await assert.rejects(make({ driver: null }).startTest('web01'), { name: 'HypervisorUnsupportedError', code: 'ERR_HYPERVISOR_UNSUPPORTED' })
    const plain: HypervisorDriver = { kind: 'qemu', list: async () => [], start: async () => {}, turnOff: async () => {}, isRunning: async () => false, fenceAction: async () => ({ kind: 'kill', match: 'x', timeoutMs: 1 }) }
    await assert.rejects(make({ driver: plain }).startTest('web01'), { name: 'HypervisorUnsupportedError' })
    assert.equal(repl.restores.length, 0)
  })

  it('a bad VM name is a bad request (never a path outside the test folder)', async () => {
    for (const bad of ['../x', 'a/b', '', '.hidden']) {
      await assert.rejects(make().startTest(bad), { name: 'BadRequestError', code: 'ERR_BAD_REQUEST' }, bad)
      await assert.rejects(make().cleanup(bad), { name: 'BadRequestError' }, bad)
    }
  })

  it('cleanup turns the clone off and removes its folder; again is a no-op', async () => {
    const s = make()
    await s.startTest('web01')
    const tdir = join(dir, 'data', 'test-failover', 'web01')
    assert.deepEqual(await s.cleanup('web01'), { vm: 'web01', testName: 'web01-test', removed: true })
    assert.equal(driver.running.has('web01-test'), false)
    assert.equal(await exists(tdir), false)
    assert.deepEqual(await s.cleanup('web01'), { vm: 'web01', testName: 'web01-test', removed: false })
    assert.deepEqual(driver.calls.filter(c => c.startsWith('stopTest')), ['stopTest web01-test'])
    assert.deepEqual(s.snapshot(), [])
    // and a new test can start
    assert.equal((await s.startTest('web01')).phase, 'running')
  })

  it('a test survives a daemon restart: a new service over the same dataDir lists it and cleans it up', async () => {
    await make().startTest('web01')
    const again = make()
    await again.start()
    assert.deepEqual(again.snapshot().map(r => [r.vm, r.phase, r.point]), [['web01', 'running', '42']])
    await assert.rejects(again.startTest('web01'), { name: 'TestFailoverExistsError' })
    assert.equal((await again.cleanup('web01')).removed, true)
    assert.equal(driver.running.size, 0)
  })

  it('a failed driver start is undone: clone stopped, folder removed', async () => {
    driver.failStart = new Error('boom')
    const s = make()
    await assert.rejects(s.startTest('web01'), /boom/)
    assert.deepEqual(driver.calls.filter(c => c.startsWith('stopTest')), ['stopTest web01-test'])
    assert.equal(await exists(join(dir, 'data', 'test-failover', 'web01')), false)
    assert.deepEqual(s.snapshot(), [])
  })

  it('a clone of that name that already runs is not ours: not stopped, our files removed', async () => {
    driver.failStart = new VmAlreadyRunningError('web01-test')
    await assert.rejects(make().startTest('web01'), { name: 'VmAlreadyRunningError' })
    assert.deepEqual(driver.calls.filter(c => c.startsWith('stopTest')), [])
    assert.equal(await exists(join(dir, 'data', 'test-failover', 'web01')), false)
  })

  it('a failed start whose clone cannot be turned off is kept for --cleanup', async () => {
    driver.failStart = new Error('boom')
    driver.failStop = new Error('stuck')
    const s = make()
    await assert.rejects(s.startTest('web01'), /boom/)
    const tdir = join(dir, 'data', 'test-failover', 'web01')
    assert.equal(await exists(tdir), true)
    assert.deepEqual((await s.list({ probe: false })).map(e => e.phase), ['starting'])
    await assert.rejects(s.cleanup('web01'), /stuck/)
    assert.equal(await exists(tdir), true, 'kept while the clone may run')
    driver.failStop = undefined
    assert.equal((await s.cleanup('web01')).removed, true)
    assert.equal(await exists(tdir), false)
  })

  it('a failed restore removes the folder and starts nothing', async () => {
    repl.failRestore = new Error('disk full')
    await assert.rejects(make().startTest('web01'), /disk full/)
    assert.equal(driver.started.length, 0)
    assert.deepEqual(driver.calls.filter(c => c.startsWith('stopTest')), [])
    assert.equal(await exists(join(dir, 'data', 'test-failover', 'web01')), false)
  })

  it('cleanup after a crash mid-restore removes the folder without asking the hypervisor', async () => {
    const tdir = join(dir, 'data', 'test-failover', 'web01')
    await mkdir(join(tdir, 'files'), { recursive: true })
    await writeFile(join(tdir, 'test.json'), JSON.stringify({ version: 1, vm: 'web01', testName: 'web01-test', node: 'hv-b', point: '42', generation: 0, from: 'hv-a', pointCreatedAt: 2000, dir: tdir, startedAt: 1, phase: 'restoring' }))
    assert.equal((await make({ driver: null }).cleanup('web01')).removed, true)
    assert.equal(await exists(tdir), false)
  })

  it('a damaged test.json is listed as damaged; cleanup turns the clone off by name and removes it', async () => {
    const s = make()
    await s.startTest('web01')
    const tdir = join(dir, 'data', 'test-failover', 'web01')
    await writeFile(join(tdir, 'test.json'), '{ not json')
    assert.deepEqual((await s.list()).map(e => [e.vm, e.phase, e.running]), [['web01', 'damaged', null]])
    await assert.rejects(s.startTest('web01'), { name: 'TestFailoverExistsError' })
    assert.equal((await s.cleanup('web01')).removed, true)
    assert.equal(driver.running.has('web01-test'), false)
    assert.equal(await exists(tdir), false)
  })

  it('routes: POST /v1/failover/test, POST /v1/failover/test/cleanup, GET /v1/failover/test', async () => {
    const routes = new Map<string, Handler>()
    const s = make()
    const clientCodes: string[] = []
    registerTestFailoverRoutes({ route: (method, path, h) => { routes.set(`${method} ${path}`, h) }, clientErrors: (codes) => { clientCodes.push(...codes) } }, s)
    assert.ok(clientCodes.includes('ERR_TEST_FAILOVER_EXISTS') && clientCodes.includes('ERR_NO_REPLICA'))
    assert.deepEqual([...routes.keys()].sort(), ['GET /v1/failover/test', 'POST /v1/failover/test', 'POST /v1/failover/test/cleanup'])
    const call = async (key: string, body?: unknown): Promise<unknown> => await (routes.get(key) as Handler)({ body, query: new URLSearchParams(), signal: new AbortController().signal })
    await assert.rejects(call('POST /v1/failover/test', {}), { name: 'BadRequestError', code: 'ERR_BAD_REQUEST' })
    await assert.rejects(call('POST /v1/failover/test', { vm: 'web01', point: 42 }), { name: 'BadRequestError' })
    await assert.rejects(call('POST /v1/failover/test', { vm: 'web01', extra: true }), { name: 'BadRequestError' })
    const rec = await call('POST /v1/failover/test', { vm: 'web01', point: '41' }) as { point: string, testName: string }
    assert.equal(rec.point, '41')
    assert.deepEqual(((await call('GET /v1/failover/test')) as { tests: Array<{ vm: string, running: boolean }> }).tests.map(t => [t.vm, t.running]), [['web01', true]])
    await assert.rejects(call('POST /v1/failover/test', { vm: 'web01' }), { code: 'ERR_TEST_FAILOVER_EXISTS' })
    assert.deepEqual(await call('POST /v1/failover/test/cleanup', { vm: 'web01' }), { vm: 'web01', testName: 'web01-test', removed: true })
    assert.deepEqual(await call('GET /v1/failover/test'), { tests: [] })
  })
})
