// A stand-in for icacls.exe where the real one is a stub (Wine's prints nothing and changes
// nothing). It keeps each file's ACL in `<file>.acl.json` beside it and answers like icacls:
//   fake-icacls FILE                                   → the listing (icacls's format)
//   fake-icacls FILE /inheritance:r /grant:r P:(F)...  → inheritance removed, those grants set
// A file never protected lists what Windows gives a new file under ProgramData (inherited
// BUILTIN\Users read), so vmesh refuses it exactly as it would on Windows.
// Selected with VMESH_ICACLS=<this file> (common/platform/secret.ts).
import { existsSync, readFileSync, writeFileSync } from 'node:fs'

const WELL_KNOWN = { '*S-1-5-18': 'NT AUTHORITY\\SYSTEM', '*S-1-5-32-544': 'BUILTIN\\Administrators' }
const DEFAULT = [
  ['NT AUTHORITY\\SYSTEM', '(I)(F)'], ['BUILTIN\\Administrators', '(I)(F)'], ['BUILTIN\\Users', '(I)(RX)']
]

const [file, ...ops] = process.argv.slice(2)
if (file === undefined) { process.stderr.write('usage: fake-icacls FILE [/inheritance:r] [/grant:r P:(F)...]\n'); process.exit(87) }
// run on Linux with a Windows path (test setup): Z:\a\b → /a/b
const local = process.platform === 'win32' ? file : file.replace(/^[Zz]:/, '').replace(/\\/g, '/')
if (!existsSync(local)) { process.stdout.write(`${file}: The system cannot find the file specified.\r\nSuccessfully processed 0 files; Failed processing 1 files\r\n`); process.exit(2) }
const store = `${local}.acl.json`
let acl = existsSync(store) ? JSON.parse(readFileSync(store, 'utf8')) : DEFAULT
if (ops.length > 0) {
  let i = 0
  for (; i < ops.length; i++) {
    const op = ops[i].toLowerCase()
    if (op === '/inheritance:r') acl = acl.filter(([, r]) => !r.includes('(I)'))
    else if (op === '/grant:r') {
      for (i++; i < ops.length && !ops[i].startsWith('/'); i++) {
        const at = ops[i].lastIndexOf(':')
        const who = WELL_KNOWN[ops[i].slice(0, at)] ?? ops[i].slice(0, at)
        acl = [...acl.filter(([p]) => p.toLowerCase() !== who.toLowerCase()), [who, ops[i].slice(at + 1)]]
      }
      i--
    } else { process.stderr.write(`fake-icacls: unsupported ${ops[i]}\n`); process.exit(87) }
  }
  writeFileSync(store, JSON.stringify(acl))
  process.stdout.write(`processed file: ${file}\r\nSuccessfully processed 1 files; Failed processing 0 files\r\n`)
  process.exit(0)
}
const pad = ' '.repeat(file.length + 1)
process.stdout.write(acl.map(([p, r], k) => `${k === 0 ? file + ' ' : pad}${p}:${r}`).join('\r\n') + '\r\n\r\nSuccessfully processed 1 files; Failed processing 0 files\r\n')
