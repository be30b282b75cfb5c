/**
 * `vmesh peer add`: appends a peer to mesh.peers through yaml's Document API so the
 * administrator's comments and layout survive; the edited text is validated with the same
 * schema as `start` before it replaces the file (atomically).
 */
import { readFile, writeFile } from 'node:fs/promises'
import { hostOs, renameDurable } from '../../../common/platform/index.ts'
import { resolve } from 'node:path'
import { parseDocument, isSeq, YAMLSeq, YAMLMap } from 'yaml'
import { ConfigNotFoundError, ConfigParseError } from '../../../config/errors.ts'
import { parseConfigText } from '../../../config/load.ts'
import { UsageError } from '../output.ts'

export interface PeerAddOptions { config: string, name: string, id: string, addr: string[], role?: string }

export async function runPeerAdd (o: PeerAddOptions): Promise<{ config: string, peer: { name: string, id: string, addrs: string[], role: string } }> {
  const file = resolve(o.config)
  let text: string
  try { text = await readFile(file, 'utf8') } catch (err) { throw new ConfigNotFoundError(file, { cause: err }) }
  const role = o.role ?? 'host'
  if (role !== 'host' && role !== 'witness') throw new UsageError(`--role must be host or witness, not "${role}"`)
  const doc = parseDocument(text)
  if (doc.errors.length > 0) throw new ConfigParseError(file, doc.errors[0]?.linePos?.[0]?.line, doc.errors[0]?.message ?? 'parse error')
  let peers = doc.getIn(['mesh', 'peers'], true)
  if (!isSeq(peers)) {
    peers = new YAMLSeq()
    if (doc.getIn(['mesh']) === undefined) doc.set('mesh', new YAMLMap())
    doc.setIn(['mesh', 'peers'], peers)
  }
  const seq = peers as YAMLSeq
  seq.flow = false
  const entry: Record<string, unknown> = { name: o.name, id: o.id, addrs: o.addr }
  if (role === 'witness') entry.role = 'witness'
  seq.add(doc.createNode(entry))
  const out = doc.toString({ lineWidth: 0 })
  parseConfigText(out, file) // refuses duplicates, bad IDs, bad addresses — file untouched
  const tmp = `${file}.tmp-${process.pid}`
  await writeFile(tmp, out)
  await renameDurable(tmp, file, { os: hostOs })
  return { config: file, peer: { name: o.name, id: o.id, addrs: o.addr, role } }
}
