/**
 * Chaos soak on real processes (issue #14): three hosts and a witness (network namespaces when
 * root, else loopback), four VMs with a writer each, a seeded nemesis acting every 10-30 s (kill -9
 * of a host, SIGSTOP of a daemon past its lease, a partition of one host or 2/2, a full replica
 * disk, a daemon restart, a ±1 h wall-clock jump), and the invariants checked throughout —
 * test/helpers/soak/engine.ts. Prints the seed, every action and the figures.
 * Usage: npm run bench -- soak [DURATION] [--seed N] [--keep]   (DURATION: 30m, 600s, 180000; default 30m)
 */
import { runSoak } from '../test/helpers/soak/engine.ts'

function durationMs (s: string | undefined): number {
  if (s === undefined) return 30 * 60_000
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(s)
  if (m === null) throw new Error(`bad duration ${s} (e.g. 30m, 600s, 180000)`)
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 'ms'] ?? 1
  return Math.round(Number(m[1]) * unit)
}

export async function run (args: string[]): Promise<object> {
  const i = args.indexOf('--seed')
  const seed = i >= 0 ? Number(args[i + 1]) : Math.floor(Math.random() * 2 ** 31)
  const positional = args.filter((a, j) => !a.startsWith('--') && args[j - 1] !== '--seed')
  const result = await runSoak({
    durationMs: durationMs(positional[0]),
    seed,
    keep: args.includes('--keep'),
    log: (l) => process.stderr.write(`${new Date().toISOString()} ${l}\n`)
  })
  if (result.violations.length > 0) process.exitCode = 1
  return result
}
