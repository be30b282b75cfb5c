/**
 * A "VM" for the demo and the failover tests, driven through the `command` hypervisor driver: a `sleep` process
 * per (node, vm) with a pid file, and an events log every node appends to. From the log (plus
 * the kills a test performs) a test rebuilds each instance's running interval and checks that
 * no two overlap.
 */
import { writeFile, readFile, chmod, readdir } from 'node:fs/promises'
import { join } from 'node:path'

/**
 * The driver script: `start` runs `process` (a shell command line put in the background) once per
 * (node, vm) and logs it, `stop` kills it, `status` asks whether it lives; `prelude` runs first.
 * The soak's VMs use it with a writer process (test/helpers/soak/vm.ts).
 */
export function fakeVmScript (process: string, prelude = ''): string {
  return `#!/bin/sh
${prelude}action=$1; node=$2; vm=$3; epoch=$4
dir=$(dirname "$0")
pidf="$dir/$vm.$node.pid"
now() { date +%s%3N; }
case "$action" in
  start)
    if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then exit 0; fi
    ${process} &
    echo $! > "$pidf"
    echo "$(now) start $node $vm $epoch" >> "$dir/events.log" ;;
  stop)
    if [ -f "$pidf" ]; then kill -9 "$(cat "$pidf")" 2>/dev/null; rm -f "$pidf"; fi
    echo "$(now) stop $node $vm" >> "$dir/events.log" ;;
  status)
    [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null ;;
  *) exit 2 ;;
esac
`
}

export const VM_SCRIPT = fakeVmScript('setsid sleep 100000 >/dev/null 2>&1 < /dev/null')

export async function installFakeVm (dir: string): Promise<string> {
  const script = join(dir, 'vm.sh')
  await writeFile(script, VM_SCRIPT)
  await chmod(script, 0o755)
  await writeFile(join(dir, 'events.log'), '')
  return script
}

/** The `hypervisor:` config section for `node`. */
export function fakeVmHypervisor (script: string, node: string): Record<string, unknown> {
  return { driver: 'command', command: { start: `${script} start ${node} {vm} {epoch}`, stop: `${script} stop ${node} {vm}`, status: `${script} status ${node} {vm}`, timeout: '10s' } }
}

/** Kills a node's VM process (a host crash takes the VM with it) and logs it like a stop. */
export async function crashVm (dir: string, node: string, vm: string): Promise<void> {
  const pidf = join(dir, `${vm}.${node}.pid`)
  try {
    const pid = Number((await readFile(pidf, 'utf8')).trim())
    process.kill(pid, 'SIGKILL')
  } catch {}
  await writeFile(join(dir, 'events.log'), `${Date.now()} stop ${node} ${vm}\n`, { flag: 'a' })
}

export interface Instance { node: string, vm: string, epoch: number, from: number, to: number }

export async function instances (dir: string, untilMs = Date.now()): Promise<Instance[]> {
  const lines = (await readFile(join(dir, 'events.log'), 'utf8')).split('\n').filter(Boolean)
  const open = new Map<string, Instance>()
  const done: Instance[] = []
  for (const l of lines) {
    const [t, action, node, vm, epoch] = l.split(' ')
    const key = `${node}/${vm}`
    if (action === 'start' && !open.has(key)) open.set(key, { node: node as string, vm: vm as string, epoch: Number(epoch), from: Number(t), to: Infinity })
    if (action === 'stop') { const i = open.get(key); if (i !== undefined) { i.to = Number(t); done.push(i); open.delete(key) } }
  }
  for (const i of open.values()) done.push({ ...i, to: Math.max(untilMs, i.from) === untilMs ? Infinity : i.to })
  return done
}

/** Pairs of instances of the same VM on different nodes whose intervals overlap. */
export function overlaps (list: Instance[]): Array<[Instance, Instance]> {
  const out: Array<[Instance, Instance]> = []
  for (let i = 0; i < list.length; i++) {
    for (let j = i + 1; j < list.length; j++) {
      const a = list[i] as Instance; const b = list[j] as Instance
      if (a.vm === b.vm && a.node !== b.node && a.from < b.to && b.from < a.to) out.push([a, b])
    }
  }
  return out
}

/** Kills every stand-in VM process started from `dir` (cleanup: they outlive their daemons). */
export async function killAllVms (dir: string): Promise<void> {
  let names: string[] = []
  try { names = await readdir(dir) } catch { return }
  for (const n of names.filter(x => x.endsWith('.pid'))) {
    try { process.kill(Number((await readFile(join(dir, n), 'utf8')).trim()), 'SIGKILL') } catch {}
  }
}
