/**
 * The soak's VMs: the `command` driver's stand-in (daemon/cluster/fake-vm.ts, same events log and
 * pid files, so its `instances`/`overlaps`/`crashVm`/`killAllVms` apply) whose process is a
 * writer (writer.mjs) on the disk file vmesh starts it from. The script drops libfaketime from
 * its environment: the events log's times are the real clock even on a host whose wall clock
 * the nemesis moved.
 */
import { writeFile, chmod, copyFile } from 'node:fs/promises'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { fakeVmScript } from '../../../daemon/cluster/fake-vm.ts'

const WRITER = join(dirname(fileURLToPath(import.meta.url)), 'writer.mjs')

export function soakVmScript (nodePath: string, writer: string): string {
  return fakeVmScript(
    `setsid '${nodePath}' '${writer}' "$vm" "$node" "$epoch" "$dir/states-$vm.log" "$5" >>"$dir/writer-$vm.log" 2>&1 < /dev/null`,
    'unset LD_PRELOAD FAKETIME_TIMESTAMP_FILE FAKETIME_DONT_FAKE_MONOTONIC FAKETIME_CACHE_DURATION\n')
}

/** Writes vm.sh (and a copy of the writer) into `dir`, with an empty events log. Returns the script. */
export async function installSoakVm (dir: string): Promise<string> {
  const writer = join(dir, 'writer.mjs')
  await copyFile(WRITER, writer)
  const script = join(dir, 'vm.sh')
  await writeFile(script, soakVmScript(process.execPath, writer))
  await chmod(script, 0o755)
  await writeFile(join(dir, 'events.log'), '')
  return script
}

/** The `hypervisor:` section for `node`: the start gets the files to run from. */
export function soakHypervisor (script: string, node: string): Record<string, unknown> {
  return { driver: 'command', command: { start: `${script} start ${node} {vm} {epoch} {files}`, stop: `${script} stop ${node} {vm}`, status: `${script} status ${node} {vm}`, timeout: '10s' } }
}
