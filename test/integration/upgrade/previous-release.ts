/**
 * The previous release, checked out from git history, as a runnable vmesh: `git archive <rev>`
 * into a temp folder with this tree's node_modules linked in, and daemons of that tree started
 * for the nodes of a LocalCluster (so the cluster's status calls, waits, signals and teardown work
 * on them unchanged; a later `cluster.start(name)` runs the current code on the same data dir
 * and config). Only the CLI and the config file connect the two versions.
 */
import { spawn, spawnSync } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { mkdtemp, readFile, rm, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { daemonNodeArgs, type LocalCluster } from '../../../daemon/cluster/local-cluster.ts'

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')

export interface PreviousRelease { dir: string, bin: string, remove: () => Promise<void> }

/**
 * Why the previous release cannot be run here (undefined when it can): no git, no such commit
 * (a shallow clone), or a dependency of it that this tree does not have at the same range (its
 * node_modules would not be the ones it was released with).
 */
export async function unavailableReason (rev: string): Promise<string | undefined> {
  const has = spawnSync('git', ['-C', REPO, 'cat-file', '-e', `${rev}^{commit}`], { stdio: 'ignore' })
  if (has.error !== undefined) return `git is not available (${has.error.message})`
  if (has.status !== 0) return `commit ${rev} is not in this clone's history (a shallow clone? run \`git fetch --unshallow\`)`
  const old = spawnSync('git', ['-C', REPO, 'show', `${rev}:package.json`], { encoding: 'utf8' })
  if (old.status !== 0) return `cannot read package.json of ${rev}`
  // The previous release runs on this tree's node_modules, so each of its dependencies must be
  // here at the same range (this tree may add dependencies of its own) and the overrides must match.
  type Pkg = { dependencies?: Record<string, string>, overrides?: unknown }
  const prev = JSON.parse(old.stdout) as Pkg
  const now = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')) as Pkg
  const differing = Object.entries(prev.dependencies ?? {}).filter(([name, range]) => now.dependencies?.[name] !== range).map(([name]) => name)
  if (differing.length > 0 || JSON.stringify(prev.overrides) !== JSON.stringify(now.overrides)) {
    return `the dependencies of ${rev} differ from this tree's (${differing.length > 0 ? differing.join(', ') : 'overrides'}); the previous release needs its own \`npm ci\` to run`
  }
  return undefined
}

export async function checkoutPreviousRelease (rev: string): Promise<PreviousRelease> {
  const dir = await mkdtemp(join(tmpdir(), 'vmesh-prev-'))
  const r = spawnSync('sh', ['-c', `git -C "$1" archive "$2" | tar -x -C "$3"`, 'sh', REPO, rev, dir], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`git archive ${rev} failed: ${r.stderr}`)
  await symlink(join(REPO, 'node_modules'), join(dir, 'node_modules'), 'dir')
  return { dir, bin: join(dir, 'bin', 'vmesh.js'), remove: async () => { await rm(dir, { recursive: true, force: true }) } }
}

/**
 * Starts `name`'s daemon from the previous release (its TypeScript sources through tsx:
 * VMESH_FROM_SOURCE=1) on the node's config, and waits until its control API answers.
 */
export async function startPrevious (c: LocalCluster, name: string, prev: PreviousRelease, timeoutMs = 60_000): Promise<void> {
  const n = c.node(name)
  if (c.isRunning(name)) throw new Error(`${name} is already running`)
  await rm(join(n.dir, 'data', 'api.token'), { force: true })
  const log = createWriteStream(n.logPath, { flags: 'a' })
  const proc = spawn(process.execPath, [...daemonNodeArgs(), prev.bin, '--config', n.configPath, 'start'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, VMESH_FROM_SOURCE: '1' }
  })
  proc.stdout?.pipe(log)
  proc.stderr?.pipe(log)
  proc.once('exit', () => { log.end() })
  // a crashed test must not leave it behind (LocalCluster does the same for its own children)
  const killOnExit = (): void => { proc.kill('SIGKILL') }
  process.once('exit', killOnExit)
  proc.once('exit', () => { process.off('exit', killOnExit) })
  n.proc = proc
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${name} (previous release) exited with ${proc.exitCode} during start; log: ${n.logPath}\n${(await readFile(n.logPath, 'utf8')).slice(-2000)}`)
    try { await n.client.call('GET', '/v1/health', undefined, { timeoutMs: 1000 }); return } catch {}
    if (Date.now() > deadline) throw new Error(`${name} (previous release) did not come up within ${timeoutMs} ms; log: ${n.logPath}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}
