/**
 * A child process applies generations to a real on-disk replica (fsync on) and is killed with
 * SIGKILL at random moments, 20 times. After each kill the store is reopened here and must hold
 * exactly one committed generation — the last one the child reported or the one after it — byte
 * for byte, with every recovery point restoring to its reference.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { systemClock } from '../../../common/clock.ts'
import { SeededRandom } from '../../../common/random.ts'
import { ReplicaStore } from '../../../storage/replica/store.ts'
import { RefModel } from '../../unit/replica/helpers.ts'
import { genSpec, RETENTION } from './gen-model.ts'

const here = dirname(fileURLToPath(import.meta.url))
const KILLS = 20

/** References by generation, computed forward and cached (old ones evicted). */
class Refs {
  private readonly cache = new Map<number, RefModel>([[0, new RefModel()]])
  get (g: number): RefModel {
    const hit = this.cache.get(g)
    if (hit !== undefined) return hit
    let from = 0
    for (const k of this.cache.keys()) if (k < g && k > from) from = k
    let ref = this.cache.get(from) as RefModel
    for (let x = from + 1; x <= g; x++) {
      ref = ref.apply(genSpec(x))
      this.cache.set(x, ref)
    }
    return ref
  }

  evictBelow (g: number): void { for (const k of [...this.cache.keys()]) if (k < g && k !== 0) this.cache.delete(k) }
}

async function readFiles (files: Record<string, string>): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>()
  for (const [path, file] of Object.entries(files)) out.set(path, await readFile(file))
  return out
}

function assertSame (actual: Map<string, Buffer>, ref: RefModel, what: string): void {
  assert.deepEqual([...actual.keys()].sort(), [...ref.files.keys()].sort(), what)
  for (const [k, v] of ref.files) assert.ok((actual.get(k) as Buffer).equals(v), `${what}: ${k} differs`)
}

interface Run { lastCommitted: number | undefined, lines: string[], exitedAlone: boolean }

/** Runs the child; kills it `delayMs` after it reports ready (unless it finishes first). */
async function runChild (dir: string, delayMs: number, last: number): Promise<Run> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(here, 'apply-child.ts'), dir, String(last)], { stdio: ['ignore', 'pipe', 'pipe'] })
  const run: Run = { lastCommitted: undefined, lines: [], exitedAlone: false }
  let buf = ''
  let stderr = ''
  let killed = false
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const exited = new Promise<void>(resolve => { child.on('exit', () => { resolve() }) })
  child.stdout.on('data', (d: Buffer) => {
    buf += d.toString()
    let nl: number
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 1)
      run.lines.push(line)
      const m = /^committed (\d+)/.exec(line)
      if (m !== null) run.lastCommitted = Number(m[1])
      if (line.startsWith('ready')) setTimeout(() => { killed = true; child.kill('SIGKILL') }, delayMs)
    }
  })
  await exited
  if (!killed) {
    run.exitedAlone = true
    assert.ok(run.lines.includes('done'), `child died on its own: ${stderr}`)
  }
  return run
}

describe('replica store: kill -9 during apply (real files, fsync)', function () {
  this.timeout(180_000)
  let dir: string

  before(async () => { dir = await mkdtemp(join(tmpdir(), 'vmesh-replica-kill-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it(`survives ${KILLS} kills at random moments, holding exactly one committed generation each time`, async () => {
    const store = join(dir, 'store')
    const rng = new SeededRandom(2024)
    const refs = new Refs()
    let floor = 0
    const outcomes: string[] = []
    for (let i = 0; i < KILLS; i++) {
      const run = await runChild(store, rng.int(400), 100_000)
      const s = await ReplicaStore.open({ clock: systemClock }, { dir: store, vm: 'kill', source: 'hv-a', retention: RETENTION })
      try {
        const st = s.state()
        const last = run.lastCommitted ?? floor
        assert.ok(st.appliedGeneration === last || st.appliedGeneration === last + 1, `kill ${i}: applied ${st.appliedGeneration}, child had committed ${String(run.lastCommitted)}`)
        assert.ok(st.appliedGeneration >= floor)
        const acts = s.recoveryReport().filter(a => a.action !== 'removed-orphan').map(a => `${a.action} ${String(a.generation)}`)
        outcomes.push(`kill ${i}: applied ${st.appliedGeneration}${acts.length > 0 ? ` (${acts.join(', ')})` : ''}`)
        if (st.appliedGeneration === 0) {
          // still seeding: whatever is reported durable must hold the seed's bytes
          const p = s.seedProgress()
          const ref = refs.get(1)
          for (const [path, ranges] of Object.entries(p?.files ?? {})) {
            const actual = await readFile(st.files[path] as string)
            for (const r of ranges) assert.ok(actual.subarray(r.offset, r.offset + r.length).equals((ref.files.get(path) as Buffer).subarray(r.offset, r.offset + r.length)), `kill ${i}: durable seed range`)
          }
          continue
        }
        assertSame(await readFiles(st.files), refs.get(st.appliedGeneration), `kill ${i}: replica`)
        const points = s.points()
        for (const p of points) {
          const r = await s.restore(p.id, join(dir, `restore-${i}-${p.id}`))
          assertSame(await readFiles(r.files), refs.get(p.generation), `kill ${i}: point ${p.id}`)
          await rm(join(dir, `restore-${i}-${p.id}`), { recursive: true })
        }
        floor = st.appliedGeneration
        refs.evictBelow(Math.min(points[0]?.generation ?? floor, floor) - 1)
      } finally {
        await s.close()
      }
    }
    console.log(`      ${outcomes.join('\n      ')}`)
    assert.ok(floor > 5, `only ${floor} generations applied over ${KILLS} runs`)
  })
})
