/**
 * An emulated WAN link between two hosts of a Netbed (test/helpers/netbed.ts), after
 * /work/shared/testbed/netbed.sh: bandwidth by tbf on the host's eth0 and its switch port,
 * one-way delay and loss by NFQUEUE in the switch namespace and `nfq-delay` (this kernel has no
 * netem). Plus the raw-TCP yardsticks the benchmarks compare with: a bulk transfer and an echo
 * probe, run inside the namespaces with plain node.
 *
 * `nfq-delay` is taken from $NFQ_DELAY, /tmp/testbed-bin, or built from the test bed's source
 * into a temp dir (needs gcc and libnetfilter-queue-dev); `nfqDelayBinary()` says why not.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Netbed } from './netbed.ts'

const SOURCE = '/work/shared/testbed/nfq-delay.c'

function sh (cmd: string[], allowFail = false): string {
  const [file, ...args] = cmd
  const r = spawnSync(file as string, args, { encoding: 'utf8', timeout: 20_000 })
  if ((r.status !== 0 || r.error !== undefined) && !allowFail) throw new Error(`${cmd.join(' ')}: ${r.error?.message ?? r.stderr}`)
  return r.stdout ?? ''
}

/** Path of a working nfq-delay, or an Error saying why there is none. */
export function nfqDelayBinary (): string | Error {
  for (const p of [process.env.NFQ_DELAY, '/tmp/testbed-bin/nfq-delay', join(tmpdir(), 'vmesh-nfq', 'nfq-delay')]) {
    if (p !== undefined && p !== '' && existsSync(p)) return p
  }
  if (!existsSync(SOURCE)) return new Error(`no nfq-delay and no ${SOURCE} to build it from`)
  const dir = join(tmpdir(), 'vmesh-nfq')
  mkdirSync(dir, { recursive: true })
  const out = join(dir, 'nfq-delay')
  const r = spawnSync('gcc', ['-O2', '-o', out, SOURCE, '-lnetfilter_queue'], { encoding: 'utf8', timeout: 60_000 })
  if (r.status !== 0) return new Error(`building nfq-delay failed (gcc, libnetfilter-queue-dev?): ${(r.stderr ?? r.error?.message ?? '').trim().slice(0, 300)}`)
  return out
}

export class WanLink {
  private readonly queues = new Map<string, ChildProcess>()

  constructor (private readonly bed: Netbed) {}

  private get sw (): string[] { return ['ip', 'netns', 'exec', `${this.bed.prefix}-sw`] }

  /** Caps host i's link at `rate` (tc syntax, e.g. '10mbit') both ways; null removes the cap. */
  rate (i: number, rate: string | null): void {
    if (rate === null) {
      sh([...this.bed.exec(i), 'tc', 'qdisc', 'del', 'dev', 'eth0', 'root'], true)
      sh([...this.sw, 'tc', 'qdisc', 'del', 'dev', `p${i}`, 'root'], true)
      return
    }
    sh([...this.bed.exec(i), 'tc', 'qdisc', 'replace', 'dev', 'eth0', 'root', 'tbf', 'rate', rate, 'burst', '32kbit', 'latency', '200ms'])
    sh([...this.sw, 'tc', 'qdisc', 'replace', 'dev', `p${i}`, 'root', 'tbf', 'rate', rate, 'burst', '32kbit', 'latency', '200ms'])
  }

  /** `oneWayMs` each way between hosts a and b, `lossPct` % of packets dropped each way. */
  delay (a: number, b: number, oneWayMs: number, lossPct = 0): void {
    const bin = nfqDelayBinary()
    if (bin instanceof Error) throw bin
    sh([...this.sw, 'sysctl', '-q', '-w', 'net.bridge.bridge-nf-call-iptables=1'])
    for (const [x, y] of [[a, b], [b, a]] as const) {
      this.undelay1(x, y)
      const q = `${x}${y}`
      sh([...this.sw, 'iptables', '-A', 'FORWARD', '-m', 'physdev', '--physdev-in', `p${x}`, '--physdev-out', `p${y}`, '-j', 'NFQUEUE', '--queue-num', q, '--queue-bypass'])
      const [cmd, ...args] = [...this.sw, bin, '-q', q, '-d', String(oneWayMs), '-l', String(lossPct), '-j', '0', '-t', '3600']
      const p = spawn(cmd as string, args, { stdio: 'ignore' })
      this.queues.set(q, p)
    }
    spawnSync('sleep', ['0.2'])
  }

  private undelay1 (x: number, y: number): void {
    const q = `${x}${y}`
    const p = this.queues.get(q)
    if (p !== undefined) { try { p.kill('SIGKILL') } catch {} this.queues.delete(q) }
    sh([...this.sw, 'iptables', '-D', 'FORWARD', '-m', 'physdev', '--physdev-in', `p${x}`, '--physdev-out', `p${y}`, '-j', 'NFQUEUE', '--queue-num', q, '--queue-bypass'], true)
  }

