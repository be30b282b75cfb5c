/**
 * `vmesh init`: a new identity and a starter config in DIR. Never overwrites either file: an
 * identity is the node's name in everyone else's allowlist, so losing it is an outage.
 */
import { mkdir, writeFile, access } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { createIdentity, FileExistsError } from '../../../config/identity.ts'
import { parseHostPort } from '../../../config/schema.ts'
import { UsageError } from '../output.ts'
import { NODE_NAME_RE } from '../../../common/names.ts'

export interface InitOptions { dir: string, name: string, listen?: string[], api?: string, role?: string }

export interface InitResult { name: string, peerId: string, role: string, addresses: string[], listen: string[], api: string, config: string, identity: string }

export function starterConfig (o: { name: string, listen: string[], api: string, role: string }): string {
  return `# vmesh configuration for ${o.name}. Paths are relative to this file's folder.
# Reference: README.md ("Configuration").
node:
  name: ${o.name}                  # unique in the mesh
  identity: identity.key           # Ed25519 private key (mode 0600), made by \`vmesh init\`
  listen: [${o.listen.map(l => JSON.stringify(l)).join(', ')}]
  dataDir: data                    # metadata (LevelDB), replicas, journals
  api: "${o.api}"                  # local control API (status, commands, /metrics)
  role: ${o.role}                        # host | witness (votes and watches, holds no VMs)
mesh:
  profile: lan                     # lan | wan: failure-detection timings
  # psk: mesh.psk                  # optional private mesh (\`vmesh psk --out mesh.psk\`)
  peers: []                        # add with: vmesh peer add --name N --id ID --addr ADDR
# hypervisor:
#   driver: command                # hyperv | libvirt | qemu | command
#   command:
#     start: "./start-vm.sh {vm} {epoch} {dir}"
#     stop: "./stop-vm.sh {vm}"
#     status: "./vm-status.sh {vm}"
vms: []
# bandwidth:
#   limit: 100Mbit
`
}

async function exists (p: string): Promise<boolean> { try { await access(p); return true } catch { return false } }

export async function runInit (o: InitOptions): Promise<InitResult> {
  if (!NODE_NAME_RE.test(o.name)) throw new UsageError(`--name "${o.name}": use 1-63 letters, digits, ".", "_" or "-"`)
  const role = o.role ?? 'host'
  if (role !== 'host' && role !== 'witness') throw new UsageError(`--role must be host or witness, not "${role}"`)
  const listen = o.listen !== undefined && o.listen.length > 0 ? o.listen : ['/ip4/0.0.0.0/tcp/7400']
  for (const l of listen) { try { multiaddr(l) } catch { throw new UsageError(`--listen "${l}" is not a multiaddr`) } }
  const api = o.api ?? '127.0.0.1:7401'
  if (parseHostPort(api) === undefined) throw new UsageError(`--api "${api}" is not HOST:PORT`)
  const dir = resolve(o.dir)
  await mkdir(dir, { recursive: true })
  const configPath = join(dir, 'vmesh.yaml')
  const identityPath = join(dir, 'identity.key')
  if (await exists(configPath)) throw new FileExistsError(configPath)
  if (await exists(identityPath)) throw new FileExistsError(identityPath)
  const { peerId } = await createIdentity(identityPath)
  try {
    await writeFile(configPath, starterConfig({ name: o.name, listen, api, role }), { flag: 'wx', mode: 0o644 })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new FileExistsError(configPath)
    throw err
  }
  const id = peerId.toString()
  return { name: o.name, peerId: id, role, addresses: listen.map(l => `${l}/p2p/${id}`), listen, api, config: configPath, identity: identityPath }
}
