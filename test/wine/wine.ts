/**
 * The Windows tier's harness: Windows Node 20 (node.exe from the npm registry) run by Wine on
 * this Linux machine, on the stage that .ci/wine-setup.sh prepared (compiled JavaScript and the
 * win32-x64 dependencies). Paths cross as `Z:\...`; a Windows process's stdout goes to a file
 * (a pipe from Linux gives it EBADF).
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'

export const WINE = '/usr/lib/wine/wine64'
export const WINE_DIR = process.env.VMESH_WINE_DIR ?? '/tmp/vmesh-wine'
export const STAGE = join(WINE_DIR, 'stage')
export const NODE_EXE = join(WINE_DIR, 'deps', 'node.exe')

/** Why the Windows tier cannot run here, or undefined when it can. */
export function wineMissing (): string | undefined {
  if (!existsSync(WINE)) return `${WINE} not installed (apt-get install wine64; .ci/wine-setup.sh does it)`
  if (!existsSync(NODE_EXE) || !existsSync(join(STAGE, 'vmesh.mjs'))) return `no Windows stage in ${WINE_DIR}: run .ci/wine-setup.sh first`
  return undefined
}

/** A Linux path as Windows processes under Wine see it. */
export function winPath (p: string): string { return 'Z:' + p.replace(/\//g, '\\') }

export function wineEnv (): NodeJS.ProcessEnv {
  return {
    ...process.env,
    WINEPREFIX: join(WINE_DIR, 'prefix'),
    WINEDEBUG: '-all',
    // Wine's icacls is a stub: the ACL stand-in keeps and prints ACLs the way icacls does
    VMESH_ICACLS: winPath(join(STAGE, 'test', 'wine', 'fake-icacls.mjs'))
  }
}

/**
 * sh -c argv that runs `node.exe args...` under Wine (this tier's prefix and environment, so it
 * works from any parent's environment) with stdout and stderr appended to `logPath`.
 */
export function wineNodeArgv (args: string[], logPath: string): string[] {
  const q = (s: string): string => `'${s.replace(/'/g, "'\\''")}'`
  const env = wineEnv()
  const vars = ['WINEPREFIX', 'WINEDEBUG', 'VMESH_ICACLS'].map(k => `${k}=${q(env[k] as string)}`).join(' ')
  return ['/bin/sh', '-c', `exec env ${vars} ${q(WINE)} ${q(NODE_EXE)} ${args.map(q).join(' ')} >> ${q(logPath)} 2>&1`]
}
