/**
 * A mesh of real vmesh daemons on 127.0.0.1, each a child process with its own folder,
 * identity, ephemeral ports and config — used by the demo (`npm start`), the integration tests
 * and the benchmarks. It owns everything it starts: `destroy()` kills the children and removes
 * the folder, and children still running when the parent exits are killed with it.
 * A node can instead run inside a network namespace with an address of its own (`netns`), so a
 * test can partition the mesh (test/integration/failover/partition.test.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer, connect, type Server, type Socket } from 'node:net'
import { mkdtemp, rm, writeFile, mkdir, readFile } from 'node:fs/promises'
import { createWriteStream, readFileSync, type WriteStream } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { createIdentity, createPsk } from '../../config/identity.ts'
import { freePort } from './free-port.ts'
import { ApiClient } from '../api/client.ts'
import type { StatusDocument } from '../status.ts'

export { freePort } from './free-port.ts'

export const VMESH_BIN = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'vmesh.js')

export interface LocalNodeSpec {
  name: string
  role?: 'host' | 'witness'
  /** Extra top-level config sections (vms, hypervisor, bandwidth...) merged into the YAML. */
  extra?: Record<string, unknown>
  /** Run this node's daemon inside a network namespace (a host of its own); default: 127.0.0.1 of this one. */
  netns?: NodeNetns
  /**
   * The argv that runs this node's daemon (`start` with its config), writing its own log to
   * `logPath` — e.g. Windows Node under Wine (test/wine). Default: this Node and bin/vmesh.js.
   */
  command?: (n: { configPath: string, logPath: string }) => string[]
  /** Extra environment for this node's daemon (e.g. libfaketime's LD_PRELOAD in the soak). */
  env?: Record<string, string>
}

/**
 * A node that runs inside a network namespace (test/helpers/netbed.ts makes them). Its daemon
 * runs as `[...prefix, node, vmesh.js, ...]`, listens on `ip` and is dialed there by its peers.
 * Its control API listens on 127.0.0.1 inside the namespace, which this process cannot reach, so
 * a small forwarder started with the same prefix bridges it to a Unix socket in the node's
 * folder (file-system sockets cross namespaces) and a relay here serves that socket on a
 * 127.0.0.1 port of this namespace: `node.client`, `status()` and `waitFor` work unchanged.
 */
