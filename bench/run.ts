/**
 * `npm run bench -- <name> [args]`: runs one benchmark and prints its JSON figures (with the
 * baselines measured in the same run) on stdout. Each benchmark is a module exporting
 * `run(args): Promise<object>`.
 */
import '../common/polyfill.ts'

const BENCHES: Record<string, string> = {
  detect: './detect.ts',
  scan: './scan.ts',
  replicate: './replicate.ts',
  capture: './capture.ts',
  failover: './failover.ts',
  fuzz: './fuzz.ts',
  soak: './soak.ts',
  wan: './wan.ts'
}

async function main (): Promise<void> {
  const [name, ...args] = process.argv.slice(2)
  const path = name !== undefined ? BENCHES[name] : undefined
  if (path === undefined) {
    process.stderr.write(`usage: npm run bench -- <${Object.keys(BENCHES).join('|')}> [args]\n`)
    process.exitCode = 2
    return
  }
  const mod = await import(path) as { run: (args: string[]) => Promise<object> }
  const result = await mod.run(args)
  process.stdout.write(JSON.stringify({ bench: name, at: new Date().toISOString(), ...result }, null, 2) + '\n')
}

main().catch((err) => { process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`); process.exitCode = 1 })
