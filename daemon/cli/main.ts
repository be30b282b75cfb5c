/**
 * The `vmesh` command line. Each command parses its flags (commander), does its work through
 * config/, storage/ or the control API, and ends through output.ts so the JSON and exit-code
 * contract of the README ("Command line") holds everywhere.
 */
import '../../common/polyfill.ts'
import { Command, CommanderError, Option } from 'commander'
import { loadConfig } from '../../config/load.ts'
import { createPsk } from '../../config/identity.ts'
import { createLogger } from '../log.ts'
import { ApiClient } from '../api/client.ts'
import { hostOs, reloadSignal, stopSignals } from '../../common/platform/index.ts'
import { printError, printResult, EXIT_OK, EXIT_FAILED, EXIT_USAGE, UsageError, type OutputOptions } from './output.ts'
import { runInit } from './commands/init.ts'
import { runPeerAdd } from './commands/peer-add.ts'
import { renderStatus } from './commands/status.ts'
import { registerDiscover } from './commands/discover.ts'
import { registerFailover } from './commands/failover.ts'
import { registerDashboard, runMeshStatus, watchMeshStatus } from './commands/dashboard.ts'
import { registerAlert } from './commands/alert.ts'
import { registerProgress } from './commands/progress.ts'
import type { StatusDocument } from '../status.ts'
import type { ReplicaPoints } from '../replication/service.ts'

const DEFAULT_CONFIG = './vmesh.yaml'

type Action<T> = (opts: T & OutputOptions) => Promise<number | undefined>

function wrap<T> (fn: Action<T>): (...args: unknown[]) => Promise<void> {
  return async (...args: unknown[]) => {
    const cmd = args[args.length - 1] as Command
    const opts = cmd.optsWithGlobals() as T & OutputOptions
    try {
      const code = await fn(opts)
      process.exitCode = code ?? EXIT_OK
    } catch (err) {
      process.exitCode = printError(opts, err)
    }
  }
}

