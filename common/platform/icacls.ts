/**
 * Reading and judging a Windows ACL as `icacls FILE` prints it:
 *
 *   C:\vmesh\identity.key NT AUTHORITY\SYSTEM:(F)
 *                         BUILTIN\Administrators:(F)
 *                         HV-A\admin:(F)
 *
 *   Successfully processed 1 files; Failed processing 0 files
 *
 * Each entry is `PRINCIPAL:(flag)(flag)...(rights)`; `(I)` marks an inherited entry, `(DENY)`
 * a deny entry, `(OI)(CI)(IO)(NP)` inheritance flags. Principal names are as icacls prints
 * them (English names for the well-known groups; a SID as `*S-1-...` when it has no name).
 */
import { AclError } from './errors.ts'

export interface AclEntry {
  principal: string
  /** Every parenthesised token in order, e.g. ['I', 'RX'] or ['DENY', 'W']. */
  tokens: string[]
  inherited: boolean
  deny: boolean
}

const SYSTEM_NAMES = ['nt authority\\system', 'system', '*s-1-5-18']
const ADMIN_NAMES = ['builtin\\administrators', 'administrators', '*s-1-5-32-544']

/** The icacls arguments that leave `path` readable only by its owner, SYSTEM and Administrators. */
export function icaclsProtectArgs (path: string, owner: string): string[] {
  return [path, '/inheritance:r', '/grant:r', '*S-1-5-18:(F)', '*S-1-5-32-544:(F)', `${owner}:(F)`]
}

/** Parses the listing for `path`; throws AclError when it holds no entry for it. */
export function parseIcacls (output: string, path: string): AclEntry[] {
  const lines = output.replace(/\r/g, '').split('\n')
  const first = lines.findIndex(l => l.toLowerCase().startsWith(path.toLowerCase()))
  if (first < 0) throw new AclError(path, 'icacls printed no ACL for the file')
  const entries: AclEntry[] = []
  for (let i = first; i < lines.length; i++) {
    let text = lines[i] as string
    if (i === first) text = text.slice(path.length)
    text = text.trim()
    if (text === '') break
    const at = text.indexOf(':(')
    if (at <= 0) throw new AclError(path, `unreadable ACL entry "${text.slice(0, 200)}"`)
    const principal = text.slice(0, at)
    const rest = text.slice(at + 1)
    const tokens = [...rest.matchAll(/\(([^()]*)\)/g)].map(m => m[1] as string)
    if (tokens.length === 0 || tokens.join('').length + tokens.length * 2 !== rest.length) throw new AclError(path, `unreadable ACL entry "${text.slice(0, 200)}"`)
    entries.push({ principal, tokens, inherited: tokens.includes('I'), deny: tokens.includes('DENY') })
  }
  if (entries.length === 0) throw new AclError(path, 'icacls printed an empty ACL')
  return entries
}

/**
 * Null when only `owner`, SYSTEM and Administrators are granted access, none of it inherited
 * (an inherited entry follows the folder's ACL, which may change under us); otherwise why not.
 * Deny entries never widen access and are accepted.
 */
export function aclProblem (entries: readonly AclEntry[], owner: string): string | null {
  const ownerNames = new Set([owner.toLowerCase(), owner.toLowerCase().split('\\').pop() as string])
  const wrong: string[] = []
  for (const e of entries) {
    if (e.deny) continue
    const p = e.principal.toLowerCase()
    const allowed = SYSTEM_NAMES.includes(p) || ADMIN_NAMES.includes(p) || ownerNames.has(p)
    if (!allowed) wrong.push(e.principal)
    else if (e.inherited) wrong.push(`${e.principal} (inherited)`)
  }
  if (wrong.length === 0) return null
  return `ACL grants access to ${wrong.join(', ')}; only the owner (${owner}), SYSTEM and Administrators may read it`
}
