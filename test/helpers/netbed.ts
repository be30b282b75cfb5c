/**
 * Several "hosts" on one machine for integration tests: network namespaces `<prefix>-h1..N`
 * with 10.200.0.1..N on a bridge in `<prefix>-sw`, after /work/shared/testbed/netbed.sh (the
 * same `ip` commands), with a prefix unique to this process so parallel runs and a leftover bed
 * never collide. Nothing is added to the root namespace.
 *
 * Partitions are iptables DROP rules on each host's INPUT (chain VMPART), so they need neither
 * br_netfilter nor xt_physdev: `isolate(i)` drops what host i receives from anyone and what
 * anyone receives from host i — packets are sent and silently lost, like a dead link (an
 * OUTPUT rule would fail the sender's syscalls with EPERM instead). Loopback inside a host is
 * never filtered, so a daemon's local API stays reachable while it is cut off.
 *
 * Needs root and `ip` + `iptables`; `Netbed.unavailable()` says why not. `down()` (also run on
 * process exit) kills what runs inside the namespaces and deletes them.
 */
import { spawnSync } from 'node:child_process'

export class NetbedError extends Error {
  constructor (readonly command: string, readonly stderr: string, readonly code = 'ERR_NETBED') {
    super(`${command}: ${stderr.trim()}`)
    this.name = 'NetbedError'
  }
}

const live = new Set<Netbed>()
process.once('exit', () => { for (const b of live) b.down() })

/** Runs a command; throws NetbedError on failure unless `allowFail`. Returns stdout. */
export function sh (cmd: string[], opts: { allowFail?: boolean } = {}): string {
  const [file, ...args] = cmd
  const r = spawnSync(file as string, args, { encoding: 'utf8', timeout: 20_000 })
  if ((r.status !== 0 || r.error !== undefined) && opts.allowFail !== true) {
    throw new NetbedError(cmd.join(' '), r.error !== undefined ? r.error.message : r.stderr)
  }
  return r.stdout ?? ''
}

export class Netbed {
  private up = false
  private hosts = 0

  /** `prefix`: namespace name prefix (short: interface names are ≤ 15 chars). */
  constructor (readonly prefix = `vmt${process.pid % 100000}`) {}

  /**
   * Why this machine cannot run a netbed (not root, no `ip netns`, veth, bridge or iptables in a
   * namespace), or undefined. Tries each in a throwaway namespace.
   */
  static unavailable (): string | undefined {
    if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'network namespaces need root'
    for (const [tool, arg] of [['ip', '-V'], ['iptables', '--version']] as const) {
      const r = spawnSync(tool, [arg], { stdio: 'ignore', timeout: 10_000 })
      if (r.status !== 0) return `${tool} is not available (install iproute2 and iptables)`
    }
    const probe = `vmtprobe${process.pid % 100000}`
    const r = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8', timeout: 10_000 })
    if (r.status !== 0) return `ip netns add failed: ${(r.stderr ?? '').trim()}`
    try {
      const veth = spawnSync('ip', ['netns', 'exec', probe, 'ip', 'link', 'add', 'pa', 'type', 'veth', 'peer', 'name', 'pb'], { encoding: 'utf8', timeout: 10_000 })
      if (veth.status !== 0) return `veth pairs are not available: ${(veth.stderr ?? '').trim()}`
      const br = spawnSync('ip', ['netns', 'exec', probe, 'ip', 'link', 'add', 'br0', 'type', 'bridge'], { encoding: 'utf8', timeout: 10_000 })
      if (br.status !== 0) return `bridges are not available: ${(br.stderr ?? '').trim()}`
      const ipt = spawnSync('ip', ['netns', 'exec', probe, 'iptables', '-A', 'INPUT', '-s', '10.200.0.9', '-j', 'DROP'], { encoding: 'utf8', timeout: 10_000 })
      if (ipt.status !== 0) return `iptables does not work inside a namespace: ${(ipt.stderr ?? '').trim()}`
      return undefined
    } finally {
      spawnSync('ip', ['netns', 'del', probe], { stdio: 'ignore', timeout: 10_000 })
    }
  }

  ns (i: number): string { return `${this.prefix}-h${i}` }
  ip (i: number): string { return `10.200.0.${i}` }
  /** Command prefix that runs a command inside host i. */
  exec (i: number): string[] { return ['ip', 'netns', 'exec', this.ns(i)] }
  private get sw (): string { return `${this.prefix}-sw` }

