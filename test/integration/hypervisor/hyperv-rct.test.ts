/**
 * The Hyper-V RCT change source end to end against the scripted fake of Hyper-V
 * (test/fixtures/hypervisor/fake-powershell.mjs + fake-hyperv-disk.mjs): the real HypervDriver
 * session talks to the fake, whose "VM" writes into a real VHDX with qemu-io (QEMU's VHDX driver
 * allocates blocks, grows the file, updates BAT, log and headers). While a recovery checkpoint
 * is held the guest's writes wait in the fake's .avhdx and land in the base file at the merge,
 * as on Hyper-V; GetVirtualDiskChanges answers from the fake's change log.
 *
 * Every round the RctSourceRunner's answer is applied to a replica, which must equal the base
 * .vhdx (qemu-img compare and byte compare): the first round is one hash scan, later ones are
 * told; an RCT reset costs exactly one hash scan; odd answers (garbage, missing fields, errors)
 * are typed, let the hash scan answer the round and lose nothing; a restart merges the
 * checkpoint the old process held and rescans once. Skips without qemu-img/qemu-io.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { chmod, open, readFile, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Level } from 'level'
import { ManualClock } from '../../../common/clock.ts'
import { HypervDriver } from '../../../daemon/hypervisor/hyperv.ts'
import { defaultRunner } from '../../../daemon/hypervisor/run.ts'
import type { Logger } from '../../../daemon/log.ts'
import { RctSourceRunner } from '../../../daemon/replication/rct-source-runner.ts'
import { VmSource } from '../../../daemon/replication/vm-source.ts'
import type { VmConfig } from '../../../config/load.ts'
import { HashScanSource } from '../../../storage/changes/hash-scan.ts'
import { formatRangesOf } from '../../../storage/changes/format-ranges.ts'
import type { ChangeSet } from '../../../storage/changes/source.ts'
import { Manifest } from '../../../storage/manifest/manifest.ts'
import { binarySublevel } from '../../../storage/manifest/db.ts'
import { aheadClock, tempDb, tempDir, type TempDir, KiB, MiB } from '../../unit/changes/helpers.ts'
import { FIXTURES } from '../../unit/hypervisor/fake-runner.ts'
// @ts-expect-error -- a plain ESM fixture without types
import { guestWrite, qemuWrite } from '../../fixtures/hypervisor/fake-hyperv-disk.mjs'

const has = (cmd: string): boolean => spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0
const VM_ID = '6f9619ff-8b86-d011-b42d-00cf4fc964ff'
const NAME = 'web 01'
const SIZE = 64 * MiB

interface Logged { level: string, obj: Record<string, unknown>, msg: string }

describe('integration: Hyper-V RCT (scripted fake, real VHDX) → told ranges → byte-identical replica', function () {
  this.timeout(120_000)
  let dir: TempDir
  let db: Level<Uint8Array, Uint8Array>
  let drivers: HypervDriver[]
  let runners: RctSourceRunner[]
  let disk: string
  let replica: string
  let stateFile: string
  let logs: Logged[]

  before(function () { if (!has('qemu-img') || !has('qemu-io')) this.skip() })
  beforeEach(async () => {
    dir = await tempDir('vmesh-rct-it-')
    db = await tempDb(dir.path)
    drivers = []
    runners = []
    logs = []
    disk = join(dir.path, 'web 01.vhdx')
    replica = join(dir.path, 'replica.vhdx')
    stateFile = join(dir.path, 'hyperv.json')
    const r = spawnSync('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M,subformat=dynamic', disk, String(SIZE)], { encoding: 'utf8' })
    assert.equal(r.status, 0, r.stderr)
    await writeFile(replica, '')
    const vm = { Name: NAME, Id: VM_ID, State: 'Running', AutomaticStartAction: 'Nothing', ConfigurationLocation: dir.path, Drives: [disk], Rct: { Disks: [{ Path: disk, DiskId: randomUUID(), VirtualSize: SIZE }] } }
    await writeFile(stateFile, JSON.stringify({ vms: [vm], fs: {}, rct: { epoch: 1, log: [], pending: [], snapshots: {}, referencePoints: {}, pageBytes: 24 * MiB } }))
  })
  afterEach(async () => {
    for (const r of runners) await r.stop().catch(() => {})
    for (const d of drivers) await d.close()
    await db.close()
    await dir.cleanup()
  })

  const fake = async (): Promise<{ rct: { epoch: number, snapshots: Record<string, unknown>, referencePoints: Record<string, unknown>, pending: unknown[] }, log: Array<{ op: string }>, faults?: Record<string, unknown> }> =>
    JSON.parse(await readFile(stateFile, 'utf8'))
  const patch = async (fn: (s: Record<string, any>) => void): Promise<void> => { // eslint-disable-line @typescript-eslint/no-explicit-any
    const s = JSON.parse(await readFile(stateFile, 'utf8'))
    fn(s)
    await writeFile(stateFile, JSON.stringify(s))
  }

  async function runner (): Promise<RctSourceRunner> {
    const exe = join(dir.path, 'powershell')
    const q = (x: string): string => `'${x.replace(/'/g, "'\\''")}'`
    await writeFile(exe, `#!/bin/sh\nexec ${q(process.execPath)} ${q(join(FIXTURES, 'fake-powershell.mjs'))} --state ${q(stateFile)} "$@"\n`)
    await chmod(exe, 0o755)
    const d = new HypervDriver({ powershell: exe, statusCacheMs: 0 }, { cwd: dir.path, stateDir: join(dir.path, 'hv-state'), clock: new ManualClock(), run: defaultRunner })
    drivers.push(d)
    const clock = aheadClock()
    const hashScan = new HashScanSource({ manifest: new Manifest(binarySublevel(db, 'manifest')), clock, rangesOf: formatRangesOf }, { blockSizeBytes: 64 * KiB })
    const at = (level: string) => (obj: Record<string, unknown>, msg: string): void => { logs.push({ level, obj, msg }) }
    const log = { info: at('info'), warn: at('warn'), debug: at('debug'), error: at('error') } as unknown as Logger
    const r = new RctSourceRunner({ clock, log, hashScan, rct: d.rct(), vmId: async () => await d.runningId(NAME) }, { vm: NAME, disks: [disk], blockSizeBytes: 64 * KiB, stateFile: join(dir.path, 'rct-state.json') })
    runners.push(r)
    return r
  }

  /** Copies the answer's ranges from the (frozen) base file into the replica. */
  async function apply (set: ChangeSet): Promise<void> {
    if (set.full) await truncate(replica, 0)
    await truncate(replica, set.fileSize)
    const from = await open(disk, 'r')
    const to = await open(replica, 'r+')
    try {
      for (const r of set.ranges) {
        const buf = Buffer.alloc(r.length)
        const { bytesRead } = await from.read(buf, 0, r.length, r.offset)
        await to.write(buf, 0, bytesRead, r.offset)
      }
    } finally { await from.close(); await to.close() }
  }

  async function assertIdentical (what: string): Promise<void> {
    const [a, b] = await Promise.all([readFile(disk), readFile(replica)])
    assert.equal(b.length, a.length, `${what}: replica is ${b.length} bytes, the disk ${a.length}`)
    assert.ok(a.equals(b), `${what}: replica differs from the disk byte for byte`)
    const c = spawnSync('qemu-img', ['compare', '-f', 'vhdx', '-F', 'vhdx', disk, replica], { encoding: 'utf8' })
    assert.equal(c.status, 0, `${what}: qemu-img compare: ${c.stdout}${c.stderr}`)
  }

  const write = (offset: number, length: number, pattern: number): boolean => guestWrite(stateFile, VM_ID, 0, offset, length, pattern) as boolean
  const ops = async (): Promise<string[]> => (await fake()).log.map(l => l.op).filter(o => o.startsWith('rct-'))

  it('rounds: one hash scan, then told ranges (writes held in the checkpoint, new blocks, a grown file); a reset RCT id costs exactly one hash scan', async () => {
    qemuWrite(disk, 0, 64 * KiB, 0x11)
    qemuWrite(disk, 5 * MiB, 4 * KiB, 0x12)
    const r = await runner()

    let set = await r.source.changes(disk, null)
    assert.equal(r.lastAnswer(disk), 'gap-scan', 'no reference point yet: one hash scan')
    assert.deepEqual(await ops(), ['rct-begin'])
    assert.equal(Object.keys((await fake()).rct.snapshots).length, 1, 'the checkpoint is held until the next round')
    await apply(set)
    await assertIdentical('round 1')

    // the guest writes while the checkpoint holds the base: the base (and the replica) stay put
    assert.equal(write(4096, 4096, 0x21), true)
    assert.equal(write(5 * MiB + 512, 1024, 0x22), true)
    await assertIdentical('writes held in the .avhdx')

    let token = set.token
    const fileBefore = (await readFile(disk)).length
    set = await r.source.changes(disk, token)
    assert.equal(r.lastAnswer(disk), 'told')
    assert.deepEqual((await ops()).slice(1), ['rct-commit', 'rct-begin'])
    assert.equal((await fake()).rct.pending.length, 0, 'the merge applied the held writes')
    assert.ok(set.ranges.length > 0)
    await apply(set)
    await assertIdentical('round 2 (held writes merged, told)')

    // writes into unallocated blocks: the file grows, the BAT changes
    write(40 * MiB + 4096, 8 * KiB, 0x31)
    write(63 * MiB, 1 * MiB, 0x32)
    write(17 * MiB, 64 * KiB, 0x33) // spans the fake's 24 MiB RCT pages? no: inside page 0
    write(24 * MiB - 4096, 8 * KiB, 0x34) // across a page boundary
    token = set.token
    set = await r.source.changes(disk, token)
    assert.equal(r.lastAnswer(disk), 'told')
    await apply(set)
    await assertIdentical('round 3 (held)')
    token = set.token
    set = await r.source.changes(disk, token)
    assert.equal(r.lastAnswer(disk), 'told')
    assert.ok((await readFile(disk)).length > fileBefore, 'new blocks grew the file')
    assert.ok(set.scannedBytes < SIZE / 4, `told rounds read little (${set.scannedBytes})`)
    await apply(set)
    await assertIdentical('round 4 (allocations merged, told)')

    // RCT reset (tracking lost): exactly one hash scan, then RCT again
    await patch(s => { s.rct.epoch += 1 })
    write(9 * MiB, 4096, 0x41)
    const scansBefore = r.status().scanAnswers
    token = set.token
    set = await r.source.changes(disk, token)
    assert.equal(r.lastAnswer(disk), 'gap-scan')
    assert.ok(logs.some(l => l.level === 'warn' && /no longer known/.test(l.msg)))
    await apply(set)
    await assertIdentical('round 5 (reset: hash scan)')
    write(10 * MiB, 4096, 0x42)
    for (let i = 0; i < 2; i++) {
      token = set.token
      set = await r.source.changes(disk, token)
      assert.equal(r.lastAnswer(disk), 'told', `round ${6 + i} after the reset is told`)
      await apply(set)
      await assertIdentical(`round ${6 + i}`)
    }
    assert.equal(r.status().scanAnswers, scansBefore + 1, 'the reset cost exactly one hash scan')

    // stop merges the held checkpoint: the VM does not stay on an .avhdx
    write(11 * MiB, 4096, 0x43)
    await r.stop()
    const f = await fake()
    assert.deepEqual(f.rct.snapshots, {})
    assert.equal(f.rct.pending.length, 0)
    assert.equal(Object.keys(f.rct.referencePoints).length, 1, 'old reference points are destroyed')
  })

  it('odd answers (garbage frames, missing fields, non-JSON, cmdlet errors, after the checkpoint was made) are typed; the hash scan answers that round; nothing is lost and RCT resumes without another full scan', async () => {
    qemuWrite(disk, 0, 1 * MiB, 0x51)
    const r = await runner()
    let set = await r.source.changes(disk, null)
    await apply(set)
    set = await r.source.changes(disk, set.token) // a told round: the chain runs
    assert.equal(r.lastAnswer(disk), 'told')
    await apply(set)
    await assertIdentical('before the faults')

    const faults: Array<{ op: string, fault: Record<string, unknown>, errName: string }> = [
      { op: 'rct-begin', fault: { kind: 'reply', out: 'not json at all', after: true }, errName: 'HypervisorOutputError' },
      { op: 'rct-begin', fault: { kind: 'reply', out: '{"SnapshotId":"Microsoft:X","Disks":[{"ReadFrom":"x","VirtualSize":1}]}', after: true }, errName: 'HypervisorOutputError' },
      { op: 'rct-begin', fault: { kind: 'reply', code: 1, err: 'CreateSnapshot (recovery) failed: The operation cannot be performed while the object is in use. (job error 32775)' }, errName: 'HypervisorCmdletError' },
      { op: 'rct-commit', fault: { kind: 'reply', out: '{"ReferencePointId":"Microsoft:Y"}', after: true }, errName: 'HypervisorOutputError' },
      { op: 'rct-begin', fault: { kind: 'garbage' }, errName: '' }
    ]
    let pattern = 0x60
    for (const [i, f] of faults.entries()) {
      write((2 + i) * MiB + 4096, 4096, pattern++)
      write((30 + 2 * i) * MiB, 4096, pattern++) // a new block
      await patch(s => { s.faults = { [f.op]: { ...f.fault, times: 1 } } })
      const warned = logs.length
      set = await r.source.changes(disk, set.token)
      assert.equal(r.lastAnswer(disk), 'idle-scan', `${f.op} ${JSON.stringify(f.fault)}: the hash scan answers`)
      const w = logs.slice(warned).find(l => l.level === 'warn' && /RCT round failed/.test(l.msg))
      assert.ok(w !== undefined, 'the failed round is logged')
      if (f.errName !== '') assert.equal(w.obj.errName, f.errName)
      await apply(set)
      await assertIdentical(`after ${f.op} fault ${i}`)
      // the next rounds are told again, from the last reference point that exists (a superset)
      write((2 + i) * MiB + 8192, 4096, pattern++)
      for (let k = 0; k < 2; k++) {
        set = await r.source.changes(disk, set.token)
        assert.equal(r.lastAnswer(disk), 'told', `after ${f.op} fault ${i}, round ${k}`)
        await apply(set)
        await assertIdentical(`after ${f.op} fault ${i}, told round ${k}`)
      }
      const st = await fake()
      assert.ok(Object.keys(st.rct.snapshots).length <= 1, 'never a stack of checkpoints')
    }
    assert.equal(r.status().failedRounds, faults.length)
  })

  it('a restarted daemon merges the checkpoint the old process held and rescans once, then RCT again', async () => {
    qemuWrite(disk, 0, 1 * MiB, 0x71)
    const a = await runner()
    let set = await a.source.changes(disk, null)
    await apply(set)
    set = await a.source.changes(disk, set.token)
    await apply(set)
    write(3 * MiB, 4096, 0x72) // held in the checkpoint the old process leaves behind
    runners.pop() // crashed: no stop(), the checkpoint stays
    await drivers.pop()?.close()
    assert.equal(Object.keys((await fake()).rct.snapshots).length, 1)

    const b = await runner()
    set = await b.source.changes(disk, set.token)
    assert.equal(b.lastAnswer(disk), 'gap-scan', 'the told state was in memory: one hash scan')
    const st = await fake()
    assert.equal(Object.keys(st.rct.snapshots).length, 1, 'the old checkpoint merged, one new one held')
    assert.equal(Object.keys(st.rct.referencePoints).length, 1, 'the old reference point destroyed')
    await apply(set)
    await assertIdentical('after the restart')
    write(4 * MiB, 4096, 0x73)
    set = await b.source.changes(disk, set.token)
    assert.equal(b.lastAnswer(disk), 'told')
    await apply(set)
    await assertIdentical('told after the restart')
  })

  it('wired into VmSource (what the daemon builds for changeSource: rct): the change tracker\'s rounds are told; stop merges the checkpoint', async () => {
    qemuWrite(disk, 0, 64 * KiB, 0x91)
    await runner() // the fake powershell wrapper and a driver
    const d = drivers[0] as HypervDriver
    const vm: VmConfig = {
      // a name with a space, as on Hyper-V (its LevelDB sublevel is percent-encoded)
      name: NAME, disks: [disk], files: [], replicateTo: [], failover: 'auto', priority: 0, startOrder: 0, blockSizeBytes: 64 * KiB,
      scanIntervalMs: 3_600_000, quietBudgetMs: 1000, recoveryPoints: { count: 1, keepAllWithinMs: 0, hourlyBeyond: false }, seed: 'full', changeSource: 'rct', fleece: true, pointCopyBudgetBytes: 16 * 1024 * 1024, rpoMs: 60_000, startAfter: [], startAfterTimeoutMs: 120_000
    }
    const noop = (): void => {}
    const log = { info: noop, warn: noop, debug: noop, error: noop, child: () => log } as unknown as Logger
    const src = new VmSource({
      clock: aheadClock(), log, db, dial: async () => { throw new Error('no peers') },
      rct: { rct: d.rct(), vmId: async () => await d.runningId(NAME), stateFile: join(dir.path, 'vm-rct.json') }
    }, { vm, nodeName: 'hv1', watch: false })
    await src.start()
    try {
      await src.scanAll()
      assert.equal(src.captureStatus().source, 'told')
      assert.equal(src.told?.lastAnswer(disk), 'gap-scan')
      const g = src.generation
      write(2 * MiB, 4096, 0x92)
      await src.scanAll() // merges the write, asks RCT: told
      assert.equal(src.told?.lastAnswer(disk), 'told')
      assert.ok(src.generation > g, 'the told change made a generation')
      assert.equal(Object.keys((await fake()).rct.snapshots).length, 1)
    } finally {
      await src.stop()
    }
    assert.deepEqual((await fake()).rct.snapshots, {}, 'stop merged the held checkpoint')
  })

  it('the VM not running here: the hash scan answers and a held checkpoint is merged', async () => {
    const r = await runner()
    let set = await r.source.changes(disk, null)
    await apply(set)
    write(1 * MiB, 4096, 0x81)
    await patch(s => { s.vms[0].State = 'Off' })
    set = await r.source.changes(disk, set.token)
    assert.equal(r.lastAnswer(disk), 'idle-scan')
    assert.deepEqual((await fake()).rct.snapshots, {})
    await apply(set)
    await assertIdentical('VM off')
    assert.equal(r.status().live, false)
  })
})
