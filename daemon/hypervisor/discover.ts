/**
 * `vmesh discover` and `vmesh protect`: what the hypervisor has, and adding one of its VMs to
 * the config's `vms:`. The config is edited through yaml's Document API so comments and
 * layout survive, re-validated with the same schema as `start`, then replaced atomically.
 */
import { open, readFile, rm, stat } from 'node:fs/promises'
import { hostOs, renameDurable } from '../../common/platform/index.ts'
import { resolve } from 'node:path'
import { isSeq, parseDocument, YAMLSeq } from 'yaml'
import type { HypervisorDriver, OpOptions, VmInventory } from './driver.ts'
import { ConfigNotFoundError, ConfigParseError } from '../../config/errors.ts'
import { parseConfigText } from '../../config/load.ts'
import { VmAlreadyProtectedError, VmNotFoundError } from './errors.ts'

export interface DiscoveredVm extends VmInventory {
  /** Already listed under `vms:` in the config. */
  protected: boolean
}

/** The VMs the driver reports, sorted by name, marked when `protectedNames` lists them. */
export async function discover (driver: HypervisorDriver, opts: OpOptions & { protectedNames?: Iterable<string> } = {}): Promise<DiscoveredVm[]> {
  const names = new Set(opts.protectedNames ?? [])
  const vms = await driver.list(opts.signal !== undefined ? { signal: opts.signal } : {})
  return vms
    .map(v => ({ ...v, protected: names.has(v.name) }))
    .sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
}

export interface ProtectedVm { name: string, disks: string[], files: string[], replicateTo: string[] }

/**
 * Appends `{ name, disks, files, replicateTo: to }` for `vm` (found in `inventory`) to the
 * config's `vms:`. Refuses (file untouched) when the VM is unknown or already listed, or when
 * the result does not validate (unknown peer in `to`, a name the schema refuses, ...). With
 * `driver`, the hypervisor is told first never to start the VM by itself (Hyper-V
 * AutomaticStartAction Nothing): from now on only vmesh's ownership starts it; if that fails
 * the file stays untouched.
 */
export async function protectVm (configPath: string, vm: string, inventory: VmInventory[], to: string[], opts: { driver?: Pick<HypervisorDriver, 'preventAutoStart'> } = {}): Promise<{ config: string, vm: ProtectedVm }> {
  const file = resolve(configPath)
  const found = inventory.find(v => v.name === vm)
  if (found === undefined) throw new VmNotFoundError(vm, 'the hypervisor does not list it')
  let text: string
  try { text = await readFile(file, 'utf8') } catch (err) { throw new ConfigNotFoundError(file, { cause: err }) }
  const doc = parseDocument(text)
  if (doc.errors.length > 0) throw new ConfigParseError(file, doc.errors[0]?.linePos?.[0]?.line, doc.errors[0]?.message ?? 'parse error')
  let vms = doc.get('vms', true)
  if (!isSeq(vms)) {
    vms = new YAMLSeq()
    doc.set('vms', vms)
  }
  const seq = vms as YAMLSeq
  for (const item of seq.items) {
    const name = (item as { get?: (k: string) => unknown }).get?.('name')
    if (name === vm) throw new VmAlreadyProtectedError(vm)
  }
  seq.flow = false
  const entry: ProtectedVm = { name: vm, disks: [...found.disks], files: [...found.files], replicateTo: [...to] }
  const node = doc.createNode(entry)
  seq.add(node)
  const out = doc.toString({ lineWidth: 0 })
  parseConfigText(out, file) // refuses unknown peers, bad names, duplicate paths — file untouched
  await opts.driver?.preventAutoStart?.(vm)
  const tmp = `${file}.tmp-${process.pid}`
  try {
    const mode = (await stat(file)).mode & 0o777
    const fh = await open(tmp, 'w', mode)
    try { await fh.writeFile(out); await fh.sync() } finally { await fh.close() }
    await renameDurable(tmp, file, { os: hostOs })
  } catch (err) {
    await rm(tmp, { force: true })
    throw err
  }
  return { config: file, vm: entry }
}
