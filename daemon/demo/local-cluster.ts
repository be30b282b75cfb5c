/**
 * A mesh of real vmesh daemons on 127.0.0.1, each a child process with its own folder,
 * identity, ephemeral ports and config — used by the demo (`npm start`), the integration tests
 * and the benchmarks. It owns everything it starts: `destroy()` kills the children and removes
 * the folder, and children still running when the parent exits are killed with it.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { mkdtemp, rm, writeFile, mkdir, readFile } from 'node:fs/promises'
import { createWriteStream, type WriteStream } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { createIdentity, createPsk } from '../../config/identity.ts'
import { ApiClient } from '../api/client.ts'
import type { StatusDocument } from '../status.ts'

export const VMESH_BIN = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'vmesh.js')

export interface LocalNodeSpec {
  name: string
  role?: 'host' | 'witness'
  /** Extra top-level config sections (vms, hypervisor, bandwidth...) merged into the YAML. */
  extra?: Record<string, unknown>
}

export interface LocalNode {
  name: string
  role: 'host' | 'witness'
  dir: string
  configPath: string
  peerId: string
  port: number
  apiPort: number
  logPath: string
  proc?: ChildProcess
  client: ApiClient
}

export interface LocalClusterInit {
  nodes: LocalNodeSpec[]
  profile?: 'lan' | 'wan'
  /** Detector/ownership overrides for every node. */
  detector?: Record<string, number>
  ownership?: Record<string, number>
  psk?: boolean
  /** Keep the folder after destroy() (debugging). @default false */
  keep?: boolean
  logLevel?: string
  dir?: string
}

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const a = s.address()
      const port = typeof a === 'object' && a != null ? a.port : 0
      s.close(() => resolve(port))
    })
  })
}

/** Children still running when this process exits are killed, so a crashed test leaves none behind. */
const liveChildren = new Set<ChildProcess>()
process.once('exit', () => { for (const p of liveChildren) p.kill('SIGKILL') })

export class LocalCluster {
  readonly nodes: LocalNode[] = []
  private readonly logs = new Map<string, WriteStream>()

  private constructor (readonly dir: string, private readonly init: LocalClusterInit) {}

  static async create (init: LocalClusterInit): Promise<LocalCluster> {
    const dir = init.dir ?? await mkdtemp(join(tmpdir(), 'vmesh-cluster-'))
    const cluster = new LocalCluster(dir, init)
    for (const spec of init.nodes) {
      const ndir = join(dir, spec.name)
      await mkdir(ndir, { recursive: true })
      const { peerId } = await createIdentity(join(ndir, 'identity.key'))
      const port = await freePort()
      const apiPort = await freePort()
      cluster.nodes.push({
        name: spec.name,
        role: spec.role ?? 'host',
        dir: ndir,
        configPath: join(ndir, 'vmesh.yaml'),
        peerId: peerId.toString(),
        port,
        apiPort,
        logPath: join(ndir, 'daemon.log'),
        client: new ApiClient('127.0.0.1', apiPort, join(ndir, 'data', 'api.token'))
      })
    }
    if (init.psk === true) await createPsk(join(dir, 'mesh.psk'))
    for (const spec of init.nodes) await cluster.writeConfig(spec.name, spec.extra)
    return cluster
  }

  node (name: string): LocalNode {
    const n = this.nodes.find(x => x.name === name)
    if (n === undefined) throw new Error(`no node ${name}`)
    return n
  }

  /** The config object a node would be started with (tests tweak and rewrite it). */
  configFor (name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
    const n = this.node(name)
    const peers = this.nodes.filter(p => p.name !== name).map(p => ({ name: p.name, id: p.peerId, addrs: [`/ip4/127.0.0.1/tcp/${p.port}`], ...(p.role === 'witness' ? { role: 'witness' } : {}) }))
    return {
      node: { name: n.name, identity: 'identity.key', listen: [`/ip4/127.0.0.1/tcp/${n.port}`], dataDir: 'data', api: `127.0.0.1:${n.apiPort}`, role: n.role },
      mesh: {
        profile: this.init.profile ?? 'lan',
        ...(this.init.psk === true ? { psk: join(this.dir, 'mesh.psk') } : {}),
        peers,
        ...(this.init.detector !== undefined ? { detector: this.init.detector } : {}),
        dialBackoffMax: 2000
      },
      ...(this.init.ownership !== undefined ? { ownership: this.init.ownership } : {}),
      log: { level: this.init.logLevel ?? 'info' },
      ...extra
    }
  }