export function buildProgram (): Command {
  const program = new Command('vmesh')
  program
    .description('Peer-to-peer VM replication and failover for Hyper-V and KVM hosts')
    .option('--config <file>', 'config file', DEFAULT_CONFIG)
    .showHelpAfterError()
    .exitOverride()

  program.command('init')
    .description('create a new identity and a starter config in DIR')
    .requiredOption('--dir <dir>', 'folder for vmesh.yaml and identity.key')
    .requiredOption('--name <name>', 'node name, unique in the mesh')
    .option('--listen <multiaddr...>', 'listen addresses', undefined)
    .option('--api <host:port>', 'control API address', '127.0.0.1:7401')
    .addOption(new Option('--role <role>', 'host or witness').choices(['host', 'witness']).default('host'))
    .option('--json', 'print JSON')
    .action(wrap<{ dir: string, name: string, listen?: string[], api: string, role: string }>(async (o) => {
      const r = await runInit({ dir: o.dir, name: o.name, ...(o.listen !== undefined ? { listen: o.listen } : {}), api: o.api, role: o.role })
      printResult(o, r, () => [`created ${r.config}`, `node     ${r.name} (${r.role})`, `peer ID  ${r.peerId}`, ...r.addresses.map(a => `address  ${a}`), `\nOn every other node: vmesh peer add --name ${r.name} --id ${r.peerId} --addr <reachable address>`].join('\n'))
      return EXIT_OK
    }))

  const peer = program.command('peer').description('manage the mesh allowlist')
  peer.command('add')
    .description('add a peer to mesh.peers, keeping the file\'s comments')
    .requiredOption('--name <name>', 'peer node name')
    .requiredOption('--id <peerId>', 'peer libp2p ID')
    .requiredOption('--addr <multiaddr...>', 'peer address(es)')
    .addOption(new Option('--role <role>', 'host or witness').choices(['host', 'witness']).default('host'))
    .option('--json', 'print JSON')
    .action(wrap<{ config: string, name: string, id: string, addr: string[], role: string }>(async (o) => {
      const r = await runPeerAdd(o)
      printResult(o, r, () => `added ${r.peer.name} (${r.peer.role}) to ${r.config}; run \`vmesh reload\` if the daemon is running`)
      return EXIT_OK
    }))

  program.command('psk')
    .description('create a new pre-shared key file for a private mesh (copy it to every node)')
    .requiredOption('--out <file>', 'where to write it (mode 0600)')
    .option('--json', 'print JSON')
    .action(wrap<{ out: string }>(async (o) => {
      await createPsk(o.out)
      printResult(o, { psk: o.out }, () => `wrote ${o.out}; set mesh.psk to it on every node`)
      return EXIT_OK
    }))

  program.command('start')
    .description('run the daemon in the foreground (JSON logs on stdout)')
    .action(wrap<{ config: string }>(async (o) => {
      const loaded = await loadConfig(o.config)
      const log = createLogger({ level: loaded.config.log.level, node: loaded.config.node.name })
      const { Daemon } = await import('../daemon.ts')
      let stopRequested = (): void => {}
      const daemon = new Daemon(loaded, { log, onStopRequested: () => { stopRequested() } })
      const done = new Promise<void>((resolve) => {
        let stopping = false
        const onSignal = (sig: string): void => {
          if (stopping) return
          stopping = true
          log.info({ signal: sig }, 'stopping')
          // a stop that hangs must not keep the process alive past the 5 s promise
          setTimeout(() => { log.error('clean stop took over 4.5 s; exiting'); process.exit(1) }, 4500).unref()
          daemon.stop().then(resolve, (err) => { log.error({ err }, 'stop failed'); resolve() })
        }
        // POSIX: SIGTERM/SIGINT stop, SIGHUP reloads. Windows delivers neither SIGTERM nor a
        // reload signal: `vmesh stop` / `vmesh reload` go through the control API there
        const reloadSig = reloadSignal(hostOs)
        if (reloadSig !== undefined) {
          process.on(reloadSig, () => {
            daemon.reload().catch((err) => { log.error({ error: (err as Error).message }, 'reload failed; running config unchanged') })
          })
        }
        for (const sig of stopSignals(hostOs)) process.on(sig, () => onSignal(sig))
        stopRequested = () => onSignal('api')
      })
      try {
        await daemon.start()
      } catch (err) {
        // a half-started daemon (port taken, data dir unwritable...) must not linger holding sockets
        log.fatal({ error: (err as Error).message }, 'daemon failed to start')
        await daemon.stop().catch(() => {})
        process.exit(EXIT_FAILED)
      }
      await done
      return EXIT_OK
    }))

  program.command('stop')
    .description('stop the running daemon cleanly through the control API (the way to stop it on Windows, which has no SIGTERM)')
    .option('--json', 'print JSON')
    .action(wrap<{ config: string }>(async (o) => {
      const { config } = await loadConfig(o.config, { skipSecrets: true })
      const r = await ApiClient.forConfig(config).call<{ stopping: boolean }>('POST', '/v1/stop')
      printResult(o, r, () => 'stopping')
      return EXIT_OK
    }))

  program.command('reload')
    .description('make the running daemon re-read its config without dropping streams')
    .option('--json', 'print JSON')
    .action(wrap<{ config: string }>(async (o) => {
      const { config } = await loadConfig(o.config, { skipSecrets: true })
      const r = await ApiClient.forConfig(config).call<{ applied: string[], restartRequired: string[] }>('POST', '/v1/reload')
      printResult(o, r, () => [`reloaded: ${r.applied.length > 0 ? r.applied.join(', ') : 'no live changes'}`, ...(r.restartRequired.length > 0 ? [`needs a restart to take effect: ${r.restartRequired.join(', ')}`] : [])].join('\n'))
      return EXIT_OK
    }))

  program.command('status')
    .description('what the running daemon knows: members, VMs, replication, ownership')
    .option('--watch', 'refresh every second')
    .option('--mesh', 'every node\'s status, as exchanged over the mesh (stale ones marked with their age)')
    .option('--interval <ms>', 'refresh period for --watch', '1000')
    .option('--json', 'print JSON')
    .action(wrap<{ config: string, watch?: boolean, mesh?: boolean, interval: string }>(async (o) => {
      if (o.mesh === true && o.watch !== true) return await runMeshStatus(o)
      if (o.mesh === true) return await watchMeshStatus(o, Math.max(100, Number(o.interval) || 1000))
      const { config } = await loadConfig(o.config, { skipSecrets: true })
      const client = ApiClient.forConfig(config)
      if (o.watch !== true) {
        const s = await client.call<StatusDocument>('GET', '/v1/status')
        printResult(o, s, () => renderStatus(s))
        return EXIT_OK
      }
      const period = Math.max(100, Number(o.interval) || 1000)
      for (;;) {
        const s = await client.call<StatusDocument>('GET', '/v1/status')
        if (o.json === true) process.stdout.write(JSON.stringify(s) + '\n')
        else process.stdout.write('\x1b[2J\x1b[H' + renderStatus(s) + '\n')
        await new Promise(resolve => setTimeout(resolve, period))
      }
    }))

  program.command('points')
    .description('recovery points of the replica(s) of VM held on this node')
    .argument('<vm>', 'VM name')
    .option('--json', 'print JSON')
    .action(async (vm: string, _o: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals() as OutputOptions & { config: string }
      try {
        const { config } = await loadConfig(o.config, { skipSecrets: true })
        const r = await ApiClient.forConfig(config).call<ReplicaPoints>('GET', `/v1/replication/points?vm=${encodeURIComponent(vm)}`)
        printResult(o, r, () => r.replicas.map(x => [
          `${vm} from ${x.from}: applied generation ${x.appliedGeneration}${x.seeding ? ' (seeding)' : ''}, latest consistent ${x.appliedConsistentGeneration}`,
          ...(x.points.length === 0 ? ['  (no recovery points yet)'] : x.points.map(p => `  point ${p.id.padEnd(8)} ${new Date(p.createdAtMs).toISOString()}`))
        ].join('\n')).join('\n'))
        process.exitCode = EXIT_OK
      } catch (err) { process.exitCode = printError(o, err) }
    })

  program.command('restore')
    .description('materialize a recovery point of VM as files in DIR (replication keeps running)')
    .argument('<vm>', 'VM name')
    .requiredOption('--point <id>', 'recovery point id (see vmesh points)')
    .requiredOption('--to <dir>', 'empty or new folder for the files')
    .option('--from <node>', 'source node, when replicas of VM from several nodes are held here')
    .option('--json', 'print JSON')
    .action(async (vm: string, _o: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals() as OutputOptions & { config: string, point: string, to: string, from?: string }
      try {
        const { config } = await loadConfig(o.config, { skipSecrets: true })
        const { resolve } = await import('node:path')
        const client = ApiClient.forConfig(config)
        // progress: the daemon's own count of the restore (replica files cloned, then undo logs applied)
        const { Progress, progressMode, followOperation, newOperationId, readOperation } = await import('./progress.ts')
        const op = newOperationId('restore')
        const progress = new Progress(progressMode(o))
        const work = client.call<{ pointId: string, generation: number, from: string, files: Record<string, string> }>('POST', '/v1/replication/restore', { vm, point: o.point, to: resolve(o.to), ...(o.from !== undefined ? { from: o.from } : {}), op }, { timeoutMs: 3_600_000 })
        const task = progress.task(`restore ${vm} point ${o.point}`)
        let r: Awaited<typeof work>
        try { r = await followOperation(task, async () => await readOperation(client, op), work); task.finish('restored') } finally { progress.stop() }
        printResult(o, r, () => [`restored ${vm} point ${r.pointId} (generation ${r.generation}, from ${r.from}):`, ...Object.entries(r.files).map(([src, dst]) => `  ${src} -> ${dst}`)].join('\n'))
        process.exitCode = EXIT_OK
      } catch (err) { process.exitCode = printError(o, err) }
    })

  program.command('verify')
    .description('compare VM\'s source files with every replica block by block (run on the source)')
    .argument('<vm>', 'VM name')
    .option('--repair', 'mark mismatching blocks dirty so the next generation fixes them')
    .option('--timeout <ms>', 'how long to wait for each target to be in sync', '120000')
    .option('--json', 'print JSON')
    .action(async (vm: string, _o: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals() as OutputOptions & { config: string, repair?: boolean, timeout: string }
      try {
        const timeoutMs = Number(o.timeout)
        if (!Number.isInteger(timeoutMs) || timeoutMs < 1000) throw new UsageError(`--timeout "${o.timeout}" must be an integer number of ms >= 1000`)
        const { config } = await loadConfig(o.config, { skipSecrets: true })
        const client = ApiClient.forConfig(config)
        // progress: the source files read while each target hashes its replica (size × targets)
        const { Progress, progressMode, followOperation, newOperationId, readOperation } = await import('./progress.ts')
        const op = newOperationId('verify')
        const progress = new Progress(progressMode(o))
        const task = progress.task(`verify ${vm}`)
        const work = client.call<{ vm: string, ok: boolean, targets: Array<{ target: string, mismatchedBlocks: number, repaired: boolean, files: Array<{ path: string, blocks: number, mismatched: Array<{ offset: number, length: number }> }> }> }>('POST', '/v1/replication/verify', { vm, repair: o.repair === true, timeoutMs, op }, { timeoutMs: timeoutMs * 4 + 60_000 })
        let r: Awaited<typeof work>
        try { r = await followOperation(task, async () => await readOperation(client, op), work); task.finish(r.ok ? 'identical' : 'differences found') } finally { progress.stop() }
        printResult(o, r, () => r.targets.map(t => `${t.target}: ${t.mismatchedBlocks === 0 ? 'identical' : `${t.mismatchedBlocks} mismatching blocks${t.repaired ? ' (marked for resend)' : ''}`} (${t.files.map(f => `${f.path}: ${f.blocks} blocks`).join(', ')})`).join('\n'))
        process.exitCode = r.ok ? EXIT_OK : EXIT_FAILED
      } catch (err) { process.exitCode = printError(o, err) }
    })

  program.command('inspect')
    .description('a VHD/VHDX file\'s format, sizes, blocks, parent and pending log')
    .argument('<file>', 'the disk file')
    .option('--json', 'print JSON')
    .action(async (file: string, _o: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals() as OutputOptions
      try {
        const { inspect, formatInspectText } = await import('../../storage/formats/index.ts')
        const r = await inspect(file)
        printResult(o, r, () => formatInspectText(r))
        process.exitCode = EXIT_OK
      } catch (err) { process.exitCode = printError(o, err) }
    })

  program.command('scan')
    .description('changed blocks and bytes of one file since the last scan with that state')
    .argument('<file>', 'the file to scan')
    .requiredOption('--state <dir>', 'folder holding this file\'s scan state (created if missing)')
    .option('--block-size <size>', 'block size (4KiB-4MiB)', '64KiB')
    .option('--json', 'print JSON')
    .action(async (file: string, _o: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals() as OutputOptions & { state: string, blockSize: string }
      try {
        const { parseSize } = await import('../../config/units.ts')
        const { BLOCK_SIZE_RULE, isValidBlockSize } = await import('../../common/block-size.ts')
        const blockSizeBytes = parseSize(o.blockSize)
        if (blockSizeBytes === undefined || !isValidBlockSize(blockSizeBytes)) throw new UsageError(`--block-size "${o.blockSize}" must be ${BLOCK_SIZE_RULE}`)
        const { scanFile } = await import('../../storage/changes/scan-command.ts')
        const { formatRangesOf } = await import('../../storage/changes/format-ranges.ts')
        const r = await scanFile(file, o.state, { blockSizeBytes, rangesOf: formatRangesOf })
        printResult(o, r, () => `${r.file}: ${r.changedBlocks} changed blocks (${r.changedBytes} bytes) of ${r.scannedBytes} bytes scanned in ${r.seconds.toFixed(3)} s at ${r.blockSize}-byte blocks${r.consistent ? '' : ' (fuzzy: the file changed during the scan)'}`)
        process.exitCode = EXIT_OK
      } catch (err) { process.exitCode = printError(o, err) }
    })

  registerDiscover(program)
  registerFailover(program)
  registerDashboard(program)
  registerAlert(program)
  registerProgress(program)

  return program
}

export async function main (argv: string[]): Promise<void> {
  const program = buildProgram()
  try {
    await program.parseAsync(argv)
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? EXIT_OK : EXIT_USAGE
      return
    }
    process.exitCode = printError({}, err)
  }
}
