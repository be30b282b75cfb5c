/**
 * Secret files (identity.key, mesh.psk, api.token): created readable by their owner only, and
 * refused at load when others can read them, as ssh does.
 *
 * POSIX: mode 0600 at creation; the check reads the mode bits (group/other bits → refused).
 * Windows: mode bits mean nothing there (every file stats as 0666), so the file gets an ACL of
 * owner, SYSTEM and Administrators with inheritance removed (`icacls`), and the check reads
 * that ACL back (icacls.ts) instead of the mode.
 */
import { execFile } from 'node:child_process'
import { stat, writeFile } from 'node:fs/promises'
import { userInfo } from 'node:os'
import type { OsKind } from './os.ts'
import { AclError } from './errors.ts'
import { aclProblem, icaclsProtectArgs, parseIcacls } from './icacls.ts'

export type IcaclsRunner = (args: string[]) => Promise<{ code: number | null, stdout: string, stderr: string }>

export interface SecretOptions {
  os: OsKind
  /** Runs icacls (Windows). @default the `icacls` program, or the one VMESH_ICACLS names */
  icacls?: IcaclsRunner
  /** The account that owns the secrets (Windows), as `DOMAIN\user`. @default the current user */
  owner?: string
}

/**
 * The real icacls. `VMESH_ICACLS` may name another program with the same interface (a `.js`
 * or `.mjs` file runs under this Node) — used where icacls is a stub, as under Wine.
 */
export const systemIcacls: IcaclsRunner = async (args) => {
  const alt = process.env.VMESH_ICACLS
  const [file, argv] = alt === undefined || alt === ''
    ? ['icacls', args]
    : /\.m?js$/i.test(alt) ? [process.execPath, [alt, ...args]] : [alt, args]
  return await new Promise((resolve) => {
    execFile(file, argv, { windowsHide: true, timeout: 30_000, maxBuffer: 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err == null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null
      resolve({ code, stdout: String(stdout), stderr: String(stderr) || (err != null && code === null ? err.message : '') })
    })
  })
}

export function currentOwner (): string {
  const user = userInfo().username
  const domain = process.env.USERDOMAIN
  return domain !== undefined && domain !== '' ? `${domain}\\${user}` : user
}

/** Restricts an existing file to its owner, SYSTEM and Administrators (Windows; no-op on POSIX, where the mode did it). */
export async function protectSecretFile (path: string, o: SecretOptions): Promise<void> {
  if (o.os !== 'win32') return
  const run = o.icacls ?? systemIcacls
  const r = await run(icaclsProtectArgs(path, o.owner ?? currentOwner()))
  if (r.code !== 0) throw new AclError(path, `icacls could not set the ACL (exit ${r.code}): ${r.stderr.trim().slice(0, 500)}`)
}

/** Writes a new secret file (mode 0600; on Windows then its ACL). `exclusive`: fail with EEXIST instead of replacing. */
export async function writeSecretFile (path: string, data: string | Uint8Array, o: SecretOptions & { exclusive: boolean }): Promise<void> {
  await writeFile(path, data, { mode: 0o600, flag: o.exclusive ? 'wx' : 'w' })
  await protectSecretFile(path, o)
}

/**
 * Null when `path` is readable by its owner only (as above); otherwise why it is not.
 * Throws when the ACL cannot be read at all (AclError).
 */
export async function secretFileProblem (path: string, o: SecretOptions & { mode?: number }): Promise<string | null> {
  if (o.os !== 'win32') {
    const mode = o.mode ?? (await stat(path)).mode
    return (mode & 0o077) !== 0 ? `permissions ${(mode & 0o777).toString(8)} are too open; run chmod 600` : null
  }
  const run = o.icacls ?? systemIcacls
  const r = await run([path])
  if (r.code !== 0) throw new AclError(path, `icacls could not read the ACL (exit ${r.code}): ${r.stderr.trim().slice(0, 500)}`)
  const problem = aclProblem(parseIcacls(r.stdout, path), o.owner ?? currentOwner())
  return problem === null ? null : `${problem}; run: icacls "${path}" ${icaclsProtectArgs(path, o.owner ?? currentOwner()).slice(1).join(' ')}`
}
