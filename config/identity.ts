/**
 * The node identity (Ed25519, libp2p protobuf encoding) and the optional mesh PSK. Both are
 * secrets: written mode 0600 and refused when readable by group or others, as ssh does.
 */
import { readFile, writeFile, stat } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey, PeerId } from '@libp2p/interface'
import { VmeshError } from '../common/errors.ts'

export class KeyFileError extends VmeshError {
  constructor (readonly keyFile: string, detail: string, options?: { cause?: unknown }) {
    super('ERR_KEY_FILE', `${keyFile}: ${detail}`, options)
  }
}

export class FileExistsError extends VmeshError {
  constructor (readonly path: string) {
    super('ERR_FILE_EXISTS', `${path} already exists; refusing to overwrite`)
  }
}

async function readSecret (path: string): Promise<Buffer> {
  let st
  try { st = await stat(path) } catch (err) { throw new KeyFileError(path, 'missing or unreadable', { cause: err }) }
  if (!st.isFile()) throw new KeyFileError(path, 'not a regular file')
  if ((st.mode & 0o077) !== 0) throw new KeyFileError(path, `permissions ${(st.mode & 0o777).toString(8)} are too open; run chmod 600`)
  try { return await readFile(path) } catch (err) { throw new KeyFileError(path, 'unreadable', { cause: err }) }
}

export async function loadIdentity (path: string): Promise<{ privateKey: PrivateKey, peerId: PeerId }> {
  const bytes = await readSecret(path)
  let privateKey: PrivateKey
  try { privateKey = privateKeyFromProtobuf(bytes) } catch (err) { throw new KeyFileError(path, 'not a libp2p private key', { cause: err }) }
  if (privateKey.type !== 'Ed25519') throw new KeyFileError(path, `key type ${privateKey.type}; vmesh uses Ed25519`)
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey) }
}

/** Creates a new Ed25519 identity at `path` (mode 0600); never overwrites. */
export async function createIdentity (path: string): Promise<{ privateKey: PrivateKey, peerId: PeerId }> {
  const privateKey = await generateKeyPair('Ed25519')
  try {
    await writeFile(path, privateKeyToProtobuf(privateKey), { mode: 0o600, flag: 'wx' })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new FileExistsError(path)
    throw err
  }
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey) }
}

const PSK_RE = /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n([0-9a-fA-F]{64})\s*$/

/** Reads a libp2p pnet key file ("/key/swarm/psk/1.0.0/", "/base16/", 64 hex digits). */
export async function loadPsk (path: string): Promise<Uint8Array> {
  const bytes = await readSecret(path)
  if (!PSK_RE.test(bytes.toString('utf8'))) throw new KeyFileError(path, 'not a libp2p PSK file (expected /key/swarm/psk/1.0.0/, /base16/, 64 hex digits)')
  return new Uint8Array(bytes)
}

/** Writes a new random PSK file (mode 0600); never overwrites. */
export async function createPsk (path: string): Promise<void> {
  const text = `/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString('hex')}\n`
  try {
    await writeFile(path, text, { mode: 0o600, flag: 'wx' })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new FileExistsError(path)
    throw err
  }
}
