/**
 * Quoting for the two shells vmesh hands strings to. Every value that came from a config, a
 * VM name or a path is quoted as a literal; nothing is ever interpolated unquoted.
 */
import { HypervisorConfigError } from './errors.ts'
import { cmdQuote as platformCmdQuote, type OsKind } from '../../common/platform/index.ts'

/** A POSIX sh literal: single quotes, with embedded ones as '\''. */
export function shQuote (s: string): string {
  if (s.includes('\0')) throw new HypervisorConfigError('a NUL byte cannot be passed to a shell')
  return `'${s.replace(/'/g, "'\\''")}'`
}

/** A cmd.exe literal (common/platform/shell.ts), refusals as HypervisorConfigError. */
export function cmdQuote (s: string): string {
  try { return platformCmdQuote(s) } catch (err) { throw new HypervisorConfigError((err as Error).message) }
}

/** The quoting of the shell command templates run by on `os` (/bin/sh or cmd.exe). */
export function templateQuote (os: OsKind): (s: string) => string {
  return os === 'win32' ? cmdQuote : shQuote
}

/**
 * A PowerShell single-quoted literal. PowerShell also treats the typographic quotes
 * U+2018..U+201B as single quotes, so each of those is doubled as well.
 */
export function psQuote (s: string): string {
  if (s.includes('\0')) throw new HypervisorConfigError('a NUL byte cannot be passed to PowerShell')
  return `'${s.replace(/['\u2018\u2019\u201a\u201b]/g, c => c + c)}'`
}

export type Placeholder = 'vm' | 'epoch' | 'files' | 'dir' | 'test'
const PLACEHOLDER = /\{(vm|epoch|files|dir|test)\}/g

/** The placeholders a template uses. */
export function placeholdersIn (template: string): Set<Placeholder> {
  const out = new Set<Placeholder>()
  for (const m of template.matchAll(PLACEHOLDER)) out.add(m[1] as Placeholder)
  return out
}

/**
 * Substitutes `{vm}` `{epoch}` `{dir}` (each one value quoted by `quote`: /bin/sh by default,
 * `cmdQuote` for cmd.exe), `{files}` (space-separated, each quoted) and `{test}` (`'1'` for an isolated test instance, `'0'` otherwise). Other braces
 * are left alone so shell syntax like `${HOME}` or awk programs survive; write placeholders
 * bare, not inside your own quotes.
 */
export function fillTemplate (template: string, values: { vm: string, epoch?: number, files?: string[], dir?: string, test?: boolean }, quote: (s: string) => string = shQuote): string {
  const shQuote = quote
  return template.replace(PLACEHOLDER, (_m, key: Placeholder) => {
    switch (key) {
      case 'vm': return shQuote(values.vm)
      case 'epoch':
        if (values.epoch === undefined) throw new HypervisorConfigError('{epoch} is only available in the start command')
        return shQuote(String(values.epoch))
      case 'dir':
        if (values.dir === undefined) throw new HypervisorConfigError('{dir} is only available in the start command')
        return shQuote(values.dir)
      case 'files':
        if (values.files === undefined) throw new HypervisorConfigError('{files} is only available in the start command')
        return values.files.map(shQuote).join(' ')
      case 'test': return shQuote(values.test === true ? '1' : '0')
    }
  })
}