export interface NodeNetns {
  /** Command prefix that enters the namespace, e.g. `['ip', 'netns', 'exec', 'nb-h1']`. */
  prefix: string[]
  /** The node's address in its namespace (listen address, and what peers dial). */
  ip: string
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
  /** The address it listens on and its peers dial (127.0.0.1 unless it runs in a namespace). */
  ip: string
  netns?: NodeNetns
  /** netns nodes: the forwarder from the namespace's API port to `<dir>/api.sock`. */
  forwarder?: ChildProcess
  command?: LocalNodeSpec['command']
  env?: Record<string, string>
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

/** Children still running when this process exits are killed, so a crashed test leaves none behind. */
const liveChildren = new Set<ChildProcess>()
process.once('exit', () => { for (const p of liveChildren) p.kill('SIGKILL') })

/**
 * Run inside a node's namespace: accepts on a Unix socket (argv[1]) and connects each client to
 * 127.0.0.1:argv[2] there. Plain JS for `node -e` (no tsx start-up per node). Exits when its
 * parent (this process) goes away.
 */
const FORWARDER_JS = `
const net = require('node:net'); const fs = require('node:fs')
const [path, port] = process.argv.slice(1)
try { fs.unlinkSync(path) } catch {}
net.createServer((c) => {
  const u = net.connect(Number(port), '127.0.0.1')
  c.on('error', () => u.destroy()); u.on('error', () => c.destroy())
  c.pipe(u); u.pipe(c)
}).listen(path)
const ppid = process.ppid
setInterval(() => { try { process.kill(ppid, 0) } catch { process.exit(0) } }, 500)
`

export class LocalCluster {
  readonly nodes: LocalNode[] = []
  private readonly logs = new Map<string, WriteStream>()
  /** API relays of netns nodes (this namespace's 127.0.0.1 → the node's api.sock). */
  private readonly relays: Server[] = []

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
      const clientPort = spec.netns === undefined ? apiPort : await cluster.relay(join(ndir, 'api.sock'))
      cluster.nodes.push({
        name: spec.name,
        role: spec.role ?? 'host',
        dir: ndir,
        configPath: join(ndir, 'vmesh.yaml'),
        peerId: peerId.toString(),
        port,
        apiPort,
        logPath: join(ndir, 'daemon.log'),
        client: new ApiClient('127.0.0.1', clientPort, join(ndir, 'data', 'api.token')),
        ip: spec.netns?.ip ?? '127.0.0.1',
        ...(spec.command !== undefined ? { command: spec.command } : {}),
        ...(spec.env !== undefined ? { env: spec.env } : {}),
        ...(spec.netns !== undefined ? { netns: spec.netns } : {})
      })
    }
    if (init.psk === true) await createPsk(join(dir, 'mesh.psk'))
    for (const spec of init.nodes) await cluster.writeConfig(spec.name, spec.extra)
    return cluster
  }

  /** A 127.0.0.1 port here whose connections are piped to the Unix socket `path`. */
  private async relay (path: string): Promise<number> {
    const server = createServer((c: Socket) => {
      const u = connect(path)
      c.on('error', () => u.destroy()); u.on('error', () => c.destroy())
      c.pipe(u); u.pipe(c)
    })
    server.unref()
    this.relays.push(server)
    return await new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen(0, '127.0.0.1', () => {
        const a = server.address()
        resolve(typeof a === 'object' && a != null ? a.port : 0)
      })
    })
  }

  /** Starts (again, after a host crash) a netns node's API forwarder. */
  private startForwarder (n: LocalNode): void {
    if (n.netns === undefined) return
    const f = n.forwarder
    if (f !== undefined && f.exitCode === null && f.signalCode === null) return
    const [cmd, ...args] = [...n.netns.prefix, process.execPath, '-e', FORWARDER_JS, join(n.dir, 'api.sock'), String(n.apiPort)]
    const proc = spawn(cmd as string, args, { stdio: 'ignore' })
    proc.on('error', () => {})
    n.forwarder = proc
    liveChildren.add(proc)
    proc.once('exit', () => { liveChildren.delete(proc) })
  }

  node (name: string): LocalNode {
    const n = this.nodes.find(x => x.name === name)
    if (n === undefined) throw new Error(`no node ${name}`)
    return n
  }

  /** The config object a node would be started with (tests tweak and rewrite it). */
  configFor (name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
    const n = this.node(name)
    const peers = this.nodes.filter(p => p.name !== name).map(p => ({ name: p.name, id: p.peerId, addrs: [`/ip4/${p.ip}/tcp/${p.port}`], ...(p.role === 'witness' ? { role: 'witness' } : {}) }))
    return {
      node: { name: n.name, identity: 'identity.key', listen: [`/ip4/${n.ip}/tcp/${n.port}`], dataDir: 'data', api: `127.0.0.1:${n.apiPort}`, role: n.role },
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
    this.startForwarder(n)
    const [cmd, ...args] = n.command !== undefined ? n.command(n) : [...(n.netns?.prefix ?? []), process.execPath, ...daemonNodeArgs(), VMESH_BIN, '--config', n.configPath, 'start']
    const proc = spawn(cmd as string, args, { stdio: ['ignore', n.command !== undefined ? 'ignore' : 'pipe', n.command !== undefined ? 'ignore' : 'pipe'], env: { ...daemonEnv(), ...process.env, ...n.env } })
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

  /**
   * Waits until `node`'s replica of `vm` has applied `generation` in place. A source sees a
   * generation acknowledged once it is durable on the target (journal synced), a moment before
   * the replica files hold it: compare files only after this.
   */
  async waitReplicaApplied (node: string, vm: string, generation: number, timeoutMs = 30_000): Promise<void> {
    await this.waitFor(`${node}'s replica of ${vm} at generation ${generation}`, async () => {
      const r = (await this.status(node)).vms.find(v => v.name === vm)?.replica
      return r != null && r.appliedGeneration >= generation
    }, timeoutMs, 20)
  }

  /**
   * Reads `node`'s replica of `sourcePath` only while it is at rest — not seeding, no generation
   * being received or applied in place — and checks it stayed so across the read: anything else
   * could read a replica half-way through an in-place apply, which no failover or restore ever
   * sees. Throws when the replica moved during the read.
   */
  async readReplicaAtRest (node: string, vm: string, sourcePath: string, timeoutMs = 30_000): Promise<{ generation: number, bytes: Buffer }> {
    type Replica = NonNullable<StatusDocument['vms'][number]['replica']>
    const replica = async (): Promise<Replica | undefined> => {
      try { return (await this.status(node)).vms.find(v => v.name === vm)?.replica ?? undefined } catch { return undefined }
    }
    const atRest = (r: Replica | undefined): r is Replica => r != null && r.seeding !== true && r.applyingGeneration === null && r.receivingGeneration === null
    const before = await this.waitFor(`${node}'s replica of ${vm} at rest`, async () => {
      const r = await replica()
      return atRest(r) ? r : undefined
    }, timeoutMs, 20)
    const path = before.files[sourcePath]
    if (path === undefined) throw new Error(`${node} holds no replica of ${sourcePath}`)
    const bytes = await readFile(path)
    const after = await replica()
    if (!atRest(after) || after.appliedGeneration !== before.appliedGeneration) {
      throw new Error(`${node}'s replica of ${vm} changed while it was read: ${JSON.stringify(before)} then ${JSON.stringify(after)}`)
    }
    return { generation: before.appliedGeneration, bytes }
  }

  /** Member state of `peer` as seen by `viewer`, or undefined when the viewer is down. */
  async memberState (viewer: string, peer: string): Promise<string | undefined> {
    try {
      const s = await this.status(viewer)
      return s.members.find(m => m.name === peer)?.state
    } catch { return undefined }
  }

  /** Stops every daemon and removes the folder (kept with `keep`, or the cluster's `keep`). */
  async destroy (opts: { keep?: boolean } = {}): Promise<void> {
    await Promise.all(this.nodes.map(async n => {
      if (this.isRunning(n.name)) {
        const t = setTimeout(() => n.proc?.kill('SIGKILL'), 5000)
        await this.signal(n.name, 'SIGTERM')
        clearTimeout(t)
      }
    }))
    for (const n of this.nodes) n.forwarder?.kill('SIGKILL')
    for (const r of this.relays) r.close()
    for (const l of this.logs.values()) l.end()
    // retried: a node's watchdog outlives its daemon (by design) and may still write its state
    // file while the folder goes (ENOTEMPTY)
    if (this.init.keep !== true && opts.keep !== true) await rm(this.dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 })
  }
}

