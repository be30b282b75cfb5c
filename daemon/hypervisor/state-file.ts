/**
 * Small JSON state documents (highest epochs, qemu runtime paths) replaced atomically:
 * write a temp file, fsync, rename over the old one, fsync the folder. A crash leaves the old
 * or the new document, never a torn one; a document that does not parse is an error, never
 * silently "empty" (forgetting an epoch would let a stale start through).
 */
import { mkdir, open, readFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { HypervisorStateError } from './errors.ts'
import { hostOs, renameDurable, syncDir } from '../../common/platform/index.ts'

const MAX_STATE_BYTES = 4 * 1024 * 1024

/** The parsed document, or undefined when the file does not exist. */
export async function readState (file: string): Promise<unknown> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new HypervisorStateError(file, 'cannot read', { cause: err })
  }
  if (text.length > MAX_STATE_BYTES) throw new HypervisorStateError(file, 'too large')
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new HypervisorStateError(file, 'not valid JSON', { cause: err })
  }
}

export async function writeState (file: string, value: unknown): Promise<void> {
  const dir = dirname(file)
  await mkdir(dir, { recursive: true })
  const tmp = `${file}.tmp-${process.pid}`
  const fh = await open(tmp, 'w', 0o600)
  try {
    await fh.writeFile(`${JSON.stringify(value, null, 2)}\n`)
    await fh.sync()
  } finally {
    await fh.close()
  }
  await renameDurable(tmp, file, { os: hostOs })
  await syncDir(dir, { os: hostOs })
}
