/**
 * `vmesh dashboard`: asks the running daemon (with the API token, like every command) for a
 * one-time login URL, prints it and, where a desktop session exists, opens it with xdg-open
 * (`open` on macOS, `start` on Windows). The URL is single-use and expires in a minute; the API
 * token itself never reaches the browser.
 *
 * `vmesh status --mesh`: every node's summary as this node last heard it (stale ones marked with
 * their age), rendered by `renderMeshStatus`.
 */
import { spawn } from 'node:child_process'
import type { Command } from 'commander'
import { loadConfig } from '../../../config/load.ts'
import { ApiClient } from '../../api/client.ts'
import { printError, printResult, EXIT_OK, type OutputOptions } from '../output.ts'
import type { MeshStatusView } from '../../dashboard/mesh-status.ts'

export interface LoginAnswer { url: string, urls: string[], expiresInMs: number }

/** True when a browser can be opened here (a desktop session, not SSH-only). */
export function hasDesktop (env: NodeJS.ProcessEnv, platform: NodeJS.Platform): boolean {
  if (platform === 'win32' || platform === 'darwin') return true
  return (env.DISPLAY ?? '') !== '' || (env.WAYLAND_DISPLAY ?? '') !== ''
}

function openBrowser (url: string): void {
  const [cmd, args] = process.platform === 'darwin' ? ['open', [url]] : process.platform === 'win32' ? ['cmd.exe', ['/d', '/s', '/c', 'start', '""', url]] : ['xdg-open', [url]]
  try {
    const child = spawn(cmd, args as string[], { stdio: 'ignore', detached: true })
    child.on('error', () => {}) // no opener installed: the printed URL is enough
    child.unref()
  } catch { /* the URL is printed anyway */ }
}

export function registerDashboard (program: Command): void {
  program.command('dashboard')
    .description('print (and open, on a desktop) a one-time login URL for the web dashboard')
    .option('--no-open', 'only print the URL')
    .option('--json', 'print JSON')
    .action(async (_o: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals() as OutputOptions & { config: string, open: boolean }
      try {
        const { config } = await loadConfig(o.config, { skipSecrets: true })
        const r = await ApiClient.forConfig(config).call<LoginAnswer>('POST', '/v1/dashboard/login')
        const opened = o.open && o.json !== true && hasDesktop(process.env, process.platform)
        if (opened) openBrowser(r.url)
        printResult(o, { ...r, opened }, () => [
          ...r.urls.map(u => u),
          `single use, valid for ${Math.round(r.expiresInMs / 1000)} s${opened ? ' — opening it in your browser' : ''}`
        ].join('\n'))
        process.exitCode = EXIT_OK
      } catch (err) {
        process.exitCode = printError(o, err)
      }
    })
}

function ago (ms: number | null): string {
  if (ms === null) return 'never'
  if (ms < 1000) return `${ms}ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)}m${Math.floor((ms % 60_000) / 1000)}s`
  return `${Math.floor(ms / 3_600_000)}h${Math.floor((ms % 3_600_000) / 60_000)}m`
}
function pad (s: string, n: number): string { return s.length >= n ? s + ' ' : s + ' '.repeat(n - s.length) }

/** Text of `vmesh status --mesh`: nodes, the membership matrix, then every VM as its nodes report it. */
export function renderMeshStatus (v: MeshStatusView): string {
  const lines: string[] = [`mesh as seen from ${v.node}`, '']
  lines.push(`${pad('NODE', 16)}${pad('ROLE', 9)}${pad('STATE', 9)}${pad('CONN', 6)}${pad('HEARD', 12)}SUMMARY`)
  for (const n of v.nodes) {
    const heard = n.self ? 'self' : n.ageMs === null ? 'never' : `${ago(n.ageMs)} ago`
    lines.push(`${pad(n.name, 16)}${pad(n.role, 9)}${pad(n.state, 9)}${pad(n.self ? '-' : n.connected ? 'yes' : 'no', 6)}${pad(heard, 12)}${n.summary === null ? '(none)' : n.stale && !n.self ? `STALE (as of ${ago(n.ageMs)} ago)` : 'current'}`)
  }
  const names = v.nodes.map(n => n.name)
  lines.push('', `${pad('view \\ member', 16)}${names.map(x => pad(x, 10)).join('')}`)
  for (const n of v.nodes) {
    const cells = names.map(x => x === n.name ? pad('self', 10) : pad(n.summary?.members.find(m => m.name === x)?.state ?? '-', 10))
    lines.push(`${pad(n.name, 16)}${cells.join('')}${n.stale && !n.self ? `  (stale, ${ago(n.ageMs)})` : ''}`)
  }
  const vmLines: string[] = []
  for (const n of v.nodes) {
    for (const vm of n.summary?.vms ?? []) {
      const parts: string[] = []
      if (vm.runningHere) parts.push('running')
      for (const t of vm.targets) parts.push(`→${t.node}:${t.state}${t.lagMs !== null ? ` lag ${ago(t.lagMs)}` : ''}${t.seedProgress !== null ? ` ${(t.seedProgress * 100).toFixed(0)}%` : ''}`)
      if (vm.replica !== null) parts.push(`replica of ${vm.replica.from} gen ${vm.replica.appliedGeneration}${vm.replica.seeding ? ' (seeding)' : ''}`)
      vmLines.push(`${pad(vm.name, 14)}${pad(n.name, 12)}${pad(vm.owner ?? '-', 12)}${pad(String(vm.epoch), 7)}${parts.join('; ') || '-'}${n.stale && !n.self ? '  (stale)' : ''}`)
    }
  }
  if (vmLines.length > 0) lines.push('', `${pad('VM', 14)}${pad('REPORTED BY', 12)}${pad('OWNER', 12)}${pad('EPOCH', 7)}THERE`, ...vmLines)
  return lines.join('\n')
}

export async function runMeshStatus (o: OutputOptions & { config: string }): Promise<number> {
  const { config } = await loadConfig(o.config, { skipSecrets: true })
  const v = await ApiClient.forConfig(config).call<MeshStatusView>('GET', '/v1/status/mesh')
  printResult(o, v, () => renderMeshStatus(v))
  return EXIT_OK
}

/** `vmesh status --mesh --watch`: the same, refreshed every `periodMs` (with --json one document per line). */
export async function watchMeshStatus (o: OutputOptions & { config: string }, periodMs: number): Promise<number> {
  const { config } = await loadConfig(o.config, { skipSecrets: true })
  const client = ApiClient.forConfig(config)
  for (;;) {
    const v = await client.call<MeshStatusView>('GET', '/v1/status/mesh')
    if (o.json === true) process.stdout.write(JSON.stringify(v) + '\n')
    else process.stdout.write('\x1b[2J\x1b[H' + renderMeshStatus(v) + '\n')
    await new Promise(resolve => setTimeout(resolve, periodMs))
  }
}
