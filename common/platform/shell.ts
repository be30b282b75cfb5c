/**
 * The shell that runs the administrator's command templates (the `command` driver, fences):
 * `/bin/sh -c` on POSIX, `cmd.exe /d /s /c "..."` on Windows (what Node's own `shell: true`
 * does there: /d skips AutoRun, /s strips exactly the outer quotes, and the line is passed
 * verbatim so Node's MSVCRT-style quoting does not add backslashes cmd would keep).
 */
import type { OsKind } from './os.ts'
import { ShellQuoteError } from './errors.ts'

export interface ShellInvocation {
  argv: string[]
  /** Pass the arguments to CreateProcess as they are (Windows). */
  windowsVerbatimArguments: boolean
}

export function shellInvocation (command: string, os: OsKind, comspec = 'cmd.exe'): ShellInvocation {
  if (os === 'win32') return { argv: [comspec, '/d', '/s', '/c', `"${command}"`], windowsVerbatimArguments: true }
  return { argv: ['/bin/sh', '-c', command], windowsVerbatimArguments: false }
}

/**
 * One literal argument for a cmd.exe command line: double quotes around it. cmd has no escape
 * for `"` inside quotes and expands `%VAR%` even there, so values holding `"`, `%`, a line
 * break or NUL are refused (VM names and Windows paths never need them; the same values are
 * in the VMESH_* environment variables for scripts that want them unparsed). A trailing run of
 * backslashes is doubled so a program parsing its command line MSVCRT-style does not read
 * `\"` as an escaped quote (`"C:\vms\\"` → `C:\vms\`).
 */
export function cmdQuote (s: string): string {
  const bad = /["%\r\n\0]/.exec(s)
  if (bad !== null) throw new ShellQuoteError(`${JSON.stringify(s.slice(0, 200))}: ${JSON.stringify(bad[0])} cannot be passed to cmd.exe as a literal`)
  const trailing = /\\+$/.exec(s)?.[0] ?? ''
  return `"${s}${trailing}"`
}
