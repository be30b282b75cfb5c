/**
 * Branch offices behind NAT, on one machine: network namespaces with a unique prefix (like
 * Netbed; nothing is added to the root namespace).
 *
 *   <p>-dr   11.0.0.1 ──┐
 *   <p>-ra   11.0.0.2 ──┼── bridge in <p>-wan ("the internet")
 *   <p>-rb   11.0.0.3 ──┘
 *   <p>-ra   192.168.1.1 ── <p>-a 192.168.1.2   (branch A behind router A: MASQUERADE)
 *   <p>-rb   192.168.2.1 ── <p>-b 192.168.2.2   (branch B behind router B: MASQUERADE)
 *
 * The "public" side uses 11.0.0.0/24, an address range libp2p counts as public (the RFC 5737
 * documentation ranges count as private, and DCUtR only exchanges public addresses); the
 * packets never leave these namespaces. Each router forwards only what its branch started
 * (conntrack ESTABLISHED,RELATED back in), so a branch cannot be dialed from outside: the
 * port-restricted behaviour of a typical office router.
 */
import { sh } from './netbed.ts'

export type NatHost = 'dr' | 'a' | 'b'


const live = new Set<Natbed>()
process.once('exit', () => { for (const b of live) b.down() })

export class Natbed {
  constructor (readonly prefix = `vmn${process.pid % 100000}`) {}

  ns (h: NatHost | 'ra' | 'rb' | 'wan'): string { return `${this.prefix}-${h}` }
  exec (h: NatHost | 'ra' | 'rb' | 'wan'): string[] { return ['ip', 'netns', 'exec', this.ns(h)] }
  ip (h: NatHost): string { return h === 'dr' ? '11.0.0.1' : h === 'a' ? '192.168.1.2' : '192.168.2.2' }
  /** The public address a branch's connections appear from. */
  publicIp (h: 'a' | 'b'): string { return h === 'a' ? '11.0.0.2' : '11.0.0.3' }

  start (): void {
    this.down()
    live.add(this)
    try {
      for (const n of ['wan', 'dr', 'ra', 'rb', 'a', 'b'] as const) {
        sh(['ip', 'netns', 'add', this.ns(n)])
        sh([...this.exec(n), 'ip', 'link', 'set', 'lo', 'up'])
      }
      sh([...this.exec('wan'), 'ip', 'link', 'add', 'br0', 'type', 'bridge'])
      sh([...this.exec('wan'), 'ip', 'link', 'set', 'br0', 'up'])
      // public side: dr, ra, rb on the bridge
      const pub: Array<['dr' | 'ra' | 'rb', string]> = [['dr', '11.0.0.1'], ['ra', '11.0.0.2'], ['rb', '11.0.0.3']]
      for (const [n, ip] of pub) {
        sh([...this.exec(n), 'ip', 'link', 'add', 'pub', 'type', 'veth', 'peer', 'name', `w${n}`, 'netns', this.ns('wan')])
        sh([...this.exec(n), 'ip', 'addr', 'add', `${ip}/24`, 'dev', 'pub'])
        sh([...this.exec(n), 'ip', 'link', 'set', 'pub', 'up'])
        sh([...this.exec('wan'), 'ip', 'link', 'set', `w${n}`, 'master', 'br0'])
        sh([...this.exec('wan'), 'ip', 'link', 'set', `w${n}`, 'up'])
      }
      // private side: each branch behind its router, which masquerades and admits only replies
      for (const [r, h, net] of [['ra', 'a', '1'], ['rb', 'b', '2']] as const) {
        sh([...this.exec(r), 'ip', 'link', 'add', 'lan', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', this.ns(h)])
        sh([...this.exec(r), 'ip', 'addr', 'add', `192.168.${net}.1/24`, 'dev', 'lan'])
        sh([...this.exec(r), 'ip', 'link', 'set', 'lan', 'up'])
        sh([...this.exec(h), 'ip', 'addr', 'add', `192.168.${net}.2/24`, 'dev', 'eth0'])
        sh([...this.exec(h), 'ip', 'link', 'set', 'eth0', 'up'])
        sh([...this.exec(h), 'ip', 'route', 'add', 'default', 'via', `192.168.${net}.1`])
        sh([...this.exec(r), 'sysctl', '-qw', 'net.ipv4.ip_forward=1'])
        sh([...this.exec(r), 'iptables', '-t', 'nat', '-A', 'POSTROUTING', '-o', 'pub', '-j', 'MASQUERADE'])
        sh([...this.exec(r), 'iptables', '-P', 'FORWARD', 'DROP'])
        sh([...this.exec(r), 'iptables', '-A', 'FORWARD', '-i', 'lan', '-o', 'pub', '-j', 'ACCEPT'])
        sh([...this.exec(r), 'iptables', '-A', 'FORWARD', '-i', 'pub', '-o', 'lan', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT'])
      }
    } catch (err) {
      this.down()
      throw err
    }
  }

  /** Kills what runs inside, deletes the namespaces. Idempotent; never throws. */
  down (): void {
    const names = sh(['ip', 'netns', 'list'], { allowFail: true }).split('\n').map(l => l.split(' ')[0] ?? '')
    for (const name of names) {
      if (!name.startsWith(`${this.prefix}-`)) continue
      for (const p of sh(['ip', 'netns', 'pids', name], { allowFail: true }).split('\n').map(Number)) {
        if (Number.isInteger(p) && p > 0) { try { process.kill(p, 'SIGKILL') } catch {} }
      }
      sh(['ip', 'netns', 'del', name], { allowFail: true })
    }
    live.delete(this)
  }
}
