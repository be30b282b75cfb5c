/**
 * Finds qemu processes on a Linux host from /proc/<pid>/cmdline, so `vmesh discover` also
 * sees VMs that vmesh did not start. The command line is parsed for the VM's name (`-name`)
 * and its disks (`-drive file=`, `-hda`.., `-blockdev` filename).
 */
import { readdir, readFile, readlink } from 'node:fs/promises'
import { basename, isAbsolute, join } from 'node:path'

export interface QemuProcess { pid: number, name?: string, disks: string[], pidFile?: string }

const MAX_CMDLINE = 256 * 1024
const MAX_PROCS = 100_000

/** Splits a QemuOpts string (`a=b,c=d`, with `,,` as a literal comma). */
export function parseQemuOpts (s: string): Map<string, string> {
  const out = new Map<string, string>()
  const parts: string[] = []
  let cur = ''
  for (let i = 0; i < s.length; i++) {
    const c = s[i] as string
    if (c === ',') {
      if (s[i + 1] === ',') { cur += ','; i++; continue }
      parts.push(cur); cur = ''
    } else {
      cur += c
    }
  }
  parts.push(cur)
  parts.forEach((p, i) => {
    const eq = p.indexOf('=')
    if (eq >= 0) out.set(p.slice(0, eq), p.slice(eq + 1))
    else if (i === 0 && p !== '') out.set('', p) // the implied first key (e.g. -name foo)
  })
  return out
}

/** A value with commas doubled, for QemuOpts. */
export function escapeQemuOpt (s: string): string { return s.replace(/,/g, ',,') }

/** Reads one qemu command line (argv array) into name and disks. */
export function parseQemuArgv (argv: string[]): Omit<QemuProcess, 'pid'> {
  const out: Omit<QemuProcess, 'pid'> = { disks: [] }
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i] as string
    const opt = a.replace(/^--/, '-')
    const v = argv[i + 1]
    if (v === undefined) break
    if (opt === '-name') {
      const o = parseQemuOpts(v)
      const n = o.get('guest') ?? o.get('')
      if (n !== undefined && n !== '') out.name = n
      i++
    } else if (opt === '-drive') {
      const f = parseQemuOpts(v).get('file')
      if (f !== undefined && f !== '') out.disks.push(f)
      i++
    } else if (/^-hd[a-d]$/.test(opt)) {
      out.disks.push(v); i++
    } else if (opt === '-blockdev') {
      let f: string | undefined
      if (v.startsWith('{')) {
        try {
          const j = JSON.parse(v) as { filename?: unknown, file?: { filename?: unknown } }
          const x = j.file?.filename ?? j.filename
          if (typeof x === 'string') f = x
        } catch { /* not JSON after all */ }
      } else {
        const o = parseQemuOpts(v)
        f = o.get('filename') ?? o.get('file.filename')
      }
      if (f !== undefined && f !== '') out.disks.push(f)
      i++
    } else if (opt === '-pidfile') {
      out.pidFile = v; i++
    }
  }
  return out
}

function isQemuBinary (argv0: string): boolean {
  const b = basename(argv0)
  return b.startsWith('qemu-system-') || b === 'qemu-kvm'
}

/** Every qemu process visible under `procRoot` (Linux). Empty where /proc does not exist. */
export async function listQemuProcesses (procRoot = '/proc'): Promise<QemuProcess[]> {
  let entries: string[]
  try { entries = await readdir(procRoot) } catch { return [] }
  const out: QemuProcess[] = []
  for (const e of entries.slice(0, MAX_PROCS)) {
    if (!/^\d+$/.test(e)) continue
    let raw: string
    try { raw = await readFile(join(procRoot, e, 'cmdline'), 'utf8') } catch { continue }
    if (raw === '' || raw.length > MAX_CMDLINE) continue
    const argv = raw.split('\0')
    if (argv[argv.length - 1] === '') argv.pop()
    if (!isQemuBinary(argv[0] ?? '')) continue
    const p = parseQemuArgv(argv)
    // relative disk paths are relative to the process's cwd
    let cwd: string | undefined
    if (p.disks.some(d => !isAbsolute(d))) {
      try { cwd = await readlink(join(procRoot, e, 'cwd')) } catch { /* not ours to read */ }
    }
    out.push({ pid: Number(e), ...p, disks: p.disks.map(d => isAbsolute(d) || cwd === undefined ? d : join(cwd, d)) })
  }
  return out
}