  async writeConfig (name: string, extra?: Record<string, unknown>): Promise<void> {
    await writeFile(this.node(name).configPath, stringify(this.configFor(name, extra)))
  }

  /** Starts a node's daemon and waits until its control API answers. */
  async start (name: string, opts: { timeoutMs?: number } = {}): Promise<void> {
    const n = this.node(name)
    if (this.isRunning(name)) return
    await rm(join(n.dir, 'data', 'api.token'), { force: true })
    let log = this.logs.get(name)
    if (log === undefined) { log = createWriteStream(n.logPath, { flags: 'a' }); this.logs.set(name, log) }
    const proc = spawn(process.execPath, ['--max-semi-space-size=1', VMESH_BIN, '--config', n.configPath, 'start'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env } })
    proc.stdout?.pipe(log, { end: false })
    proc.stderr?.pipe(log, { end: false })
    n.proc = proc
    liveChildren.add(proc)
    proc.once('exit', () => { liveChildren.delete(proc) })
    const deadline = Date.now() + (opts.timeoutMs ?? 60_000)
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${name} exited with ${proc.exitCode} during start; log: ${n.logPath}\n${(await readFile(n.logPath, 'utf8')).slice(-2000)}`)
      try { await n.client.call('GET', '/v1/health', undefined, { timeoutMs: 1000 }); return } catch {}
      if (Date.now() > deadline) throw new Error(`${name} did not come up within ${opts.timeoutMs ?? 60_000} ms; log: ${n.logPath}`)
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  }

  /** Starts every node, a few at a time: on 2 cores ten simultaneous Node starts starve each other. */
  async startAll (concurrency = 3): Promise<void> {
    const queue = this.nodes.map(n => n.name)
    await Promise.all(Array.from({ length: Math.min(concurrency, queue.length) }, async () => {
      for (let name = queue.shift(); name !== undefined; name = queue.shift()) await this.start(name)
    }))
  }

  /** Sends a signal; for SIGKILL/SIGTERM waits for the process to exit. */
  async signal (name: string, sig: NodeJS.Signals): Promise<number | null> {
    const p = this.node(name).proc
    if (p === undefined || p.exitCode !== null || p.signalCode !== null) return p?.exitCode ?? null
    const exited = new Promise<number | null>(resolve => p.once('exit', (code) => resolve(code)))
    p.kill(sig)
    if (sig === 'SIGKILL' || sig === 'SIGTERM' || sig === 'SIGINT') return await exited
    return null
  }

  async kill (name: string): Promise<void> { await this.signal(name, 'SIGKILL') }

  isRunning (name: string): boolean {
    const p = this.node(name).proc
    return p !== undefined && p.exitCode === null && p.signalCode === null
  }

  async status (name: string): Promise<StatusDocument> {
    return await this.node(name).client.call<StatusDocument>('GET', '/v1/status', undefined, { timeoutMs: 3000 })
  }

  /** Polls `check` (real time) until it returns a truthy value or the timeout passes. */
  async waitFor<T> (what: string, check: () => Promise<T | undefined | false>, timeoutMs: number, pollMs = 50): Promise<T> {
    const deadline = Date.now() + timeoutMs
    let lastErr: unknown
    for (;;) {
      try { const v = await check(); if (v !== undefined && v !== false) return v } catch (err) { lastErr = err }
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr !== undefined ? ` (last error: ${(lastErr as Error).message})` : ''}`)
      await new Promise(resolve => setTimeout(resolve, pollMs))
    }
  }

  /** Member state of `peer` as seen by `viewer`, or undefined when the viewer is down. */
  async memberState (viewer: string, peer: string): Promise<string | undefined> {
    try {
      const s = await this.status(viewer)
      return s.members.find(m => m.name === peer)?.state
    } catch { return undefined }
  }

  async destroy (): Promise<void> {
    await Promise.all(this.nodes.map(async n => {
      if (this.isRunning(n.name)) {
        const t = setTimeout(() => n.proc?.kill('SIGKILL'), 5000)
        await this.signal(n.name, 'SIGTERM')
        clearTimeout(t)
      }
    }))
    for (const l of this.logs.values()) l.end()
    if (this.init.keep !== true) await rm(this.dir, { recursive: true, force: true })
  }
}
