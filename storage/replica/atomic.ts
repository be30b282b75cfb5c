/**
 * Small JSON documents replaced atomically: write `name.tmp`, fsync it, rename over `name`,
 * fsync the directory. A reader sees the old or the new document, never a mixture. The first
 * line is the BLAKE3-128 of the body, so a damaged file is detected instead of misread.
 */
import { blake3 } from '../../common/blake3.ts'
import { join } from 'node:path'
import type { ReplicaFs } from './fs.ts'
import { ReplicaStateCorruptError } from './errors.ts'

const MAX_DOC_BYTES = 256 * 1024 * 1024

function digest (body: string): string {
  return Buffer.from(blake3(Buffer.from(body, 'utf8'), 16)).toString('hex')
}

/**
 * Thrown when the failure came at or after the rename: the old or the new document may be the
 * durable one. (Any other error from writeJsonAtomic means the old document is still in place.)
 */
export class SwitchUncertainError extends Error {
  constructor (cause: unknown) { super('atomic replace interrupted at the switch', { cause }); this.name = 'SwitchUncertainError' }
}

export async function writeJsonAtomic (fs: ReplicaFs, dir: string, name: string, value: unknown, fsync: boolean): Promise<void> {
  const body = JSON.stringify(value)
  const bytes = Buffer.from(`${digest(body)}\n${body}`, 'utf8')
  const tmp = join(dir, `${name}.tmp`)
  const fh = await fs.open(tmp, 'create')
  try {
    await fh.write(bytes, 0, bytes.length, 0)
    if (fsync) await fh.sync()
  } finally {
    await fh.close()
  }
  try {
    await fs.rename(tmp, join(dir, name))
    if (fsync) await fs.syncDir(dir)
  } catch (err) {
    throw new SwitchUncertainError(err)
  }
}

/** The parsed document, or undefined when the file does not exist. */
export async function readJsonChecked (fs: ReplicaFs, dir: string, name: string): Promise<unknown> {
  const path = join(dir, name)
  const st = await fs.stat(path)
  if (st === undefined) return undefined
  if (st.size > MAX_DOC_BYTES) throw new ReplicaStateCorruptError(`${path}: ${st.size} bytes is over the limit`)
  const fh = await fs.open(path, 'read')
  let text: string
  try {
    const buf = Buffer.alloc(st.size)
    const n = await fh.read(buf, 0, st.size, 0)
    text = buf.toString('utf8', 0, n)
  } finally {
    await fh.close()
  }
  const nl = text.indexOf('\n')
  if (nl < 0) throw new ReplicaStateCorruptError(`${path}: no checksum line`)
  const body = text.slice(nl + 1)
  if (digest(body) !== text.slice(0, nl)) throw new ReplicaStateCorruptError(`${path}: checksum mismatch`)
  try {
    return JSON.parse(body)
  } catch (err) {
    throw new ReplicaStateCorruptError(`${path}: not JSON`, { cause: err })
  }
}