  /** Removes delay and loss between a and b. */
  undelay (a: number, b: number): void { this.undelay1(a, b); this.undelay1(b, a) }

  /** Kills every nfq-delay this link started (the bed's down() removes the rest). */
  close (): void {
    for (const p of this.queues.values()) { try { p.kill('SIGKILL') } catch {} }
    this.queues.clear()
  }
}

// node -e: process.argv[1] is the first argument
const SINK_JS = `
const net = require('net'); const want = Number(process.argv[1]); const port = Number(process.argv[2])
const srv = net.createServer(s => { let n = 0; s.on('data', d => { n += d.length; if (n >= want) { s.end('done'); srv.close() } }) })
srv.listen(port, '0.0.0.0', () => process.stdout.write('ready\\n'))`
const SEND_JS = `
const net = require('net'); const crypto = require('crypto'); const want = Number(process.argv[1])
const buf = crypto.randomBytes(1 << 20); const t0 = performance.now(); let sent = 0
const s = net.connect(Number(process.argv[3]), process.argv[2], () => { const pump = () => { while (sent < want) { const n = Math.min(buf.length, want - sent); sent += n; if (!s.write(n === buf.length ? buf : buf.subarray(0, n))) { s.once('drain', pump); return } } }; pump() })
s.on('data', () => { process.stdout.write(String(performance.now() - t0)); s.destroy() })`
const ECHO_JS = `
const net = require('net'); net.createServer(s => s.pipe(s)).listen(Number(process.argv[1]), '0.0.0.0', () => process.stdout.write('ready\\n'))`
const PROBE_JS = `
const net = require('net'); const s = net.connect(Number(process.argv[2]), process.argv[1]); s.setNoDelay(true)
let t = 0; s.on('data', () => { process.stdout.write((performance.now() - t).toFixed(1) + '\\n') })
setInterval(() => { t = performance.now(); s.write('x') }, Number(process.argv[3]))`

async function waitReady (p: ChildProcess): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    p.stdout?.once('data', () => { resolve() })
    p.once('exit', (code) => { reject(new Error(`helper exited with ${String(code)}`)) })
  })
}

/** Seconds raw TCP takes to move `bytes` of random data from host `from` to host `to` (until the receiver says it has all). */
export async function rawTcpSeconds (bed: Netbed, from: number, to: number, bytes: number, port = 5201): Promise<number> {
  const sink = spawn(bed.exec(to)[0] as string, [...bed.exec(to).slice(1), process.execPath, '-e', SINK_JS, String(bytes), String(port)], { stdio: ['ignore', 'pipe', 'ignore'] })
  try {
    await waitReady(sink)
    const r = spawnSync(bed.exec(from)[0] as string, [...bed.exec(from).slice(1), process.execPath, '-e', SEND_JS, String(bytes), bed.ip(to), String(port)], { encoding: 'utf8', timeout: 900_000 })
    const ms = Number(r.stdout)
    if (!Number.isFinite(ms) || ms <= 0) throw new Error(`raw TCP transfer failed: ${r.stderr ?? ''}`)
    return ms / 1000
  } finally { try { sink.kill('SIGKILL') } catch {} }
}

/**
 * A TCP echo probe from host `from` to host `to` every `everyMs` over its own connection
 * through the same link: what a small message waits in the link's queues. stop() returns the
 * round trips (ms).
 */
export async function startEchoProbe (bed: Netbed, from: number, to: number, everyMs = 100, port = 5202): Promise<{ stop: () => number[] }> {
  const echo = spawn(bed.exec(to)[0] as string, [...bed.exec(to).slice(1), process.execPath, '-e', ECHO_JS, String(port)], { stdio: ['ignore', 'pipe', 'ignore'] })
  await waitReady(echo)
  const probe = spawn(bed.exec(from)[0] as string, [...bed.exec(from).slice(1), process.execPath, '-e', PROBE_JS, bed.ip(to), String(port), String(everyMs)], { stdio: ['ignore', 'pipe', 'ignore'] })
  const rtts: number[] = []
  let buf = ''
  probe.stdout?.on('data', (d: Buffer) => {
    buf += d.toString()
    const lines = buf.split('\n')
    buf = lines.pop() ?? ''
    for (const l of lines) { const v = Number(l); if (Number.isFinite(v)) rtts.push(v) }
  })
  return {
    stop: () => {
      try { probe.kill('SIGKILL') } catch {}
      try { echo.kill('SIGKILL') } catch {}
      return rtts
    }
  }
}