  /** Creates the switch and `n` hosts. On failure, removes what it made and throws NetbedError. */
  start (n: number): void {
    this.down()
    live.add(this)
    this.up = true
    this.hosts = n
    try {
      sh(['ip', 'netns', 'add', this.sw])
      sh(['ip', 'netns', 'exec', this.sw, 'ip', 'link', 'set', 'lo', 'up'])
      sh(['ip', 'netns', 'exec', this.sw, 'ip', 'link', 'add', 'br0', 'type', 'bridge'])
      sh(['ip', 'netns', 'exec', this.sw, 'ip', 'link', 'set', 'br0', 'up'])
      for (let i = 1; i <= n; i++) {
        const h = this.ns(i)
        sh(['ip', 'netns', 'add', h])
        sh(['ip', 'link', 'add', `${this.prefix}-v${i}`, 'netns', h, 'type', 'veth', 'peer', 'name', `p${i}`, 'netns', this.sw])
        sh([...this.exec(i), 'ip', 'link', 'set', `${this.prefix}-v${i}`, 'name', 'eth0'])
        sh([...this.exec(i), 'ip', 'addr', 'add', `${this.ip(i)}/24`, 'dev', 'eth0'])
        sh([...this.exec(i), 'ip', 'link', 'set', 'eth0', 'up'])
        sh([...this.exec(i), 'ip', 'link', 'set', 'lo', 'up'])
        sh([...this.exec(i), 'iptables', '-N', 'VMPART'])
        sh([...this.exec(i), 'iptables', '-A', 'INPUT', '-j', 'VMPART'])
        sh(['ip', 'netns', 'exec', this.sw, 'ip', 'link', 'set', `p${i}`, 'master', 'br0'])
        sh(['ip', 'netns', 'exec', this.sw, 'ip', 'link', 'set', `p${i}`, 'up'])
      }
    } catch (err) {
      this.down()
      throw err
    }
  }

  /** Host a stops receiving from host b (one direction). */
  cut1 (a: number, b: number): void { sh([...this.exec(a), 'iptables', '-A', 'VMPART', '-s', this.ip(b), '-j', 'DROP']) }
  /** Hosts a and b no longer hear each other. */
  cut (a: number, b: number): void { this.cut1(a, b); this.cut1(b, a) }
  /** Host i is cut off from every other host (its loopback still works). */
  isolate (i: number): void {
    sh([...this.exec(i), 'iptables', '-A', 'VMPART', '-i', 'eth0', '-j', 'DROP'])
    for (let j = 1; j <= this.hosts; j++) if (j !== i) this.cut1(j, i)
  }

  /** Removes every partition. */
  heal (): void { for (let i = 1; i <= this.hosts; i++) sh([...this.exec(i), 'iptables', '-F', 'VMPART']) }

  /** PIDs of the processes inside host i. */
  pids (i: number): number[] {
    return sh(['ip', 'netns', 'pids', this.ns(i)], { allowFail: true }).split('\n').map(Number).filter(p => Number.isInteger(p) && p > 0)
  }

  /** SIGKILL of everything inside host i (a host crash). Returns the PIDs killed. */
  kill (i: number): number[] {
    const pids = this.pids(i)
    for (const p of pids) { try { process.kill(p, 'SIGKILL') } catch {} }
    return pids
  }

  /** Kills everything inside, deletes the namespaces. Idempotent; never throws. */
  down (): void {
    const names = sh(['ip', 'netns', 'list'], { allowFail: true }).split('\n').map(l => l.split(' ')[0] ?? '')
    for (const name of names) {
      if (!name.startsWith(`${this.prefix}-h`)) continue
      for (const p of sh(['ip', 'netns', 'pids', name], { allowFail: true }).split('\n').map(Number)) {
        if (Number.isInteger(p) && p > 0) { try { process.kill(p, 'SIGKILL') } catch {} }
      }
      sh(['ip', 'netns', 'del', name], { allowFail: true })
    }
    if (names.includes(this.sw)) sh(['ip', 'netns', 'del', this.sw], { allowFail: true })
    this.up = false
    live.delete(this)
  }

  get isUp (): boolean { return this.up }
}