/**
 * Node flags for the daemons: those of the bin's shebang (the same flags an installed vmesh
 * runs with), or VMESH_NODE_ARGS (space-separated, e.g. `--cpu-prof --cpu-prof-dir=/tmp/p`)
 * to profile or tune them in a bench.
 */
export function daemonNodeArgs (): string[] {
  const extra = process.env.VMESH_NODE_ARGS
  if (extra !== undefined && extra.trim() !== '') return extra.trim().split(/\s+/)
  return shebangFlags
}

/**
 * The environment the bin's shebang sets for the daemon (`env -S VAR=value node ...`), for
 * daemons started as `node <flags> bin/vmesh.js` (no shebang); a variable already set in this
 * process's environment wins, so a run can try another value.
 */
export function daemonEnv (): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(shebangEnv)) if (process.env[k] === undefined) out[k] = v
  return out
}

const shebangWords: string[] = readFileSync(VMESH_BIN, 'utf8').split('\n', 1)[0]?.replace(/^#!/, '').trim().split(/\s+/) ?? []

/** `#!/usr/bin/env -S VAR=1 node --a --b` → ['--a', '--b'] */
const shebangFlags: string[] = shebangWords.slice(shebangWords.indexOf('node') + 1).filter(w => w.startsWith('--'))

/** `#!/usr/bin/env -S VAR=1 node --a --b` → { VAR: '1' } */
const shebangEnv: Record<string, string> = Object.fromEntries(shebangWords.slice(0, Math.max(0, shebangWords.indexOf('node')))
  .filter(w => /^[A-Z_][A-Z0-9_]*=/.test(w)).map(w => [w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1)]))
