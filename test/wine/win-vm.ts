/**
 * The Windows-side stand-in VM for the failover test under Wine: vm.cmd, run by cmd.exe (the
 * `command` driver's shell on Windows, and the watchdog's fence), with fake-vm.mjs on Windows
 * Node doing the start and the stop (see that file for the VM's locks and its events log).
 */
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { instances, overlaps, type Instance } from '../../daemon/cluster/fake-vm.ts'
import { NODE_EXE, winPath } from './wine.ts'

/**
 * `status` stays in cmd.exe (it runs every 2 s per running VM; a node.exe start costs seconds
 * under Wine). It asks whether the VM holds VM.NODE.lock: a file open without delete sharing
 * cannot be renamed, even onto itself. Wine's cmd sets no errorlevel when a redirection fails,
 * and its `a && b || c` runs both b and c, so neither `type nul >> lock` nor `&&`/`||` can be the probe.
 */
export function vmCmd (nodeExe: string): string {
  return [
    '@echo off',
    'rem vm.cmd start|stop|status NODE VM [EPOCH]: exit 0 = done (status: running), 1 = not (status: off)',
    'setlocal',
    'if /i "%~1"=="status" goto status',
    `"${nodeExe}" "%~dp0fake-vm.mjs" %*`,
    'exit /b %ERRORLEVEL%',
    ':status',
    'if not exist "%~dp0%~3.%~2.lock" exit /b 1',
    'move /y "%~dp0%~3.%~2.lock" "%~dp0%~3.%~2.lock" >nul 2>nul',
    'if errorlevel 1 exit /b 0',
    'exit /b 1',
    ''
  ].join('\r\n')
}

/** Writes vm.cmd and fake-vm.mjs into `dir` (created) with an empty events log; returns vm.cmd's Windows path. */
export async function installWinVm (dir: string): Promise<string> {
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'vm.cmd'), vmCmd(winPath(NODE_EXE)))
  await copyFile(fileURLToPath(new URL('./fake-vm.mjs', import.meta.url)), join(dir, 'fake-vm.mjs'))
  await writeFile(join(dir, 'events.log'), '')
  return winPath(join(dir, 'vm.cmd'))
}

/** The `hypervisor:` section of a Windows node whose VMs are vm.cmd's. */
export function winVmHypervisor (cmdPath: string, node: string): Record<string, unknown> {
  const c = `"${cmdPath}"`
  return { driver: 'command', command: { start: `${c} start ${node} {vm} {epoch}`, stop: `${c} stop ${node} {vm}`, status: `${c} status ${node} {vm}`, timeout: '30s' } }
}

export interface WinVmEvents { list: Instance[], overlapping: Array<[Instance, Instance]>, conflicts: string[], lines: string[] }

/** `vm`'s instances from the events log, the overlapping pairs, and the refused second starts. */
export async function winVmEvents (dir: string, vm: string): Promise<WinVmEvents> {
  const lines = (await readFile(join(dir, 'events.log'), 'utf8')).split('\n').filter(Boolean)
  const list = (await instances(dir)).filter(i => i.vm === vm)
  return { list, overlapping: overlaps(list), conflicts: lines.filter(l => l.split(' ')[1] === 'conflict' && l.split(' ')[3] === vm), lines }
}

/**
 * The argv (after the executable) of the stop command WinSW runs for a service, from its XML:
 * `<stoparguments>` + " " + `<arguments>` (WinSW appends `<arguments>` to the stop arguments
 * whatever they are: start arguments belong in `<startarguments>`), with `replace`'s paths
 * substituted, split as a Windows command line (double quotes group, no escapes needed here).
 */
export function winswStopArgv (xml: string, replace: Record<string, string>): string[] {
  const tag = (t: string): string | undefined => new RegExp(`<${t}>([\\s\\S]*?)</${t}>`).exec(xml.replace(/<!--[\s\S]*?-->/g, ''))?.[1]
  const stop = tag('stoparguments')
  if (stop === undefined) throw new Error('no <stoparguments>: WinSW would kill the daemon\'s process tree, the watchdog included')
  let line = `${stop} ${tag('arguments') ?? ''}`.replace(/\s*[\r\n]+\s*/g, ' ').trim()
  for (const [from, to] of Object.entries(replace)) line = line.split(from).join(to)
  return [...line.matchAll(/"([^"]*)"|(\S+)/g)].map(m => m[1] ?? m[2] ?? '')
}
