/**
 * The node identity (Ed25519, libp2p protobuf encoding) and the optional mesh PSK. Both are
 * secrets: written readable by the owner only and refused when others can read them, as ssh
 * does — mode bits on POSIX, the file's ACL on Windows (common/platform/secret.ts).
 */
import { readFile, stat } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey, PeerId } from '@libp2p/interface'
import { VmeshError } from '../common/errors.ts'
import { hostOs, secretFileProblem, writeSecretFile, type SecretOptions } from '../common/platform/index.ts'

const HOST_SECRETS: SecretOptions = { os: hostOs }

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

async function readSecret (path: string, o: SecretOptions): Promise<Buffer> {
  let st
  try { st = await stat(path) } catch (err) { throw new KeyFileError(path, 'missing or unreadable', { cause: err }) }
  if (!st.isFile()) throw new KeyFileError(path, 'not a regular file')
  let problem: string | null
  try { problem = await secretFileProblem(path, { ...o, mode: st.mode }) } catch (err) { throw new KeyFileError(path, (err as Error).message, { cause: err }) }
  if (problem !== null) throw new KeyFileError(path, problem)
  try { return await readFile(path) } catch (err) { throw new KeyFileError(path, 'unreadable', { cause: err }) }
}

export async function loadIdentity (path: string, o: SecretOptions = HOST_SECRETS): Promise<{ privateKey: PrivateKey, peerId: PeerId }> {
  const bytes = await readSecret(path, o)
  let privateKey: PrivateKey
  try { privateKey = privateKeyFromProtobuf(bytes) } catch (err) { throw new KeyFileError(path, 'not a libp2p private key', { cause: err }) }
  if (privateKey.type !== 'Ed25519') throw new KeyFileError(path, `key type ${privateKey.type}; vmesh uses Ed25519`)
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey) }
}

/** Creates a new Ed25519 identity at `path` (mode 0600); never overwrites. */
export async function createIdentity (path: string, o: SecretOptions = HOST_SECRETS): Promise<{ privateKey: PrivateKey, peerId: PeerId }> {
  const privateKey = await generateKeyPair('Ed25519')
  try {
    await writeSecretFile(path, privateKeyToProtobuf(privateKey), { ...o, exclusive: true })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new FileExistsError(path)
    throw err
  }
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey) }
}

/** A secret text file (alert sinks' shared secret, SMTP password), checked like the key files. */
export async function readSecretText (path: string, o: SecretOptions = HOST_SECRETS): Promise<string> {
  return (await readSecret(path, o)).toString('utf8')
}

const PSK_RE = /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n([0-9a-fA-F]{64})\s*$/

/** Reads a libp2p pnet key file ("/key/swarm/psk/1.0.0/", "/base16/", 64 hex digits). */
export async function loadPsk (path: string, o: SecretOptions = HOST_SECRETS): Promise<Uint8Array> {
  const bytes = await readSecret(path, o)
  if (!PSK_RE.test(bytes.toString('utf8'))) throw new KeyFileError(path, 'not a libp2p PSK file (expected /key/swarm/psk/1.0.0/, /base16/, 64 hex digits)')
  return new Uint8Array(bytes)
}

/** Writes a new random PSK file (mode 0600); never overwrites. */
export async function createPsk (path: string, o: SecretOptions = HOST_SECRETS): Promise<void> {
  const text = `/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString('hex')}\n`
  try {
    await writeSecretFile(path, text, { ...o, exclusive: true })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new FileExistsError(path)
    throw err
  }
}
